"""The generic MCP server runner (tools/server) serving the hand-written notes toolset inside real
sandboxes: local (bubblewrap when installed) and docker (marked; the image is built on demand)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from sandboxes import provision
from sandboxes.docker import DockerConfig
from sandboxes.local import LocalConfig
from synth.core.errors import ToolError
from synth.core.records import ToolSpec
from tools.executable import ExecutableToolset, python_argv, ship

NOTES = Path(__file__).parent / "fixtures" / "toolsets" / "notes"
TOOLS = json.loads((NOTES / "tools.json").read_text())
MODULE = (NOTES / "impl.py").read_text()
SPECS = [ToolSpec.model_validate(t) for t in TOOLS]
# A bug that is not a ToolFailure, and a module that kills its own server.
BUGGY = MODULE + "\n\ndef get_note(state, note_id):\n    return state['notes'][str(note_id)]['missing_field']\n"
FATAL = MODULE + "\n\nimport os\n\ndef list_notes(state, tag=None):\n    os._exit(3)\n"


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def cfg(request):
    if request.param == "local":
        return LocalConfig(isolation="bwrap" if shutil.which("bwrap") else "auto")
    return DockerConfig(image=request.getfixturevalue("docker_image"), memory_mb=256, pids_limit=64)


async def test_list_tools_gives_the_exact_schemas(cfg):
    async with provision(cfg) as sb, ExecutableToolset(SPECS, sb, module=MODULE) as rt:
        await rt.reset({})
        listed = await rt.list_tools()
    assert [t["name"] for t in listed] == [t["name"] for t in TOOLS]
    for got, want in zip(listed, TOOLS):
        assert got["inputSchema"] == want["inputSchema"]
        assert got["description"] == want["description"]


async def test_state_persists_across_calls_and_never_crosses_sandboxes(cfg):
    async with provision(cfg) as sb, ExecutableToolset(SPECS, sb, module=MODULE) as rt:
        if cfg.type == "local" and shutil.which("bwrap"):
            assert sb.isolated
        await rt.reset({"owner": "ann"})
        created = await rt.call("create_note", {"title": "groceries", "body": "milk", "tags": ["home"]})
        assert not created.is_error and json.loads(created.text)["id"] == 1
        await rt.call("create_note", {"title": "work", "body": "report"})
        listed = await rt.call("list_notes", {"tag": "home"})
        assert json.loads(listed.text) == [{"id": 1, "title": "groceries"}]
        snapshot = await rt.snapshot()
        assert snapshot == json.loads(await sb.read_file("state.json"))  # the snapshot is the state file
        assert snapshot["owner"] == "ann" and snapshot["next_id"] == 3 and set(snapshot["notes"]) == {"1", "2"}
        # A restarted server picks the state up from the file.
        await rt.aclose()
        rt2 = ExecutableToolset(SPECS, sb, module=MODULE)
        await rt2.reset(snapshot)
        assert json.loads((await rt2.call("get_note", {"note_id": 2})).text)["body"] == "report"
        await rt2.aclose()
    async with provision(cfg) as sb, ExecutableToolset(SPECS, sb, module=MODULE) as rt:
        await rt.reset({})
        assert json.loads((await rt.call("list_notes", {})).text) == []
        assert await rt.snapshot() == {"next_id": 1, "notes": {}}


async def test_bad_arguments_and_raising_functions_are_error_results(cfg):
    async with provision(cfg) as sb, ExecutableToolset(SPECS, sb, module=BUGGY) as rt:
        await rt.reset({})
        bad = [await rt.call("get_note", {"note_id": "one"}),
               await rt.call("create_note", {"title": "t"}),
               await rt.call("list_notes", {"tag": "x", "extra": 1})]
        assert all(o.is_error for o in bad)
        assert "'one' is not of type 'integer'" in bad[0].text
        assert "'body' is a required property" in bad[1].text
        assert "Additional properties" in bad[2].text
        await rt.call("create_note", {"title": "t", "body": "b"})
        before = await rt.snapshot()
        dup = await rt.call("create_note", {"title": "t", "body": "again"})  # raises ToolFailure
        assert dup.is_error and dup.text == "Error: a note titled 't' already exists"
        bug = await rt.call("get_note", {"note_id": 1})  # raises KeyError
        assert bug.is_error and "KeyError" in bug.text and "missing_field" in bug.text
        assert await rt.snapshot() == before  # a failed call changes nothing
        assert not (await rt.call("list_notes", {})).is_error  # and the server is alive


async def test_parallel_calls_never_lose_an_update(cfg):
    async with provision(cfg) as sb, ExecutableToolset(SPECS, sb, module=MODULE) as rt:
        await rt.reset({})
        calls = [rt.call("create_note", {"title": f"n{i}", "body": "b"}) for i in range(20)]
        outcomes = await asyncio.gather(*calls)
        assert not any(o.is_error for o in outcomes)
        state = await rt.snapshot()
        assert state["next_id"] == 21 and len(state["notes"]) == 20


async def test_a_server_that_dies_is_a_tool_error(cfg):
    async with provision(cfg) as sb, ExecutableToolset(SPECS, sb, module=FATAL) as rt:
        await rt.reset({})
        with pytest.raises(ToolError):
            await rt.call("list_notes", {})


async def test_a_module_that_hangs_at_import_times_out_and_its_host_is_replaced(cfg):
    async with provision(cfg) as sb:
        with pytest.raises(ToolError, match="got no answer within 5 s"):
            async with ExecutableToolset(SPECS, sb, module="while True:\n    pass\n", init_timeout=5) as rt:
                await rt.reset({})
        async with ExecutableToolset(SPECS, sb, module=MODULE) as rt:  # a new host: the stuck one is gone
            await rt.reset({})
            assert json.loads((await rt.call("list_notes", {})).text) == []


async def test_a_module_that_does_not_fit_its_tools_fails_at_start(cfg):
    async with provision(cfg) as sb, ExecutableToolset(SPECS, sb, module="STATE_DEFAULT = {}\n") as rt:
        with pytest.raises(ToolError, match="no function create_note"):
            await rt.reset({})


async def test_selftest_runs_inside_the_sandbox(cfg):
    async with provision(cfg) as sb:
        await ship(sb, MODULE, TOOLS)
        argv = python_argv("tools.server.selftest", "--module", ".synth/impl.py", "--specs", ".synth/tools.json",
                           "--tests")
        await sb.write_file("good.py", (NOTES / "tests.py").read_bytes())
        await sb.write_file("bad.py", b"import impl\n\ndef test_x():\n    assert impl.list_notes({'notes': {}}) == [1]\n")
        good = json.loads((await sb.exec([*argv, "good.py"], timeout=60)).stdout)
        bad = json.loads((await sb.exec([*argv, "bad.py"], timeout=60)).stdout)
    assert good["passed"] and len(good["tests"]) == 3, good
    assert not bad["passed"] and "AssertionError" in bad["tests"][0]["error"]
    assert bad["untested"] == ["create_note", "delete_note", "get_note"]


@pytest.mark.docker
async def test_the_image_carries_the_runner(docker_image):
    async with provision(DockerConfig(image=docker_image)) as sb:
        result = await sb.exec(["python3", "-m", "tools.server", "--help"], timeout=60)
    assert result.exit_code == 0 and "--module" in result.stdout, result.stderr


async def test_seeded_faults_are_the_one_draw_and_leave_state_alone():
    from tools.runtime import injected_fault

    async with provision(LocalConfig(isolation="auto")) as sb:
        rt = ExecutableToolset(SPECS, sb, module=MODULE, seed=7, fault_rate=0.5)
        async with rt:
            await rt.reset({})
            outcomes = [await rt.call("create_note", {"title": f"n{i}", "body": "b"}) for i in range(12)]
            drawn = [injected_fault(7, i, 0.5) for i in range(1, 13)]
            assert [o.fault for o in outcomes] == [d.fault if d else None for d in drawn]
            assert any(o.fault for o in outcomes) and not all(o.fault for o in outcomes)
            assert len((await rt.snapshot())["notes"]) == sum(not o.fault for o in outcomes)


# A module-level counter (a fresh module must start it from zero again) and a draw from `random`.
COUNTING = MODULE + ("\n\nimport random\nDRAW = random.random()\nCALLS = []\n\n"
                     "def list_notes(state, tag=None):\n    CALLS.append(tag)\n    return [len(CALLS), DRAW]\n")


@pytest.mark.parametrize("process", ["per_episode", "shared"])
async def test_one_host_per_sandbox_and_a_fresh_module_per_episode(cfg, process):
    from sandboxes.pool import WarmPool

    pool_cfg = cfg.model_copy(update={"pool_size": 1})
    async with WarmPool(pool_cfg, size=1, acquire_timeout_s=30) as pool:
        seen = []
        for episode in range(3):
            async with (pool.acquire() as sb,
                        ExecutableToolset(SPECS, sb, module=COUNTING, seed=episode % 2, process=process) as rt):
                await rt.reset({"owner": f"u{episode}"})
                calls, draw = json.loads((await rt.call("list_notes", {})).text)
                assert calls == 1  # module globals start fresh
                await rt.call("create_note", {"title": "t", "body": "b"})  # would collide if state leaked
                assert (await rt.snapshot())["owner"] == f"u{episode}"
                seen.append((sb.id, rt.episode_process["host"], rt.episode_process["pid"], draw))
            await _until(lambda: pool.idle == 1)
    assert len({s[0] for s in seen}) == 1, seen  # the pool reused the sandbox...
    assert len({s[1] for s in seen}) == 1, seen  # ...and its host survived every reset
    # per_episode: each episode had its own process; shared: the host's
    assert len({s[2] for s in seen}) == (3 if process == "per_episode" else 1), seen
    assert seen[0][3] == seen[2][3] != seen[1][3]  # `random` follows the episode's seed, not the history


# Stashes the state in a module other episodes could read: what a shared host must not pass on.
STASHING = MODULE + ("\n\nimport json\n\ndef list_notes(state, tag=None):\n"
                     "    seen = getattr(json, 'stash', None)\n    json.stash = dict(state)\n    return [seen]\n")


async def test_a_shared_episode_that_patches_a_module_gets_its_host_replaced(cfg):
    from sandboxes.pool import WarmPool

    async with WarmPool(cfg.model_copy(update={"pool_size": 1}), size=1, acquire_timeout_s=30) as pool:
        hosts, seen, recycled = [], [], []
        for episode in range(2):
            async with (pool.acquire() as sb,
                        ExecutableToolset(SPECS, sb, module=STASHING, process="shared") as rt):
                await rt.reset({"owner": f"u{episode}"})
                seen.append(json.loads((await rt.call("list_notes", {})).text))
                hosts.append(rt.episode_process["host"])
            recycled.append(rt.recycled)
            await _until(lambda: pool.idle == 1)
    assert seen == [[None], [None]]  # the second episode did not see the first one's stash...
    assert hosts[0] != hosts[1]  # ...because the first one's host ended with it
    assert recycled[0] == ["module json gained ['stash']"], recycled


async def test_a_crashed_or_failed_episode_ends_the_host_and_the_next_starts_a_new_one(cfg):
    async with provision(cfg) as sb:
        async with ExecutableToolset(SPECS, sb, module=FATAL) as rt:
            await rt.reset({})
            first_host = rt.episode_process["host"]
            with pytest.raises(ToolError):
                await rt.call("list_notes", {})
        async with ExecutableToolset(SPECS, sb, module=MODULE) as rt:
            await rt.reset({})
            second_host = rt.episode_process["host"]
            assert json.loads((await rt.call("list_notes", {})).text) == []
        with pytest.raises(RuntimeError):
            async with ExecutableToolset(SPECS, sb, module=MODULE) as rt:
                await rt.reset({})
                raise RuntimeError("the episode failed")  # its host is closed, not reused
        async with ExecutableToolset(SPECS, sb, module=MODULE) as rt:
            await rt.reset({})
            third_host = rt.episode_process["host"]
    assert len({first_host, second_host, third_host}) == 3


async def test_the_runner_answers_bad_lines_and_unknown_methods_without_dying(tmp_path):
    import os
    import sys

    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": os.environ["PATH"]}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "tools.server", "--host", cwd=tmp_path, env=env,
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    lines = [b"this is not json", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "no/such"}).encode(),
             json.dumps({"jsonrpc": "2.0", "id": 2, "method": "synth/begin", "params": {"module": "x = (",
                                                                                      "tools": []}}).encode(),
             json.dumps({"jsonrpc": "2.0", "id": 3, "method": "ping"}).encode()]
    proc.stdin.write(b"\n".join(lines) + b"\n")
    await proc.stdin.drain()
    replies = [json.loads(await proc.stdout.readline()) for _ in lines]
    proc.stdin.close()
    assert await proc.wait() == 0
    assert replies[0]["error"]["code"] == -32700 and replies[0]["id"] is None
    assert replies[1]["error"]["code"] == -32601 and "no/such" in replies[1]["error"]["message"]
    assert replies[2]["id"] == 2 and "does not compile" in replies[2]["error"]["message"]
    assert replies[3] == {"jsonrpc": "2.0", "id": 3, "result": {}}


async def _until(predicate, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_the_official_mcp_client_drives_the_host_and_the_one_shot_runner(cfg):
    """The rollout speaks to the host with tools/host_client.py; the SDK must understand it too."""
    from typing import Any

    import mcp_types
    from pydantic import TypeAdapter

    from tools.mcp_pipe import mcp_session

    def request(method: str, params: dict) -> Any:
        return mcp_types.Request[dict[str, Any], str](method=method, params=params)

    result = TypeAdapter(dict[str, Any])
    async with provision(cfg) as sb:
        await ship(sb, MODULE, TOOLS)
        async with mcp_session(sb, python_argv("tools.server", "--host")) as session:
            assert (await session.list_tools()).tools == []  # no episode yet
            begun = await session.send_request(request("synth/begin", {"module": MODULE, "tools": TOOLS,
                                                                        "state": {"owner": "sdk"}}), result)
            assert begun["pid"] > 0
            assert [t.name for t in (await session.list_tools()).tools] == [t["name"] for t in TOOLS]
            created = await session.call_tool("create_note", {"title": "a", "body": "b"})
            assert not created.is_error and json.loads(created.content[0].text)["id"] == 1
            bad = await session.call_tool("create_note", {"title": "a"})
            assert bad.is_error and "'body' is a required property" in bad.content[0].text
            ended = await session.send_request(request("synth/end", {}), result)
            assert ended["state"]["owner"] == "sdk" and ended["state"]["next_id"] == 2
        argv = python_argv("tools.server", "--module", ".synth/impl.py", "--specs", ".synth/tools.json")
        async with mcp_session(sb, argv) as session:  # it serves the state file the episode left
            assert json.loads((await session.call_tool("list_notes", {})).content[0].text) == [{"id": 1, "title": "a"}]


async def test_a_toolset_written_by_the_embedded_model_is_served_and_keeps_state_per_sandbox(cfg):
    """tests/fixtures/toolsets/llm_fleetservice: a module `synth tools implement` got from SmolLM2-135M."""
    from tools.smoke import smoke_tests

    fixture = Path(__file__).parent / "fixtures" / "toolsets" / "llm_fleetservice"
    specs = [ToolSpec.model_validate(t) for t in json.loads((fixture / "tools.json").read_text())]
    module = (fixture / "impl.py").read_text()
    async with provision(cfg) as sb:
        await ship(sb, module, [s.to_mcp() for s in specs])
        selftest = python_argv("tools.server.selftest", "--module", ".synth/impl.py", "--specs", ".synth/tools.json",
                               "--tests", "smoke.py")
        await sb.write_file("smoke.py", smoke_tests([s.to_mcp() for s in specs]).encode())
        assert json.loads((await sb.exec(selftest, timeout=60)).stdout)["passed"]  # it passes today's smoke tests
        async with ExecutableToolset(specs, sb, module=module) as rt:
            await rt.reset({})
            assert [t["name"] for t in await rt.list_tools()] == ["create_booking"]
            first = json.loads((await rt.call("create_booking", {"get_order_status": True})).text)
            assert first["booking_id"] == "True2018-12-3"
            bad = await rt.call("create_booking", {"get_order_status": "yes"})
            assert bad.is_error and "is not of type 'boolean'" in bad.text
            await rt.call("create_booking", {"get_order_status": False})
            assert (await rt.snapshot())["booking_id"] == "False2018-12-3"  # state persists across calls
    async with provision(cfg) as sb, ExecutableToolset(specs, sb, module=module) as rt:
        await rt.reset({})
        assert "booking_id" not in await rt.snapshot()  # and never crosses into another sandbox
