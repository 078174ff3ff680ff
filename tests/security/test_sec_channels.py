"""Nothing one episode does reaches the next episode of its pooled sandbox (issue #18).

Episode A plants something (in the interpreter, in a writable directory, a process); episode B,
on the same sandbox after the pool's reset, looks for it. `per_episode` (a fresh process per
episode, the default) must close every channel. `shared` runs a sandbox's episodes in one
interpreter: the channels in INTERPRETER_CHANNELS stay open there by construction (the strict
xfail says so, and fails the day one closes); it is for trusted modules only.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from synth.core.errors import ToolError
from tests.security.attacks import (CHANNELS, INTERPRETER_CHANNELS, become_forger, spawn_forger)

pytestmark = [pytest.mark.security, pytest.mark.asyncio(loop_scope="module")]

SHARED_OPEN = "shared runs every episode of a sandbox in one interpreter; only per_episode closes this channel"
# The IPC namespace of a bwrap tool host outlives its episodes and a reset cannot list message queues:
# local sandboxes refuse to create IPC objects at all (sandboxes/seccomp.py). Docker's reset removes them.
REFUSED_ON_BWRAP = {"sysv_shared_memory", "posix_message_queue"}


@pytest.mark.parametrize("channel", list(CHANNELS))
async def test_nothing_an_episode_leaves_reaches_the_next(arena, channel, request):
    if arena.mode == "shared" and channel in INTERPRETER_CHANNELS:
        request.applymarker(pytest.mark.xfail(strict=True, reason=SHARED_OPEN))
    plant, probe = CHANNELS[channel]
    try:
        a = await arena.episode(plant)
        if channel in REFUSED_ON_BWRAP and arena.backend == "local":
            assert "[Errno 1]" in a.texts[0], a  # EPERM from seccomp: the object cannot even be made
        else:
            assert a.ok, a  # the plant itself works: what follows is not a failed attack
        b = await arena.episode(probe)
    finally:
        await arena.replace_host()  # a channel left open must not reach the next test
    assert b.sandbox == a.sandbox  # the same pooled sandbox, reset in between
    assert b.texts == ["clean"], (channel, b)


async def test_a_process_left_by_an_episode_cannot_answer_the_next(arena):
    """A's detached process stops every tool host it sees and writes replies for B's request ids."""
    mark = f"forger-{arena.mode}-a"
    a = await arena.episode(spawn_forger(mark))
    assert a.ok, a
    honest = "import time; time.sleep(0.3); state['mine'] = state.get('mine', 0) + 1; result = 'honest'"
    b = await arena.episode(honest, honest, tool_timeout=15)
    assert b.sandbox == a.sandbox
    assert b.texts == ["honest", "honest"] and b.final == {"mine": 2}, b
    assert not await arena.survivors(mark)


async def test_a_host_turned_into_something_else_does_not_outlive_its_episode(arena):
    """A's own serving process execs into the forger (same pid, same parent): it cannot answer, so
    A's calls time out and its end fails; it must be gone before B, whose results stay honest."""
    mark = f"forger-{arena.mode}-b"
    a = await arena.episode(become_forger(mark), tool_timeout=3, end_timeout=3)
    assert a.texts[0].startswith("Error: no answer") or isinstance(a.outcomes[0], ToolError), a
    honest = "import time; time.sleep(0.3); state['mine'] = 1; result = 'honest'"
    b = await arena.episode(honest, tool_timeout=15)
    assert b.sandbox == a.sandbox
    assert b.texts == ["honest"] and b.final == {"mine": 1}, b
    assert not await arena.survivors(mark)


async def test_a_closed_pipe_ends_its_process_without_waiting_for_a_reset(arena):
    """A process that ignores EOF and SIGTERM: closing its pipe ends it in the sandbox, not only the
    client that reached it (docker exec), so nothing of it is left for the rest of the episode."""
    mark = str(7_000_000 + os.getpid() % 1_000_000)
    async with arena.pool.acquire() as sb:
        pipe = await sb.spawn(["sh", "-c", f"trap '' TERM HUP; while :; do sleep {mark}; done"], resident=True)
        await asyncio.sleep(0.3)
        assert [p for p in await arena.processes_of(sb) if mark in p]
        async with asyncio.timeout(30):
            await pipe.close()
        for _ in range(25):  # killed a moment ago: allow it to finish exiting
            if not [p for p in await arena.processes_of(sb) if mark in p]:
                break
            await asyncio.sleep(0.2)
        assert not [p for p in await arena.processes_of(sb) if mark in p]
