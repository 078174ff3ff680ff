"""Tasks on simulated toolsets get a seeded world, checked before it is kept, and their state
assertions are checked on the final state like a gold task's (tasks -> rollout -> judge)."""

from __future__ import annotations

import json
import shutil

from synth.config import RunConfig
from synth.core.records import Agent, ToolSpec
from synth.core.units import Unit
from synth.run import open_run, run_stages
from synth.stages.tasks import draft_tasks
from synth.stages.tasks_world import build_world, mentioned_ids, record_model, world_problems
from synth.user_sim import STOP
from tests.fake_openai import FakeOpenAI
from tests.test_simulator import SPECS
from tools.serving import Serving

BWRAP = shutil.which("bwrap") is not None


def record(collection: str, rid: str, **fields) -> dict:
    return {"collection": collection, "id": rid, "fields": [{"name": k, "value": json.dumps(v)} for k, v in fields.items()]}


WORLD = [record("bookings", "B-1001", customer_id="C-7", status="confirmed"),
         record("bookings", "B-1002", customer_id="C-8", status="confirmed"),
         record("customers", "C-7", name="Ada")]
CANCELLED = {"path": "bookings.B-1001.status", "op": "equals", "value": '"cancelled"'}


def world_task(goal: str, world: list[dict], assertions: list[dict], facts: list[str] | None = None) -> dict:
    return {"goal": goal, "persona": "A hurried traveller.", "user_facts": facts or ["My booking is B-1001."],
            "difficulty": "easy", "world": world, "world_checks": assertions}


VALID = world_task("Cancel my booking B-1001.", WORLD, [CANCELLED])
LOOKUP = world_task("What room is my booking in?", WORLD, [])
UNKNOWN_ID = world_task("Cancel booking B-2000 please.", WORLD, [CANCELLED], facts=["It is booking B-2000."])
DISTRACTOR_ONLY = world_task("Cancel my booking B-1001.", WORLD[1:], [CANCELLED])  # B-1001 itself is missing
HOLDS = world_task("Make sure B-1001 stays confirmed.", WORLD, [{**CANCELLED, "value": '"confirmed"'}])
BAD_PATH = world_task("Cancel my booking B-1001.", WORLD, [{"path": "orders.B-1001", "op": "absent", "value": ""}])
TWICE = world_task("Cancel my booking B-1001.", WORLD + WORLD[:1], [CANCELLED])
ASSISTANT_PERSONA = {**VALID, "persona": "A Booking Assistant who can cancel bookings."}


def handler(drafts: list[dict]):
    def answer(body: dict) -> str | None:
        schema = json.dumps(body.get("response_format") or {})
        if '"world"' in schema:
            return json.dumps({"tasks": drafts})
        system = str(body["messages"][0]["content"])
        if STOP in system:  # the user simulator: asks once, then stops
            return f"Thanks. {STOP}" if len(body["messages"]) > 2 else "Please cancel booking B-1001."
        return None
    return answer


def cfg_for(tmp_path, base_url: str, per_agent: int) -> RunConfig:
    return RunConfig.model_validate({
        "name": "world", "runs_dir": str(tmp_path), "llm": {"base_url": base_url, "model": "fake", "max_retries": 0},
        "tasks": {"per_agent": per_agent, "rubric_items": 2},
        "rollout": {"sandbox": {"type": "local", "isolation": "bwrap" if BWRAP else "none"}, "max_turns": 1,
                    "max_tool_steps": 1}})


def agent_for(specs: list[ToolSpec]) -> Agent:
    return Agent(toolset_id="ts", toolset="travel", domain="travel", tool_ids=[s.id for s in specs], name="Trip",
                 system_prompt="You manage hotel bookings.")


async def test_seeded_worlds_are_kept_only_when_they_pass_their_checks(tmp_path):
    drafts = [VALID, LOOKUP, UNKNOWN_ID, DISTRACTOR_ONLY, HOLDS, BAD_PATH, TWICE, ASSISTANT_PERSONA]
    async with FakeOpenAI(handler=handler(drafts)) as fake:
        async with open_run(cfg_for(tmp_path, fake.base_url, len(drafts)), quiet=True) as ctx:
            agent = agent_for(SPECS)
            tasks = await draft_tasks(ctx, Unit(agent.id, agent), Serving({s.id: s for s in SPECS}, {}))
            errors = ctx.store.read("errors")
        (request,) = [b for b in fake.requests if '"world"' in json.dumps(b.get("response_format") or {})]
    # The collections are offered as an enum: the tools' nouns and the entities their ids name.
    assert "The world's collections: bookings, customers" in request["messages"][0]["content"]
    assert [t.goal for t in tasks] == [VALID["goal"], LOOKUP["goal"]]
    assert tasks[0].initial_state == {"bookings": {"B-1001": {"customer_id": "C-7", "status": "confirmed"},
                                                   "B-1002": {"customer_id": "C-8", "status": "confirmed"}},
                                      "customers": {"C-7": {"name": "Ada"}}}
    assert [a.path for a in tasks[0].assertions] == ["bookings.B-1001.status"] and tasks[1].assertions == []
    assert not any(t.validated or t.gold_final_state for t in tasks)
    by_task = {int(e.message.split()[1]): e.message for e in errors}
    assert set(by_task) == {3, 4, 5, 6, 7, 8} and all(e.error_type == "Rejected" for e in errors)
    assert "mention 'B-2000', which is not in the world" in by_task[3]
    assert "mention 'B-1001', which is not in the world" in by_task[4]
    assert "already hold on the initial state" in by_task[5]
    assert "assertion path 'orders.B-1001' is not in the world's collections" in by_task[6]
    assert "bookings.B-1001 is given twice" in by_task[7]
    # A persona that is the assistant would make the simulator speak as the assistant.
    assert "the persona describes an assistant, not the user" in by_task[8]


async def test_state_assertions_judge_simulated_episodes(tmp_path):
    """A simulated episode that does not cancel the booking fails the task's assertion and is dropped for it."""
    async with FakeOpenAI(handler=handler([VALID]), stop_marker=STOP) as fake:
        async with open_run(cfg_for(tmp_path, fake.base_url, 1), quiet=True) as ctx:
            agent = agent_for(SPECS)
            ctx.store.append("tools", SPECS)
            ctx.store.append("agents", [agent])
            await run_stages(ctx, ["tasks", "rollout", "judge"])
            (task,), trajectories = ctx.store.read("tasks"), ctx.store.read("trajectories")
            verdicts = ctx.store.read("verdicts")
            manifest = ctx.store.manifest()
    assert trajectories and len(verdicts) == len(trajectories)
    for trajectory, verdict in zip(trajectories, verdicts):
        assert trajectory.final_state["bookings"]["B-1001"]["status"] == "confirmed"  # the world was served
        assert verdict.checks["final_state_assertions"] is False and not verdict.keep
        assert "check failed: final_state_assertions" in verdict.reasons
    assert manifest["stages"]["tasks"]["seeded_world"] == 1
    assert manifest["state_checks"]["kept_on_state_check"] == 0


def test_a_world_of_one_record_has_no_distractor():
    world, problems = build_world(record_model(["bookings"])(**r) for r in WORLD[:1])
    assert problems == [] and world_problems(world, ["Cancel B-1001."]) == [
        "the world holds 1 record(s): seed the records the task talks about and at least one other"]


def test_ids_in_the_users_words():
    text = "Booking B-1001 at 10am on 2024-05-01, order ORD123 and #4411, note 7, 5kg, room 12, user_42"
    assert mentioned_ids([text]) == ["B-1001", "ORD123", "#4411", "user_42"]


async def test_a_task_whose_rubric_never_parses_is_rejected_and_the_others_stay(tmp_path):
    base = handler([VALID, LOOKUP])

    def answer(body: dict) -> str | None:
        prompt = str(body["messages"][0]["content"])
        if "grading rubric" in prompt and LOOKUP["goal"] in prompt:
            return "```python\njson.dumps({ , })"  # what SmolLM2-135M wrote, twice
        return base(body)

    async with FakeOpenAI(handler=answer) as fake:
        async with open_run(cfg_for(tmp_path, fake.base_url, 2), quiet=True) as ctx:
            agent = agent_for(SPECS)
            tasks = await draft_tasks(ctx, Unit(agent.id, agent), Serving({s.id: s for s in SPECS}, {}))
            errors = ctx.store.read("errors")
    assert [t.goal for t in tasks] == [VALID["goal"]] and len(tasks[0].rubric) == 2
    (error,) = errors
    assert error.error_type == "Rejected" and LOOKUP["goal"] in error.message and "no valid rubric reply" in error.message
