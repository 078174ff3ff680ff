#!/usr/bin/env bash
# Install the reference MCP servers of tools/catalog.py into the cache dir
# ($SYNTH_MCP_SERVERS, default ~/.cache/synth/mcp-servers): a venv pinned mcp<2 for the PyPI
# servers, an npm prefix for the npm ones. Idempotent: a second run only checks stamp files.
set -euo pipefail
cd "$(dirname "$0")/.."
python - <<'PY'
import asyncio
from tools.catalog import CATALOG, catalog_sources, ensure_installed

root = asyncio.run(ensure_installed())
print(f"MCP servers installed in {root}:")
for entry, src in zip(CATALOG, catalog_sources(root=root)):
    print(f"  {entry.label:20} {entry.ecosystem}:{entry.package}=={entry.version}  {src.target}")
PY
