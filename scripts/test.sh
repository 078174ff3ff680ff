#!/usr/bin/env bash
# Install everything and run the whole test suite for real: unit tests, the embedded LLM (llm),
# Docker sandboxes (docker) and the Kubernetes API double (k8s). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/build_sandbox_image.sh
bash scripts/install_mcp_servers.sh
echo "==> tests"
set +e
python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here (tests/ must hold the suite)" >&2
  exit 1
fi
exit "$rc"
