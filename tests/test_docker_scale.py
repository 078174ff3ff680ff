"""Docker sandboxes at scale on a small machine: 32 concurrent MCP episodes, and gc after a SIGKILL.

Every episode starts the counter MCP server inside its own container, talks to it over the
`docker exec -i` pipe and checks that the state it sees is its own. Nothing may fail and no
managed container may be left.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from sandboxes import provision
from sandboxes.docker import DockerConfig
from tools.mcp_pipe import mcp_session

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[1]
SERVER = (ROOT / "tests" / "fixtures" / "counter_server.py").read_bytes()
EPISODES = 32


def _managed(run: str) -> list[str]:
    from sandboxes.docker import client

    filters = {"label": ["synth.managed=1", f"synth.run={run}"]}
    return [c["Names"][0] for c in client().api.containers(all=True, filters=filters)]


async def _episode(sandbox, i: int) -> int:
    """Three increments by a step of its own; the state file must hold exactly this episode's sum."""
    step = i + 1
    await sandbox.write_file("counter_server.py", SERVER)
    async with mcp_session(sandbox, ["python3", "counter_server.py"], init_timeout=120) as session:
        results = [(await session.call_tool("increment", {"by": step})).structured_content for _ in range(3)]
    assert results == [{"result": step}, {"result": 2 * step}, {"result": 3 * step}], (i, results)
    assert await sandbox.read_file("counter.txt") == str(3 * step).encode()
    return i


async def test_32_concurrent_mcp_episodes_no_failure_no_leak(docker_image):
    # Fresh containers, all 32 at once: the path rollouts take today. (The pool's reuse is covered in
    # test_sandbox_pool.py; here the cost is 32 MCP servers importing the SDK, ~1 s of CPU each.)
    run = f"test-scale-{uuid.uuid4().hex[:8]}"
    cfg = DockerConfig(image=docker_image, memory_mb=256)
    started = time.monotonic()

    async def one(i: int) -> int:
        async with provision(cfg, labels={"synth.run": run}) as sandbox:
            return await _episode(sandbox, i)

    results = await asyncio.gather(*(one(i) for i in range(EPISODES)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures[:3]
    assert results == list(range(EPISODES))
    assert _managed(run) == []
    print(f"\n{EPISODES} concurrent episodes: {time.monotonic() - started:.1f} s")


CHILD = """
import asyncio, sys
from contextlib import AsyncExitStack
from sandboxes import provision
from sandboxes.docker import DockerConfig

async def main():
    async with AsyncExitStack() as stack:
        for _ in range(3):
            cfg, labels = DockerConfig(image=sys.argv[1]), {"synth.run": sys.argv[2]}
            await stack.enter_async_context(provision(cfg, labels=labels))
        print("ready", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_sigkilled_run_leaves_containers_that_gc_removes(docker_image):
    run = f"test-kill9-{uuid.uuid4().hex[:8]}"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), docker_image, run], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "ready"
        assert len(_managed(run)) == 3
    finally:
        child.send_signal(signal.SIGKILL)  # no finally, no atexit: the containers stay
        child.wait(10)
    assert len(_managed(run)) == 3
    gc = subprocess.run([sys.executable, "cli.py", "sandboxes", "gc", "--run", run], cwd=ROOT,
                        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert gc.returncode == 0 and "removed 3 docker sandbox(es)" in gc.stdout, (gc.stdout, gc.stderr)
    assert _managed(run) == []
