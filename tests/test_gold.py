"""Gold actions and final-state assertions: the evaluator, gold replay with the notes fixture (a
passing Implementation), the judge's `final_state_assertions` check, and implement -> judge end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from datasets import load_from_disk

from judges.assertions import _MISSING, assertion_failures, holds, resolve
from judges.checks import TASK, Subject, run_checks
from judges.gold import DO_NOTHING_PASSES, shape_problems, validate_tasks
from synth.config import RunConfig
from synth.core.records import (Agent, Criterion, GoldAction, Implementation, StateAssertion, Task, ToolSpec,
                                Trajectory)
from synth.core.units import Unit
from synth.run import open_run, run_stages
from synth.stages.tasks import draft_tasks
from synth.user_sim import STOP
from tests.fake_openai import FakeOpenAI
from tests.test_implement import scripted as scripted_body
from tools.scaffold import read_state_default
from tools.serving import Serving

NOTES = Path(__file__).parent / "fixtures" / "toolsets" / "notes"
TOOLS = json.loads((NOTES / "tools.json").read_text())
MODULE = (NOTES / "impl.py").read_text()
TESTS = (NOTES / "tests.py").read_text()
BWRAP = shutil.which("bwrap") is not None

STATE = {"notes": {"1": {"id": 1, "title": "Groceries", "body": "milk, eggs", "tags": ["home", "shop"]}},
         "next_id": 2, "log": [{"op": "create", "id": 1}]}


def A(path: str, op: str, value=None) -> StateAssertion:
    return StateAssertion(path=path, op=op, value="" if value is None else json.dumps(value))


# ---------------------------------------------------------------- the evaluator


def test_paths_reach_into_dicts_and_lists():
    assert resolve(STATE, "notes.1.title") == "Groceries"
    assert resolve(STATE, "notes.1.tags.1") == "shop"
    assert resolve(STATE, "log.0.op") == "create"
    assert resolve(STATE, "log.-1.id") == 1
    assert resolve(STATE, "") == STATE
    for missing in ("notes.2", "notes.1.tags.5", "log.x", "next_id.deeper", "nope"):
        assert resolve(STATE, missing) is _MISSING, missing


@pytest.mark.parametrize("assertion, expected", [
    (A("notes.1.title", "equals", "Groceries"), True),
    (A("notes.1.title", "equals", "groceries"), False),
    (A("next_id", "equals", 2), True),
    (A("next_id", "equals", "2"), False),  # JSON types count
    (A("notes.1", "equals", {"id": 1}), False),  # equals is exact; contains takes partial records
    (A("notes.1", "exists"), True),
    (A("notes.9", "exists"), False),
    (A("notes.9", "absent"), True),
    (A("notes.1.body", "absent"), False),
    (A("notes.1.tags", "contains", "shop"), True),
    (A("notes.1.tags", "contains", "work"), False),
    (A("notes.1.body", "contains", "eggs"), True),
    (A("notes", "contains", "1"), True),  # a dict contains its keys
    (A("notes.1", "contains", {"title": "Groceries", "tags": ["home", "shop"]}), True),
    (A("log", "contains", {"op": "create"}), True),  # a list holding a matching partial record
    (A("log", "contains", {"op": "delete"}), False),
    (A("notes.7.title", "equals", "x"), False),  # a missing path never equals or contains
    (A("notes.7.title", "contains", "x"), False),
])
def test_each_op(assertion, expected):
    assert holds(STATE, assertion) is expected


def test_bare_text_values_and_failure_messages():
    assert holds(STATE, StateAssertion(path="notes.1.title", op="equals", value="Groceries"))  # not JSON: the text
    failures = assertion_failures(STATE, [A("notes.1.title", "equals", "Trip"), A("notes.1", "exists"),
                                          A("notes.3", "exists")])
    assert failures == ['assertion notes.1.title equals "Trip" does not hold (found: "Groceries")',
                        "assertion notes.3 exists does not hold (found: missing)"]


def test_state_default_is_read_without_running_the_module():
    assert read_state_default(MODULE) == {"notes": {}, "next_id": 1}
    assert read_state_default("import os\nSTATE_DEFAULT = dict(os.environ)") is None  # not a literal
    assert read_state_default("def (") is None
    default = read_state_default(MODULE)
    assert shape_problems({"notes": {}, "next_id": 3}, default) == []
    assert shape_problems({"folders": [], "next_id": "3"}, default) == [
        "initial_state key 'folders' is not in STATE_DEFAULT (next_id, notes)",
        "initial_state.next_id is a string, STATE_DEFAULT has a number"]


# ---------------------------------------------------------------- gold replay in the tasks stage


def specs(toolset: str = "notes") -> list[ToolSpec]:
    return [ToolSpec.model_validate({**t, "toolset": toolset, "toolset_id": f"id_{toolset}", "domain": "notes",
                                     "state_model": "notes by id"}) for t in TOOLS]


def implementation(tools: list[ToolSpec]) -> Implementation:
    return Implementation(toolset_id=tools[0].toolset_id, toolset=tools[0].toolset, domain="notes",
                          tool_ids=[t.id for t in tools], module=MODULE, tests=TESTS, passed=True, rounds=1)


def gold_task(goal: str, actions: list[tuple[str, dict]], assertions: list[StateAssertion],
              initial: dict | None = None, facts: list[str] | None = None) -> dict:
    return {
        "goal": goal, "persona": "A busy teacher who writes tersely.", "user_facts": facts or ["The trip is in May."],
        "difficulty": "easy",
        # Not part of a task draft (the rubric step writes rubrics); here for tests that build a Task from this.
        "rubric": [{"text": "The assistant creates the note.", "kind": "essential", "weight": 3}],
        "initial_state": json.dumps(STATE_INITIAL if initial is None else initial),
        "gold_actions": [{"tool": tool, "arguments": json.dumps(args)} for tool, args in actions],
        "assertions": [a.model_dump() for a in assertions],
    }


STATE_INITIAL = {"notes": {"1": {"id": 1, "title": "Groceries", "body": "milk", "tags": ["home"]}}, "next_id": 2}
GOOD = gold_task("Add a note called Trip about packing, tagged travel.",
                 [("list_notes", {}), ("create_note", {"title": "Trip", "body": "pack bags", "tags": ["travel"]})],
                 [A("notes.2.title", "equals", "Trip"), A("notes.2.tags", "contains", "travel"), A("notes.1", "exists")],
                 facts=["The note should say: pack bags."])
UNKNOWN_ID = gold_task("Delete my note number 7, it is outdated.", [("delete_note", {"note_id": 7})],
                       [A("notes.7", "absent")])
BAD_ARGUMENT = gold_task("Make a note with the title 5 please.", [("create_note", {"title": 5, "body": "x"})],
                         [A("notes.2", "exists")])
WRONG_ASSERTION = gold_task("Delete the groceries note, I am done shopping.", [("delete_note", {"note_id": 1})],
                            [A("notes.1.title", "equals", "Shopping")])
BAD_SHAPE = gold_task("List my notes in the archive folder.", [("list_notes", {})], [A("next_id", "equals", 1)],
                      initial={"folders": ["archive"]})
NOT_A_TOOL = gold_task("Email my groceries note to my partner.", [("send_email", {"to": "x"})],
                       [A("notes.1", "exists")])
DO_NOTHING = gold_task("Show me my groceries note.", [("get_note", {"note_id": 1})],
                       [A("notes.1.title", "equals", "Groceries")])
UNKNOWABLE = gold_task("Add a note called Plans.", [("create_note", {"title": "Plans", "body": "paint the shed"})],
                       [A("notes.2.title", "equals", "Plans")])
MISSING_ID = gold_task("Tag note NB-77 as urgent.", [("list_notes", {})], [A("notes.2", "exists")])


def tasks_handler(drafts: list[dict]):
    def handler(body: dict) -> str | None:
        if "gold_actions" in json.dumps(body.get("response_format") or {}):
            return json.dumps({"tasks": drafts})
        return None
    return handler


def cfg_for(tmp_path, base_url: str, **sections) -> RunConfig:
    sandbox = {"type": "local", "isolation": "bwrap" if BWRAP else "none"}
    return RunConfig.model_validate({
        "name": "gold", "runs_dir": str(tmp_path), "llm": {"base_url": base_url, "model": "fake", "max_retries": 0},
        "tasks": {"per_agent": 6, "rubric_items": 2},
        "rollout": {"sandbox": sandbox, "max_turns": 2, "max_tool_steps": 2}, **sections,
    })


def agent_for(tools: list[ToolSpec]) -> Agent:
    return Agent(toolset_id=tools[0].toolset_id, toolset="notes", domain="notes", tool_ids=[t.id for t in tools],
                 name="Jot", system_prompt="You are Jot.")


async def test_gold_replay_keeps_valid_tasks_and_drops_the_rest_with_reasons(tmp_path):
    drafts = [GOOD, UNKNOWN_ID, BAD_ARGUMENT, WRONG_ASSERTION, BAD_SHAPE, NOT_A_TOOL, DO_NOTHING, UNKNOWABLE, MISSING_ID]
    tools = specs()
    async with FakeOpenAI(handler=tasks_handler(drafts)) as fake:
        async with open_run(cfg_for(tmp_path, fake.base_url, tasks={"per_agent": 9, "rubric_items": 2, "gold": True}),
                          quiet=True) as ctx:
            agent = agent_for(tools)
            serving = Serving({t.id: t for t in tools}, {agent.toolset_id: implementation(tools)})
            tasks = await draft_tasks(ctx, Unit(agent.id, agent), serving)
            errors = ctx.store.read("errors")
    (task,) = tasks
    assert task.validated and task.goal == GOOD["goal"] and task.initial_state == STATE_INITIAL
    assert [a.tool for a in task.gold_actions] == ["list_notes", "create_note"]
    # The replay's whole final state is stored; nothing in this module is random or a clock: no free path.
    assert task.gold_final_state == {"notes": {**STATE_INITIAL["notes"], "2": {
        "id": 2, "title": "Trip", "body": "pack bags", "tags": ["travel"]}}, "next_id": 3}
    assert task.free_paths == []
    # The writer's three assertions, then those derived from the gold diff.
    assert [(a.path, a.op) for a in task.assertions] == [
        ("notes.2.title", "equals"), ("notes.2.tags", "contains"), ("notes.1", "exists"),
        ("notes.2", "equals"), ("next_id", "equals")]
    reasons = [e.message for e in errors]
    assert all(e.error_type == "Rejected" and e.stage == "tasks" for e in errors) and len(reasons) == 8
    by_task = {int(r.split()[1]): r for r in reasons}
    assert "gold action 1 delete_note" in by_task[2] and "no note with id 7" in by_task[2]
    assert "gold action 1 create_note" in by_task[3] and "title" in by_task[3]
    assert 'assertion notes.1.title equals "Shopping" does not hold (found: missing)' in by_task[4]
    assert "initial_state key 'folders' is not in STATE_DEFAULT" in by_task[5]
    assert "send_email" in by_task[6] and "not one of the task's tools" in by_task[6]
    assert DO_NOTHING_PASSES in by_task[7]
    assert 'body="paint the shed" is not in the goal, the user\'s facts, the initial state or the agent\'s prompt' in by_task[8]
    assert "mention 'NB-77', which is not in the initial state" in by_task[9]


TICKETS = """import random, time

STATE_DEFAULT = {"tickets": {}, "log": [], "opened": 0}


def open_ticket(state, title):
    key = "T" + str(random.randint(10 ** 6, 10 ** 7))
    state["tickets"][key] = {"id": key, "title": title, "opened_at": time.time()}
    state["log"].append({"op": "open", "id": key})
    state["opened"] += 1
    return state["tickets"][key]
"""
TICKET_TOOL = {"name": "open_ticket", "description": "Open a ticket; returns it.", "inputSchema": {
    "type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"], "additionalProperties": False}}


async def test_a_do_nothing_trajectory_fails_a_gold_task_and_free_paths_let_a_correct_one_pass(tmp_path):
    """Generated ids and clock values differ between two correct runs: the double replay finds them,
    so a correct episode matches the gold state, while doing nothing or the wrong thing fails."""
    (tool,) = [ToolSpec.model_validate({**TICKET_TOOL, "toolset": "desk", "toolset_id": "id_desk"})]
    impl = Implementation(toolset_id="id_desk", toolset="desk", tool_ids=[tool.id], module=TICKETS, passed=True)
    draft = Task(agent_id="a", goal="Open a ticket titled Printer jam.", persona="p", rubric=[],
                 user_facts=["Title: Printer jam"], gold_actions=[GoldAction(tool="open_ticket",
                                                                             arguments='{"title": "Printer jam"}')],
                 assertions=[A("opened", "equals", 1)])
    sandbox = {"type": "local", "isolation": "bwrap" if BWRAP else "none"}
    [(task, problems)] = await validate_tasks(RunConfig.model_validate({"rollout": {"sandbox": sandbox}}).rollout.sandbox,
                                              {}, [draft], [tool], impl, {"open_ticket"})
    assert problems == []
    assert task.free_paths == ["log.0.id", "tickets.*.id", "tickets.*.opened_at", "tickets.{key}"]
    (gold_ticket,) = task.gold_final_state["tickets"].values()
    assert gold_ticket["title"] == "Printer jam"

    def verdict_checks(final_state: dict) -> dict[str, bool]:
        trajectory = Trajectory(task_id=task.id, agent_id="a", messages=[], tools=[], final_state=final_state)
        return run_checks(Subject(trajectory, task), TASK)

    nothing = {"tickets": {}, "log": [], "opened": 0}  # what a do-nothing episode ends with
    assert verdict_checks(nothing) == {"final_state_assertions": False, "final_state_matches_gold": False}
    other_run = {"tickets": {"T42": {"id": "T42", "title": "Printer jam", "opened_at": 1.5}},
                 "log": [{"op": "open", "id": "T42"}], "opened": 1}
    assert verdict_checks(other_run) == {"final_state_assertions": True, "final_state_matches_gold": True}
    wrong_title = {**other_run, "tickets": {"T42": {"id": "T42", "title": "Printer", "opened_at": 1.5}}}
    assert verdict_checks(wrong_title) == {"final_state_assertions": True, "final_state_matches_gold": False}
    twice = {"tickets": {"T1": gold_ticket, "T2": gold_ticket}, "log": other_run["log"] * 2, "opened": 2}
    assert verdict_checks(twice) == {"final_state_assertions": False, "final_state_matches_gold": False}


async def test_simulated_toolsets_get_no_gold_fields(tmp_path):
    tools = specs()
    async with FakeOpenAI() as fake:
        async with open_run(cfg_for(tmp_path, fake.base_url, tasks={"world": False, "rubric_items": 2}), quiet=True) as ctx:
            agent = agent_for(tools)
            tasks = await draft_tasks(ctx, Unit(agent.id, agent), Serving({t.id: t for t in tools}, {}))
        (request,) = [b for b in fake.requests if '"tasks"' in json.dumps(b.get("response_format") or {})]
    assert tasks and all(not t.validated and not t.gold_actions and not t.assertions and not t.gold_final_state
                         and t.initial_state == {} for t in tasks)
    prompt = request["messages"][-1]["content"]
    assert "STATE_DEFAULT" not in prompt and "gold_actions" not in json.dumps(request["response_format"])


def test_task_ids_of_plain_tasks_are_unchanged_by_the_gold_fields():
    from synth.core.hashing import content_hash

    task = Task(agent_id="a", goal="g", persona="p", rubric=[Criterion(text="t")])
    assert task.id == content_hash(task.model_dump(exclude={"id", "gold_actions", "assertions", "validated",
                                                            "gold_final_state", "free_paths", "reference",
                                                            "rubric_problems"}))
    agent = agent_for(specs())
    assert agent.id == content_hash(agent.model_dump(exclude={"id", "strategy", "toolset_ids", "distractor_tool_ids"}))


# ---------------------------------------------------------------- the judge's check


def test_final_state_assertions_check_passes_and_fails_with_the_state():
    task = Task(agent_id="a", goal="g", persona="p", rubric=[Criterion(text="t")],
                assertions=[A("notes.2.title", "equals", "Trip")], validated=True)
    done = {"notes": {"2": {"title": "Trip"}}, "next_id": 3}
    trajectory = lambda state: Trajectory(task_id=task.id, agent_id="a", messages=[], tools=[], final_state=state)  # noqa: E731
    assert run_checks(Subject(trajectory(done), task), TASK) == {"final_state_assertions": True}
    assert run_checks(Subject(trajectory({"notes": {}, "next_id": 2}), task), TASK) == {"final_state_assertions": False}
    plain = Task(agent_id="a", goal="g", persona="p", rubric=[Criterion(text="t")])
    assert run_checks(Subject(trajectory({}), plain), TASK) == {}  # no assertions: no check


# ---------------------------------------------------------------- implement -> agents -> tasks -> rollout -> judge


def implement_and_gold(body: dict) -> str | None:
    """The notes bodies for `implement`, a valid and a broken gold task for `tasks`; the rest default."""
    schema = json.dumps(body.get("response_format") or {})
    if "Write the body of this Python function" in json.dumps(body["messages"]):
        return scripted_body(body)
    if "gold_actions" in schema:
        return json.dumps({"tasks": [GOOD, UNKNOWN_ID]})
    return None


async def test_end_to_end_gold_tasks_are_checked_on_the_final_state(tmp_path):
    async with FakeOpenAI(handler=implement_and_gold, stop_marker=STOP) as fake:
        cfg = cfg_for(tmp_path, fake.base_url, tasks={"per_agent": 2, "rubric_items": 2, "gold": True})
        async with open_run(cfg, quiet=True) as ctx:
            ctx.store.append("tools", specs())
            await run_stages(ctx, ["implement", "agents", "tasks", "rollout", "judge", "export"])
            tasks, trajectories = ctx.store.read("tasks"), ctx.store.read("trajectories")
            verdicts, errors = ctx.store.read("verdicts"), ctx.store.read("errors")
            (implemented,) = ctx.store.read("implementations")
        simulated = [b for b in fake.requests if "You are the backend of the tool" in json.dumps(b["messages"])]
    assert [t.goal for t in tasks] == [GOOD["goal"]] and tasks[0].validated
    assert [e.error_type for e in errors] == ["Rejected"] and "no note with id 7" in errors[0].message
    assert trajectories and simulated == []
    for trajectory in trajectories:
        assert trajectory.final_state["notes"]["1"]["title"] == "Groceries"  # the task's initial state was served
    assert len(verdicts) == len(trajectories)
    by_id = {t.id: t for t in trajectories}
    for verdict in verdicts:
        trajectory = by_id[verdict.trajectory_id]
        ok = not assertion_failures(trajectory.final_state, tasks[0].assertions)
        assert verdict.checks["final_state_assertions"] is ok
        assert ok or ("check failed: final_state_assertions" in verdict.reasons and not verdict.keep)
    # The RL row carries what a trainer needs to recreate the executable environment and check it.
    (rl_row,) = load_from_disk(str(cfg.run_dir / "export" / "rl"))["train"]
    environment = rl_row["env_spec"]
    assert environment["runtime"] == "executable" and environment["module"] == implemented.module
    assert [a["tool"] for a in environment["gold_actions"]] == ["list_notes", "create_note"]
    assert len(environment["assertions"]) == 5 and environment["gold_final_state"] == tasks[0].gold_final_state
