"""Composite implementations (tools/compose.py): one module serving the tools of several toolsets,
each part's state under its key, run by the real tool host in local (and docker) sandboxes; the
rule that picks it for mixed and distractor agents (tools/serving.py Serving);
and a mixed agent's rollout on executable tools end to end against the scripted fake LLM."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from sandboxes import provision
from sandboxes.docker import DockerConfig
from sandboxes.local import LocalConfig
from synth.core.errors import ToolError
from synth.core.records import Agent, Implementation, ToolSpec
from tools.compose import COMPOSITE_PREFIX, compose, state_keys
from tools.executable import ExecutableToolset
from tools.scaffold import read_state_default
from tools.serving import Serving

FIXTURES = Path(__file__).parent / "fixtures" / "toolsets"
NOTES_MODULE = (FIXTURES / "notes" / "impl.py").read_text()
FLEET_MODULE = (FIXTURES / "llm_fleetservice" / "impl.py").read_text()
BWRAP = shutil.which("bwrap") is not None


def specs(fixture: str, toolset: str, domain: str, rename: tuple[str, str] | None = None) -> list[ToolSpec]:
    tools = json.loads((FIXTURES / fixture / "tools.json").read_text())
    if rename:
        tools = [{**t, "name": t["name"].replace(*rename)} for t in tools]
    return [ToolSpec.model_validate({**t, "toolset": toolset, "toolset_id": f"id_{toolset}", "domain": domain})
            for t in tools]


def implementation(tools: list[ToolSpec], module: str, passed: bool = True) -> Implementation:
    first = tools[0]
    return Implementation(toolset_id=first.toolset_id, toolset=first.toolset, domain=first.domain,
                          tool_ids=[t.id for t in tools], module=module, passed=passed, rounds=1)


NOTES = specs("notes", "notes", "notes")
FLEET = specs("llm_fleetservice", "llm_fleetservice", "fleet")
NOTES_IMPL, FLEET_IMPL = implementation(NOTES, NOTES_MODULE), implementation(FLEET, FLEET_MODULE)
COMPOSITE = compose([(NOTES_IMPL, NOTES), (FLEET_IMPL, FLEET)])
SEEDED_NOTE = {"id": 1, "title": "Groceries", "body": "milk", "tags": ["home"]}


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def cfg(request):
    if request.param == "local":
        return LocalConfig(isolation="bwrap" if BWRAP else "auto")
    return DockerConfig(image=request.getfixturevalue("docker_image"), memory_mb=256, pids_limit=64)


# ---------------------------------------------------------------- the composed module in a sandbox


@pytest.mark.parametrize("process", ["shared", "per_episode"])
async def test_a_composite_serves_both_toolsets_each_on_its_own_state(cfg, process):
    async with provision(cfg) as sb, ExecutableToolset(NOTES + FLEET, sb, module=COMPOSITE.module,
                                                       process=process) as rt:
        # Seeded per key; the fleet part is seeded without its default keys, which it gets on first use.
        await rt.reset({"notes": {"notes": {"1": SEEDED_NOTE}, "next_id": 2},
                        "llm_fleetservice": {"owner": "ann"}})
        assert json.loads((await rt.call("list_notes", {})).text) == [{"id": 1, "title": "Groceries"}]
        created = await rt.call("create_note", {"title": "Trip", "body": "pack"})
        assert not created.is_error and json.loads(created.text)["id"] == 2
        booked = await rt.call("create_booking", {"get_order_status": True})
        assert not booked.is_error and json.loads(booked.text)["booking_id"] == "True2018-12-3"
        missing = await rt.call("get_note", {"note_id": 99})  # a ToolFailure raised inside the notes part
        assert missing.is_error and missing.text == "Error: no note with id 99"
        bad = await rt.call("create_booking", {"get_order_status": "yes"})  # validated against the part's schema
        assert bad.is_error and "is not of type 'boolean'" in bad.text
        unknown = await rt.call("create_note", {"title": "x", "body": "y", "extra": 1})
        assert unknown.is_error and "Additional properties" in unknown.text
        final = await rt.finish()
    assert set(final) == {"notes", "llm_fleetservice"}  # no part's keys at the top level (next_id twice)
    assert final["notes"]["next_id"] == 3 and set(final["notes"]["notes"]) == {"1", "2"}
    assert final["llm_fleetservice"] == {"owner": "ann", "booking_id": "True2018-12-3", "bookings": {}, "next_id": 1}


async def test_an_unseeded_composite_starts_from_every_parts_default():
    async with provision(LocalConfig(isolation="bwrap" if BWRAP else "auto")) as sb:
        async with ExecutableToolset(NOTES + FLEET, sb, module=COMPOSITE.module) as rt:
            await rt.reset({})
            assert await rt.snapshot() == {"notes": {"notes": {}, "next_id": 1},
                                           "llm_fleetservice": {"bookings": {}, "next_id": 1}}
            assert [t["name"] for t in await rt.list_tools()] == [t.name for t in NOTES + FLEET]


def test_state_default_reads_the_composite_default_without_running_it():
    assert read_state_default(COMPOSITE.module) == {"notes": read_state_default(NOTES_MODULE),
                                               "llm_fleetservice": read_state_default(FLEET_MODULE)}
    # A part whose default is not a literal: the composite's is built at import, and not readable here.
    built = FLEET_MODULE.replace('STATE_DEFAULT = {"bookings": {}, "next_id": 1}',
                                 'STATE_DEFAULT = dict(bookings={}, next_id=1)')
    assert built != FLEET_MODULE
    assert read_state_default(compose([(NOTES_IMPL, NOTES), (implementation(FLEET, built), FLEET)]).module) is None


async def test_a_non_literal_part_default_is_built_when_the_module_loads():
    built = FLEET_MODULE.replace('STATE_DEFAULT = {"bookings": {}, "next_id": 1}',
                                 'STATE_DEFAULT = dict(bookings={}, next_id=7)')
    composite = compose([(NOTES_IMPL, NOTES), (implementation(FLEET, built), FLEET)])
    async with provision(LocalConfig(isolation="bwrap" if BWRAP else "auto")) as sb:
        async with ExecutableToolset(NOTES + FLEET, sb, module=composite.module) as rt:
            await rt.reset({})
            assert (await rt.snapshot())["llm_fleetservice"] == {"bookings": {}, "next_id": 7}


async def test_the_host_checks_the_parts_real_signatures(cfg):
    # get_note's parameter no longer matches its schema: the wrapper must not hide that.
    wrong = NOTES_MODULE.replace("def get_note(state, note_id):", "def get_note(state, ident):")
    assert wrong != NOTES_MODULE
    composite = compose([(implementation(NOTES, wrong), NOTES), (FLEET_IMPL, FLEET)])
    async with provision(cfg) as sb, ExecutableToolset(NOTES + FLEET, sb, module=composite.module) as rt:
        with pytest.raises(ToolError, match="get_note: no parameter for schema property 'note_id'"):
            await rt.reset({})


async def test_a_part_missing_a_function_is_named_by_the_contract_check():
    without = NOTES_MODULE.replace("def delete_note(state, note_id):", "def remove_note(state, note_id):")
    composite = compose([(implementation(NOTES, without), NOTES), (FLEET_IMPL, FLEET)])
    async with provision(LocalConfig(isolation="bwrap" if BWRAP else "auto")) as sb:
        with pytest.raises(ToolError, match="no function delete_note"):
            async with ExecutableToolset(NOTES + FLEET, sb, module=composite.module) as rt:
                await rt.reset({})


async def test_a_shared_episode_is_still_checked_for_what_a_part_patches():
    """The parts' imports are only strings in the composite; the host must still watch them."""
    from sandboxes.pool import WarmPool

    stashing = NOTES_MODULE + ("\n\nimport collections\n\ndef list_notes(state, tag=None):\n"
                               "    collections.stash = 1\n    return []\n")
    composite = compose([(implementation(NOTES, stashing), NOTES), (FLEET_IMPL, FLEET)])
    local = LocalConfig(isolation="bwrap" if BWRAP else "auto", pool_size=1)
    async with WarmPool(local, size=1, acquire_timeout_s=30) as pool:
        async with pool.acquire() as sb, ExecutableToolset(NOTES + FLEET, sb, module=composite.module,
                                                           process="shared") as rt:
            await rt.reset({})
            await rt.call("list_notes", {})
    assert rt.recycled == ["module collections gained ['stash']"]


# ---------------------------------------------------------------- compose itself


def test_composite_record_fields():
    assert COMPOSITE.passed and COMPOSITE.tests == ""
    assert COMPOSITE.tool_ids == [t.id for t in NOTES + FLEET]
    assert COMPOSITE.toolset_id == f"{COMPOSITE_PREFIX}id_notes+id_llm_fleetservice"
    assert COMPOSITE.toolset == "notes + llm_fleetservice" and COMPOSITE.domain == "notes"
    assert NOTES_IMPL.id in COMPOSITE.provenance["composed"] and FLEET_IMPL.id in COMPOSITE.provenance["composed"]
    again = compose([(NOTES_IMPL, NOTES), (FLEET_IMPL, FLEET)])
    assert again.module == COMPOSITE.module and again.id == COMPOSITE.id  # deterministic
    order = [FLEET[0].id, NOTES[2].id]
    assert compose([(NOTES_IMPL, NOTES), (FLEET_IMPL, FLEET)], order=order).tool_ids[:2] == order


def test_state_keys_are_sanitized_and_unique_in_order():
    assert state_keys(["notes", "notes", "a.b c", "", "notes"]) == ["notes", "notes_2", "a_b_c", "toolset", "notes_3"]


def test_two_toolsets_of_one_name_get_distinct_keys():
    memos = specs("notes", "notes", "memos", rename=("note", "memo"))
    memos = [ToolSpec.model_validate({**m.model_dump(exclude={"id"}), "toolset_id": "id_memos"}) for m in memos]
    memo_module = NOTES_MODULE.replace("_note(", "_memo(")
    composite = compose([(NOTES_IMPL, NOTES), (implementation(memos, memo_module), memos)])
    assert set(read_state_default(composite.module)) == {"notes", "notes_2"}


def test_a_tool_name_in_two_parts_cannot_be_composed():
    other = specs("notes", "journal", "journal")
    with pytest.raises(ValueError, match="'create_note' \\('notes' and 'journal'\\)"):
        compose([(NOTES_IMPL, NOTES), (implementation(other, NOTES_MODULE), other)])


# ---------------------------------------------------------------- which implementation serves an agent


TOOLS = {t.id: t for t in NOTES + FLEET}
IMPLS = {NOTES_IMPL.toolset_id: NOTES_IMPL, FLEET_IMPL.toolset_id: FLEET_IMPL}


def agent(tools: list[ToolSpec], strategy: str = "mixed", decoys: list[ToolSpec] = ()) -> Agent:
    return Agent(toolset_id="id_notes", toolset="notes", domain="notes", tool_ids=[t.id for t in tools],
                 name="Jot", system_prompt="You are Jot.", strategy=strategy,
                 toolset_ids=sorted({t.toolset_id for t in tools}) if strategy != "single" else [],
                 distractor_tool_ids=[t.id for t in decoys])


def test_a_single_toolset_agent_gets_its_implementation_itself():
    assert Serving(TOOLS, IMPLS).implementation(agent(NOTES, "single")) is NOTES_IMPL


def test_a_mixed_agent_gets_a_composite_when_both_toolsets_pass():
    mixed = agent(NOTES + FLEET)
    serving = Serving(TOOLS, IMPLS)
    served = serving.implementation(mixed)
    assert served is not None and served.toolset_id.startswith(COMPOSITE_PREFIX)
    assert served.tool_ids == mixed.tool_ids and served.module == COMPOSITE.module
    assert serving.implementation(mixed) is served  # composed once, then cached


def test_a_mixed_agent_falls_back_when_a_toolset_is_missing_or_failed():
    mixed = agent(NOTES + FLEET)
    assert Serving(TOOLS, {NOTES_IMPL.toolset_id: NOTES_IMPL}).implementation(mixed) is None
    failed = implementation(FLEET, FLEET_MODULE, passed=False)
    assert Serving(TOOLS, {**IMPLS, failed.toolset_id: failed}).implementation(mixed) is None
    partial = implementation(NOTES[:2], NOTES_MODULE)  # covers only two of the agent's notes tools
    assert Serving(TOOLS, {**IMPLS, partial.toolset_id: partial}).implementation(mixed) is None
    assert Serving({t.id: t for t in NOTES}, IMPLS).implementation(mixed) is None  # a tool of unknown toolset


def test_decoys_need_their_toolset_implemented_too():
    decoy = FLEET[0]
    distracted = agent([NOTES[0], decoy, *NOTES[1:]], "distractors", decoys=[decoy])
    assert Serving(TOOLS, {NOTES_IMPL.toolset_id: NOTES_IMPL}).implementation(distracted) is None
    served = Serving(TOOLS, IMPLS).implementation(distracted)
    assert served is not None and served.tool_ids == distracted.tool_ids
    assert set(read_state_default(served.module)) == {"notes", "llm_fleetservice"}  # the agent's own toolset first
    assert list(read_state_default(served.module)) == ["notes", "llm_fleetservice"]


def test_a_name_collision_falls_back_to_the_simulator_and_says_why_once(caplog):
    journal = specs("notes", "journal", "journal")
    tools = {**TOOLS, **{t.id: t for t in journal}}
    impls = {**IMPLS, "id_journal": implementation(journal, NOTES_MODULE)}
    clash = agent(NOTES + journal)
    serving = Serving(tools, impls)
    with caplog.at_level(logging.INFO, logger="tools.serving"):
        assert serving.implementation(clash) is None
        assert serving.implementation(clash) is None
    reasons = [r.getMessage() for r in caplog.records if r.name == "tools.serving"]
    assert len(reasons) == 1 and "tool simulator" in reasons[0] and "'create_note'" in reasons[0]


# ---------------------------------------------------------------- a mixed agent's rollout, end to end


async def test_a_mixed_agents_rollout_runs_both_toolsets_for_real(tmp_path):
    from synth.config import RunConfig
    from synth.core.records import Criterion, Task
    from synth.stages.rollout import make_rollouts
    from synth.run import open_run
    from synth.user_sim import STOP
    from tests.fake_openai import FakeOpenAI

    def script(body: dict) -> dict | str | None:
        """Agent: one note and one booking in one message, then text; user: asks once, then stops."""
        if STOP in str(body["messages"][0]["content"]):
            return f"Thanks, bye. {STOP}" if len(body["messages"]) > 2 else "Note my trip and book a car."
        if body.get("tools") and body["messages"][-1]["role"] != "tool":
            calls = [{"id": "1", "type": "function",
                      "function": {"name": "create_note", "arguments": {"title": "Trip", "body": "pack"}}},
                     {"id": "2", "type": "function",
                      "function": {"name": "create_booking", "arguments": {"get_order_status": True}}}]
            return {"content": "", "tool_calls": calls}
        return "Done: noted and booked."

    async with FakeOpenAI(handler=script) as fake:
        cfg = RunConfig.model_validate({
            "name": "composite", "runs_dir": str(tmp_path),
            "llm": {"base_url": fake.base_url, "model": "fake", "max_retries": 0},
            "rollout": {"max_turns": 2, "max_tool_steps": 2,
                        "sandbox": {"type": "local", "isolation": "bwrap" if BWRAP else "none"}},
        })
        async with open_run(cfg, quiet=True) as ctx:
            mixed = agent(NOTES + FLEET)
            task = Task(agent_id=mixed.id, goal="Note my trip and book a car.", persona="A traveller.",
                        initial_state={"notes": {"notes": {"1": SEEDED_NOTE}, "next_id": 2}},
                        rubric=[Criterion(text="Creates the note.")])
            for kind, records in (("tools", NOTES + FLEET), ("implementations", [NOTES_IMPL, FLEET_IMPL]),
                                  ("agents", [mixed]), ("tasks", [task])):
                ctx.store.append(kind, records)
            await make_rollouts(ctx)
            (trajectory,) = ctx.store.read("trajectories")
            stored = ctx.store.read("implementations")
        simulated = [b for b in fake.requests if "You are the backend of the tool" in json.dumps(b["messages"])]
    assert simulated == []  # no tool simulator call: the tools ran for real
    assert [(c.name, c.is_error) for c in trajectory.tool_calls] == [("create_note", False), ("create_booking", False)]
    assert json.loads(trajectory.tool_calls[0].result)["id"] == 2  # the task's initial state was served
    state = trajectory.final_state
    assert set(state) == {"notes", "llm_fleetservice"}
    assert set(state["notes"]["notes"]) == {"1", "2"} and state["llm_fleetservice"]["booking_id"] == "True2018-12-3"
    assert [i.id for i in stored] == [NOTES_IMPL.id, FLEET_IMPL.id]  # the composite is never stored
