"""The warm sandbox pool: reuse without leaking state, replacement of dead sandboxes, back-pressure, cleanup.

The docker tests meet a real engine and the locally built image (like test_sandbox_docker.py: they
fail, never skip, when no engine answers); the local-backend variant needs nothing.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
import warnings

import docker
import docker.errors
import pytest

from sandboxes.docker import DockerConfig
from sandboxes.local import LocalConfig
from sandboxes.pool import WarmPool
from synth.core.errors import SandboxError

# Leaves state in every writable place, plus a detached background process and an orphan.
DIRTY = (
    "echo secret > note.txt; mkdir -p d/e; chmod 000 d/e; echo t > /tmp/t; echo h > ~/.h; echo s > /dev/shm/s;"
    " (sleep 1000 >/dev/null 2>&1 &); nohup sleep 999 >/dev/null 2>&1 &"
)
PROCS = "for d in /proc/[0-9]*; do tr '\\0' ' ' < $d/cmdline; echo; done"


@pytest.fixture
def run() -> str:
    return f"test-pool-{uuid.uuid4().hex[:8]}"


def _managed(run: str) -> list[str]:
    from sandboxes.docker import client

    filters = {"label": ["synth.managed=1", f"synth.run={run}"]}
    return [c["Names"][0] for c in client().api.containers(all=True, filters=filters)]


async def _until(predicate, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@pytest.mark.docker
async def test_docker_state_of_one_episode_is_gone_in_the_next(docker_image, run):
    async with WarmPool(DockerConfig(image=docker_image), size=1, labels={"synth.run": run}) as pool:
        assert len(_managed(run)) == 1
        async with pool.acquire() as sb:
            first = sb.id
            assert (await sb.exec(["sh", "-c", DIRTY])).exit_code == 0
            pipe = await sb.spawn(["sleep", "777"])  # a pipe the episode forgot to close
            assert "sleep 1000" in (await sb.exec(["sh", "-c", PROCS])).stdout
        async with pool.acquire() as sb:
            assert sb.id == first  # reused, not restarted
            listing = await sb.exec(["sh", "-c", "ls -A /workspace /tmp /home/sandbox /dev/shm"])
            assert listing.stdout.split() == ["/dev/shm:", "/home/sandbox:", "/tmp:", "/workspace:"], listing
            procs = (await sb.exec(["sh", "-c", PROCS])).stdout
            assert "sleep 1000" not in procs and "sleep 999" not in procs and "sleep 777" not in procs, procs
            assert "sleep infinity" in procs
            assert await pipe.read() == b""  # its process was killed and the pipe closed
        assert pool.stats["reset"] >= 1 and pool.stats["replaced"] == 0
    assert _managed(run) == []


@pytest.mark.docker
async def test_docker_killed_container_is_replaced(docker_image, run):
    from sandboxes.docker import client

    async with WarmPool(DockerConfig(image=docker_image), size=1, labels={"synth.run": run}) as pool:
        async with pool.acquire() as sb:  # killed during the episode: the reset on release fails
            client().api.kill(sb.name)
            dead = sb.name
        async with pool.acquire() as sb:
            assert sb.name != dead and (await sb.exec(["echo", "ok"])).stdout == "ok\n"
            alive = sb.name
        await _until(lambda: pool.idle == 1)
        client().api.kill(alive)  # killed while idle: the acquire-time check catches it
        async with pool.acquire() as sb:
            assert sb.name not in (dead, alive) and (await sb.exec(["true"])).exit_code == 0
        assert pool.stats["replaced"] == 2
        with pytest.raises(docker.errors.NotFound):
            client().api.inspect_container(dead)
    assert _managed(run) == []


@pytest.mark.docker
async def test_docker_acquire_waits_for_a_release_then_times_out_naming_the_size(docker_image, run):
    async with WarmPool(DockerConfig(image=docker_image), size=2, labels={"synth.run": run}, acquire_timeout_s=1.5) as pool:
        async with pool.acquire() as a, pool.acquire() as b:
            assert a.id != b.id
            waiting = asyncio.create_task(_hold(pool))
            await asyncio.sleep(0.5)
            assert not waiting.done()  # back-pressure: it waits rather than fails
        assert await waiting in (a.id, b.id)  # proceeds once one is released (and reset)
        async with pool.acquire(), pool.acquire():
            with pytest.raises(SandboxError, match="all 2 sandboxes of the pool are in use"):
                async with pool.acquire():
                    pass
    assert _managed(run) == []


async def _hold(pool: WarmPool) -> str:
    async with pool.acquire() as sb:
        return sb.id


@pytest.mark.docker
async def test_docker_exit_removes_every_container_even_when_cancelled(docker_image, run):
    async def body() -> None:
        async with WarmPool(DockerConfig(image=docker_image), size=3, labels={"synth.run": run}) as pool:
            async with pool.acquire():
                assert len(_managed(run)) == 3
                await asyncio.sleep(60)

    task = asyncio.create_task(body())
    await _until(lambda: len(_managed(run)) == 3)
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _managed(run) == []


@pytest.mark.docker
async def test_docker_missing_image_fails_fast(run):
    with pytest.raises(SandboxError, match="build-image"):
        async with WarmPool(DockerConfig(image="synth-sandbox:does-not-exist"), size=2, labels={"synth.run": run}):
            pass
    assert _managed(run) == []


@pytest.mark.parametrize("isolation", ["auto", "none"])
async def test_local_pool_reuses_a_clean_workspace(tmp_path, isolation):
    cfg = LocalConfig(root=str(tmp_path), isolation=isolation)
    echo = [sys.executable, "-c", "import sys\nfor line in sys.stdin: print(line, end='', flush=True)"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # isolation none warns loudly, by design
        async with WarmPool(cfg, size=2, acquire_timeout_s=5) as pool:
            async with pool.acquire() as a, pool.acquire() as b:
                assert a.id != b.id
                await a.write_file("x/secret.txt", b"a")
                pipe = await a.spawn(echo)
                await pipe.write(b"hi\n")
                assert await pipe.readline() == b"hi\n"
                first = a.id
            await _until(lambda: pool.idle == 2)
            assert await pipe.read() == b""  # the forgotten pipe was closed at release
            async with pool.acquire() as a, pool.acquire() as b:
                assert first in (a.id, b.id)
                for sb in (a, b):
                    assert (await sb.exec(["ls", "-A", sb.workspace])).stdout == ""
            assert len(list(tmp_path.iterdir())) == 2
            async with pool.acquire(), pool.acquire():
                waiting = asyncio.create_task(_hold(pool))
                await asyncio.sleep(0.1)
                await pool.__aexit__(None, None, None)  # closing wakes a waiter with an error
                with pytest.raises(SandboxError, match="closed while waiting"):
                    await waiting
        assert list(tmp_path.iterdir()) == []
