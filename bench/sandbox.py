"""Sandbox latencies side by side from one run: MCP call_tool over a persistent pipe vs an exec per call,
docker vs the local (bwrap) backend, and a warm-pool acquire vs a cold container start.

    python -m bench.sandbox [--calls 200] [--exec-calls 50] [--fresh 5] [--acquires 30] [--cold 10]

Needs a running Docker Engine; builds the sandbox image first if it is missing (a few minutes, once).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable

from sandboxes import provision
from sandboxes.docker import DockerConfig
from sandboxes.local import LocalConfig
from sandboxes.pool import WarmPool
from tools.mcp_pipe import mcp_session

SERVER = (Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "counter_server.py").read_bytes()
# The same increment as the server's tool, without MCP: what one `docker exec` per call costs at least.
ONE_CALL = b"""import sys
from pathlib import Path
p = Path("counter.txt")
v = (int(p.read_text()) if p.exists() else 0) + int(sys.argv[1])
p.write_text(str(v))
print(v)
"""
LABELS = {"synth.run": "bench-sandbox"}


async def timed(n: int, fn: Callable[[], Awaitable[object]]) -> list[float]:
    """Milliseconds of n sequential calls."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


async def pipe_calls(sandbox, python: str, n: int) -> list[float]:
    await sandbox.write_file("counter_server.py", SERVER)
    async with mcp_session(sandbox, [python, "counter_server.py"], init_timeout=120) as session:
        await session.call_tool("increment", {})  # warm-up: first-call imports and caches
        return await timed(n, lambda: session.call_tool("increment", {"by": 1}))


async def fresh_session_call(sandbox, python: str) -> None:
    async with mcp_session(sandbox, [python, "counter_server.py"], init_timeout=120) as session:
        await session.call_tool("increment", {"by": 1})


async def exec_call(sandbox) -> None:
    result = await sandbox.exec(["python3", "one_call.py", "1"])
    assert result.exit_code == 0, result


async def docker_rows(cfg: DockerConfig, args) -> list[tuple]:
    rows = []
    async with provision(cfg, labels=LABELS) as sb:
        calls = await pipe_calls(sb, "python3", args.calls)
        rows.append(("docker: MCP call_tool over `docker exec -i` pipe", calls, 5))
        await sb.write_file("one_call.py", ONE_CALL)
        rows.append(("docker: one `docker exec` per call (python script, no MCP)",
                     await timed(args.exec_calls, lambda: exec_call(sb)), None))
        rows.append(("docker: bare `docker exec true`", await timed(args.exec_calls, lambda: sb.exec(["true"])), None))
        if args.fresh:
            rows.append(("docker: fresh `docker exec -i` + MCP initialize + 1 call",
                         await timed(args.fresh, lambda: fresh_session_call(sb, "python3")), None))
    return rows


async def local_rows(args) -> list[tuple]:
    root = tempfile.mkdtemp(prefix="bench-sandbox-")
    try:
        async with provision(LocalConfig(isolation="bwrap", root=root)) as sb:
            calls = await pipe_calls(sb, sys.executable, args.calls)
            return [("local (bwrap): MCP call_tool over the process pipe", calls, 5)]
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def acquire_rows(cfg: DockerConfig, args) -> list[tuple]:
    warm = []
    async with WarmPool(cfg, size=4, labels=LABELS) as pool:
        for _ in range(args.acquires):
            while pool.idle < pool.size:  # measure a warm acquire: the last release's reset is done
                await asyncio.sleep(0.01)
            t0 = time.perf_counter()
            async with pool.acquire() as sb:
                warm.append((time.perf_counter() - t0) * 1e3)
                await sb.write_file("x", b"episode state")  # something for the reset to remove
    busy = []
    async with WarmPool(cfg, size=4, labels=LABELS) as pool:  # back to back: releases still resetting

        async def episode() -> None:
            t0 = time.perf_counter()
            async with pool.acquire() as sb:
                busy.append((time.perf_counter() - t0) * 1e3)
                await sb.exec(["true"])

        for _ in range(args.acquires // 4):
            await asyncio.gather(*(episode() for _ in range(4)))
    cold, cycle = [], []
    for _ in range(args.cold):
        t0 = time.perf_counter()
        async with provision(cfg, labels=LABELS):
            cold.append((time.perf_counter() - t0) * 1e3)
        cycle.append((time.perf_counter() - t0) * 1e3)
    return [
        ("acquire: warm pool (idle sandbox ready)", warm, 50),
        ("acquire: warm pool, 4 episodes back to back on 4", busy, None),
        ("acquire: cold start (provision)", cold, None),
        ("cold start + stop (provision, removal)", cycle, None),
    ]


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] if len(samples) > 1 else samples[0]


async def main(args) -> None:
    from sandboxes.image.build import build_image

    cfg = DockerConfig(image=build_image(progress=lambda line: print(line, file=sys.stderr)))
    rows = await docker_rows(cfg, args) + await local_rows(args) + await acquire_rows(cfg, args)
    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  {'n':>4}  {'p50 ms':>8}  {'p95 ms':>8}  target p50")
    for name, samples, target in rows:
        p50 = statistics.median(samples)
        verdict = "" if target is None else f"<= {target} ms {'ok' if p50 <= target else 'MISSED'}"
        print(f"{name:{width}}  {len(samples):>4}  {p50:>8.2f}  {pct(samples, 95):>8.2f}  {verdict}")
    pipe, execs = statistics.median(rows[0][1]), statistics.median(rows[1][1])
    warm, cold = statistics.median(rows[-4][1]), statistics.median(rows[-2][1])
    print(f"\none exec per call / persistent pipe: {execs / pipe:.0f}x;  cold start / warm acquire: {cold / warm:.0f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="call_tool calls per persistent pipe")
    parser.add_argument("--exec-calls", type=int, default=50, help="calls with one docker exec each")
    parser.add_argument("--fresh", type=int, default=5, help="calls with a fresh MCP server each (0: skip)")
    parser.add_argument("--acquires", type=int, default=40, help="warm-pool acquires")
    parser.add_argument("--cold", type=int, default=10, help="cold container starts")
    asyncio.run(main(parser.parse_args()))
