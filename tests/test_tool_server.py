"""The generic MCP server runner (tools/server) serving the hand-written notes toolset inside real
sandboxes: local (bubblewrap when installed) and docker (marked; the image is built on demand)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from sandboxes.base import DockerConfig, LocalConfig, provision
from synth.errors import ToolError
from tools.executable import ExecutableToolset, python_argv, ship
from tools.spec import ToolSpec

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


async def test_seeded_faults_match_the_simulator_and_leave_state_alone():
    from tools.simulator import SimulatedToolset

    async with provision(LocalConfig(isolation="auto")) as sb:
        rt = ExecutableToolset(SPECS, sb, module=MODULE, seed=7, fault_rate=0.5)
        simulated = SimulatedToolset(None, SPECS, sb, seed=7, fault_rate=0.5)  # type: ignore[arg-type]
        async with rt:
            await rt.reset({})
            outcomes = [await rt.call("create_note", {"title": f"n{i}", "body": "b"}) for i in range(12)]
            assert [o.fault for o in outcomes] == [simulated.fault(i) for i in range(1, 13)]
            assert any(o.fault for o in outcomes) and not all(o.fault for o in outcomes)
            assert len((await rt.snapshot())["notes"]) == sum(not o.fault for o in outcomes)
