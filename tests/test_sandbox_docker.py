"""The docker backend against a real Docker Engine and the locally built sandbox image: what is
particular to it (limits, the engine's failures, labels, the image). The contract every backend
meets is tests/test_sandbox_contract.py.

CI runs scripts/build_sandbox_image.sh first (installs docker.io, starts dockerd); the module fixture
builds the image through build_image() all the same (a no-op when it exists) and fails loudly
when no engine answers: these tests must never skip silently.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import docker
import docker.errors
import pytest

from sandboxes import provision
import sandboxes.docker as docker_backend
from sandboxes.docker import DockerConfig
from synth.core.errors import SandboxError

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def image(docker_image: str):
    engine = docker.from_env()
    yield docker_image
    left = engine.containers.list(all=True, filters={"label": "synth.managed=1"})
    assert not left, f"containers left behind: {[c.name for c in left]}"


@pytest.fixture
def cfg(image: str) -> DockerConfig:
    return DockerConfig(image=image, memory_mb=256, pids_limit=64)


def _engine() -> docker.DockerClient:
    return docker_backend.client()


async def test_state_persists_within_an_episode_and_never_reaches_the_next(cfg):
    async with provision(cfg, labels={"synth.run": "test-docker"}) as sb:
        assert (await sb.exec(["sh", "-c", "echo hi > note.txt; mkdir -p d"])).exit_code == 0
        assert (await sb.exec(["cat", "note.txt"])).stdout == "hi\n"
        labels = _engine().api.inspect_container(sb.name)["Config"]["Labels"]
        assert labels["synth.managed"] == "1" and labels["synth.run"] == "test-docker"
        assert labels["synth.episode"] == sb.id
    async with provision(cfg) as sb:
        assert (await sb.exec(["ls", "-A", "/workspace"])).stdout == ""
    with pytest.raises(docker.errors.NotFound):
        _engine().api.inspect_container(sb.name)


async def test_no_network(cfg):
    probe = "import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)"
    async with provision(cfg) as sb:
        result = await sb.exec(["python3", "-c", probe])
        assert result.exit_code != 0 and "unreachable" in result.stderr.lower()
        assert (await sb.exec(["ls", "/sys/class/net"])).stdout.split() == ["lo"]


async def test_runs_as_uid_1000_on_a_read_only_root(cfg):
    async with provision(cfg) as sb:
        assert (await sb.exec(["id", "-u"])).stdout.strip() == "1000"
        for path in ("/usr/evil", "/etc/evil"):
            result = await sb.exec(["touch", path])
            assert result.exit_code != 0, result
        for path in ("/workspace/ok", "/tmp/ok", "/home/sandbox/ok"):
            assert (await sb.exec(["touch", path])).exit_code == 0, path


async def test_memory_hog_is_contained(image):
    cfg = DockerConfig(image=image, memory_mb=128)
    async with provision(cfg) as sb:
        result = await sb.exec(["python3", "-c", "b = b'x' * (512 << 20)"], timeout=30)
        assert result.exit_code == 137 and not result.timed_out, result
        assert "out of memory" in result.stderr
        assert (await sb.exec(["echo", "still", "here"])).stdout == "still here\n"


async def test_fork_bomb_is_bounded_by_pids_limit(image):
    cfg = DockerConfig(image=image, pids_limit=32)
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    async with provision(cfg) as sb:
        result = await sb.exec(["python3", "-c", bomb], timeout=3)
        assert result.timed_out and result.duration_s < 15, result
        assert _engine().api.inspect_container(sb.name)["HostConfig"]["PidsLimit"] == 32
        # the whole process group went with the timeout; docker-init reaped the orphans
        comms = (await sb.exec(["sh", "-c", "cat /proc/[0-9]*/comm"])).stdout.split()
        assert "python3" not in comms and len(comms) < 8, comms


async def test_exec_timeout_is_flagged_even_when_term_is_ignored(cfg):
    async with provision(cfg) as sb:
        fast = await sb.exec(["sleep", "30"], timeout=1)
        assert fast.timed_out and fast.exit_code == 124 and fast.duration_s < 5
        stubborn = await sb.exec(["sh", "-c", "trap '' TERM; sleep 30"], timeout=1)
        assert stubborn.timed_out and stubborn.exit_code == 137 and stubborn.duration_s < 8
        ok = await sb.exec(["sh", "-c", "exit 3"])
        assert ok.exit_code == 3 and not ok.timed_out
        missing = await sb.exec(["no-such-command"])
        assert missing.exit_code == 127


async def test_killed_container_raises_and_provision_cleans_up(cfg):
    with pytest.raises(SandboxError, match=r"synth-\w+ is not running.*OOMKilled"):
        async with provision(cfg) as sb:
            _engine().api.kill(sb.name)
            await sb.exec(["true"])
    with pytest.raises(docker.errors.NotFound):
        _engine().api.inspect_container(sb.name)


async def test_large_files_go_through_exec_into_the_tmpfs_owned_by_the_sandbox_user(cfg):
    blob = bytes(range(256)) + os.urandom(3 << 20)
    async with provision(cfg) as sb:
        await sb.write_file("d/e/f.bin", blob)  # the archive API cannot see tmpfs mounts
        assert await sb.read_file("/workspace/d/e/f.bin") == blob
        assert (await sb.exec(["stat", "-c", "%u", "d/e/f.bin"])).stdout.strip() == "1000"
        with pytest.raises(SandboxError, match="No such file"):
            await sb.read_file("missing.txt")


async def test_a_docker_exec_pipe_keeps_stderr_and_many_round_trips(cfg):
    echo = "import sys\nfor line in sys.stdin:\n    sys.stdout.write(line.upper()); sys.stdout.flush()"
    async with provision(cfg) as sb:
        pipe = await sb.spawn(["python3", "-c", echo])
        n, t0 = 200, time.perf_counter()
        for i in range(n):
            await pipe.write(b"x%d\n" % i)
            assert await pipe.readline() == b"X%d\n" % i
        print(f"\nraw pipe round trip: {(time.perf_counter() - t0) / n * 1e3:.3f} ms")
        await pipe.close()
        failing = await sb.spawn(["sh", "-c", "echo oops >&2; exit 3"])
        assert await failing.read() == b""
        await failing.close()
        assert "oops" in failing.stderr_tail()


SERVER = '''
import json, os
from mcp.server.mcpserver import MCPServer

app = MCPServer("counter")


@app.tool()
def incr(by: int = 1) -> int:
    """Add `by` to the counter kept in state.json and return it."""
    n = (json.load(open("state.json")) if os.path.exists("state.json") else 0) + by
    json.dump(n, open("state.json", "w"))
    return n


app.run()
'''


async def test_mcp_server_in_the_container_keeps_state(cfg):
    from tools.mcp_pipe import mcp_session

    async with provision(cfg) as sb:
        await sb.write_file("server.py", SERVER.encode())
        t0 = time.perf_counter()
        async with mcp_session(sb, ["python3", "server.py"]) as session:
            init_s = time.perf_counter() - t0
            tools = (await session.list_tools()).tools
            assert [t.name for t in tools] == ["incr"]
            first = await session.call_tool("incr", {"by": 1})
            second = await session.call_tool("incr", {"by": 2})
            assert [first.content[0].text, second.content[0].text] == ["1", "3"]
            n, t0 = 50, time.perf_counter()
            for _ in range(n):
                await session.call_tool("incr", {})
            per_call = (time.perf_counter() - t0) / n
        assert await sb.read_file("state.json") == b"53"
        t0, m = time.perf_counter(), 20
        for _ in range(m):
            await sb.exec(["true"])
        per_exec = (time.perf_counter() - t0) / m
        print(f"\nMCP initialize {init_s:.2f} s; call_tool {per_call * 1e3:.1f} ms; exec {per_exec * 1e3:.1f} ms")


async def test_start_failures_name_the_fix(image, monkeypatch):
    with pytest.raises(SandboxError, match="synth sandboxes build-image"):
        async with provision(DockerConfig(image="synth-sandbox:does-not-exist")):
            pass
    monkeypatch.setattr(docker_backend, "_client", None)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(SandboxError, match="dockerd"):
        async with provision(DockerConfig(image=image)):
            pass


async def test_concurrent_starts_are_bounded_and_all_clean_up(image):
    cfg = DockerConfig(image=image, start_concurrency=2)

    async def episode(i: int) -> str:
        async with provision(cfg, labels={"synth.run": "test-concurrent"}) as sb:
            return (await sb.exec(["sh", "-c", f"echo {i} > n; cat n"])).stdout.strip()

    assert await asyncio.gather(*(episode(i) for i in range(6))) == [str(i) for i in range(6)]


async def test_stop_is_idempotent_and_cancelled_start_leaves_nothing(cfg):
    from sandboxes.docker import DockerSandbox

    sb = DockerSandbox(cfg, {"synth.run": "test-cancel"})
    task = asyncio.create_task(sb.start())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await sb.stop()
    await sb.stop()
    assert not _engine().api.containers(all=True, filters={"label": "synth.run=test-cancel"})


def test_cli_build_image_is_a_no_op_and_gc_reports(image):
    from typer.testing import CliRunner

    from synth.commands.sandboxes import app

    built = CliRunner().invoke(app, ["build-image"])
    assert built.exit_code == 0 and image in built.output, built.output
    collected = CliRunner().invoke(app, ["gc", "--run", f"none-{uuid.uuid4().hex[:8]}"])
    assert collected.exit_code == 0 and "removed 0 docker sandbox(es)" in collected.output, collected.output


async def test_node_variant_runs_node_and_npm(image):
    from sandboxes.image.build import build_image

    node_image = build_image(variant="node", progress=lambda line: print(line, flush=True))
    async with provision(DockerConfig(image=node_image)) as sb:
        result = await sb.exec(["node", "-e", "console.log(process.getuid())"])
        assert result.stdout.strip() == "1000", result
        assert (await sb.exec(["npm", "--version"])).exit_code == 0
