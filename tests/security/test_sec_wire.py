"""The channel between the harness and the tool host cannot be forged from inside an episode, and
whatever comes back is checked before it is used (issue #18).

Per episode (the default), the episode's code never holds the harness's channel: it gets a channel
to the host, which passes on only the one reply to the one request it forwarded, of the right shape.
Shared runs the episode's code in the process that holds the channel, so a reply it writes there
for a pending request is taken: that mode is for trusted modules only (the strict xfail says so).
A reply of the wrong shape is a ToolError in both modes, never another exception.
"""

from __future__ import annotations

import json

import pytest

from synth.core.errors import ToolError
from tests.security.attacks import write_replies

pytestmark = [pytest.mark.security, pytest.mark.asyncio(loop_scope="module")]

HONEST = "import time; time.sleep(0.2); state['honest'] = 1; result = 'honest'"
FORGED = {"result": {"content": [{"type": "text", "text": "FORGED"}], "isError": False, "state": {"forged": True}}}
MALFORMED = [
    {"result": {"content": 5}},
    {"result": 5},
    {"result": {"content": [5]}},
    {"result": {"content": [{"type": "text", "text": 5}]}},
    {"result": {"state": 5}},
    {"error": "not an object"},
    {"error": {"code": "x", "message": ["not", "text"]}},
]


async def test_a_reply_written_by_the_episode_is_not_taken_for_the_hosts(arena, request):
    if arena.mode == "shared":
        request.applymarker(pytest.mark.xfail(strict=True, reason="shared: the episode's code holds the channel"))
    try:
        episode = await arena.episode(write_replies(FORGED), HONEST, HONEST, parallel=True)
    finally:
        await arena.replace_host()
    assert not any("FORGED" in text for text in episode.texts), episode
    assert episode.final != {"forged": True}, episode
    assert all(isinstance(o, ToolError) or not o.is_error for o in episode.outcomes), episode


@pytest.mark.parametrize("reply", MALFORMED, ids=[json.dumps(r) for r in MALFORMED])
async def test_a_malformed_reply_is_a_tool_error_never_a_crash(arena, reply):
    try:
        episode = await arena.episode(write_replies(reply), HONEST, parallel=True)  # a crash raises from here
    finally:
        await arena.replace_host()
    for outcome in episode.outcomes:
        assert isinstance(outcome, ToolError) or outcome.text in ("written", "honest"), episode
    assert isinstance(episode.final, (dict, ToolError)), episode
    if isinstance(episode.final, dict):
        assert set(episode.final) <= {"honest"}, episode


# From a process the episode starts (in shared mode the host is its parent; per episode, the host
# is the episode's parent and so the grandparent): the host's memory and descriptors.
PEEK = r'''
import os, subprocess, sys
host = os.getpid() if MODE == "shared" else os.getppid()
probe = """
import os, sys
host = sys.argv[1]
found = {}
def fds():
    failures = []
    for fd in os.listdir(f"/proc/{host}/fd"):  # the listing may be allowed; opening what it lists must not
        try:
            os.close(os.open(f"/proc/{host}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError as e:
            failures.append(e)
    raise failures[0] if failures else FileNotFoundError("no descriptors")
for what, how in (("mem", lambda: open(f"/proc/{host}/mem", "r+b")), ("fd", fds),
                  ("environ", lambda: open(f"/proc/{host}/environ", "rb").read())):
    try:
        how()
        found[what] = "open"
    except OSError as e:
        found[what] = type(e).__name__
print(found)
"""
found = {"child": subprocess.run([sys.executable, "-c", probe, str(host)], capture_output=True, text=True).stdout}
if MODE == "per_episode":
    try:
        open(f"/proc/{host}/mem", "r+b")
        found["self"] = "open"
    except OSError as e:
        found["self"] = type(e).__name__
result = found
'''


async def test_the_hosts_memory_and_descriptors_are_closed_to_the_episode(arena):
    episode = await arena.episode(PEEK.replace("MODE", repr(arena.mode)))
    assert episode.ok, episode
    found = json.loads(episode.texts[0])
    assert "'open'" not in found["child"] and "mem" in found["child"], found
    assert found.get("self", "PermissionError") == "PermissionError", found
