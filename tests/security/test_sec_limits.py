"""An episode cannot take more than its share: memory, processes, CPU, the size of a result (issue #18).

Each attack runs in the default-configured sandbox of its arena (no limit set by the test), so
what is asserted is what the defaults give. After each, the sandbox must serve the next episode.
"""

from __future__ import annotations

import asyncio

import pytest

from synth.core.errors import ToolError
from tests.security.attacks import Arena

pytestmark = [pytest.mark.security, pytest.mark.asyncio(loop_scope="module")]

ALLOCATE = "block = bytearray(2 << 30)\nresult = 'allocated 2 GiB'"
FORK_300 = r'''
import os, time
children = []
for _ in range(300):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(3)
        os._exit(0)
    children.append(pid)
result = len(children)
'''
SPIN = ("import ctypes\nctypes.CDLL(None).prctl(15, b'synthspin', 0, 0, 0)  # PR_SET_NAME\n"
        "while True:\n    pass")
HUGE = "result = 'x' * 17_000_000"  # over the 16 MiB a pipe line could carry before


async def next_episode_works(arena: Arena) -> None:
    episode = await arena.episode("result = 'still serving'")
    assert episode.texts == ["still serving"], episode


async def test_memory_is_bounded(arena):
    episode = await arena.episode(ALLOCATE)
    outcome = episode.outcomes[0]
    assert isinstance(outcome, ToolError) or (outcome.is_error and "MemoryError" in outcome.text), episode
    await next_episode_works(arena)


async def test_processes_are_bounded(arena):
    episode = await arena.episode(FORK_300, tool_timeout=60)
    outcome = episode.outcomes[0]
    assert isinstance(outcome, ToolError) or outcome.is_error or int(outcome.text) < 200, episode
    await next_episode_works(arena)


async def test_a_loop_ends_with_its_episode(arena):
    episode = await arena.episode(SPIN, tool_timeout=2, end_timeout=2)
    assert episode.texts[0].startswith("Error: no answer"), episode
    assert not isinstance(episode.final, dict), episode  # the host never answered synth/end
    assert not await arena.survivors("synthspin")
    await next_episode_works(arena)


async def test_a_huge_result_is_cut_and_says_so(arena):
    async with asyncio.timeout(120):  # closing must not wait for an EOF a full pipe prevents
        episode = await arena.episode(HUGE, tool_timeout=60)
    outcome = episode.outcomes[0]
    assert not isinstance(outcome, BaseException) and not outcome.is_error, episode.texts[0][:300]
    assert len(outcome.text) < 100_000 and outcome.text.startswith("xxxx"), outcome.text[-300:]
    assert "truncated" in outcome.text[-200:] and outcome.truncated == 17_000_000, outcome.text[-200:]
    assert isinstance(episode.final, dict), episode.final
    await next_episode_works(arena)
