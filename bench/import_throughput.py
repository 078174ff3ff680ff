"""Import the catalog's MCP servers started concurrently vs one by one; prints both times and the ratio.

Usage: python bench/import_throughput.py   (installs the servers once into the cache dir first)
Each server runs in its own local sandbox (bubblewrap when available); nothing is written to a run dir.
"""

from __future__ import annotations

import asyncio
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.catalog import catalog_sources, ensure_installed  # noqa: E402
from tools.mcp_import import import_tools  # noqa: E402


async def timed(sources, concurrency: int) -> tuple[float, int]:
    start = time.perf_counter()
    results = await import_tools(sources, None, timeout=60, concurrency=concurrency)
    return time.perf_counter() - start, sum(len(r.tools) for r in results)


async def main() -> None:
    warnings.simplefilter("ignore", RuntimeWarning)  # the unisolated-sandbox warning, when no bwrap
    sources = catalog_sources(root=await ensure_installed())
    await timed(sources[:1], 1)  # warm the page cache and the bwrap probe so neither run pays for it
    serial, n_serial = await timed(sources, 1)
    concurrent, n_concurrent = await timed(sources, len(sources))
    assert n_serial == n_concurrent, (n_serial, n_concurrent)
    print(f"{len(sources)} servers, {n_serial} tools")
    print(f"one by one:   {serial:6.2f} s")
    print(f"concurrently: {concurrent:6.2f} s")
    print(f"speed-up:     {serial / concurrent:6.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
