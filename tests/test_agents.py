"""Agent diversification: toolset sampling strategies (deterministic, decoys recorded, mixed spans two
domains), the policy-structured system prompt, and near-duplicate removal with a Rejected record."""

from __future__ import annotations

import json

from judges.checks import TASK, Subject, run_checks
from synth.config import RunConfig
from synth.core.hashing import content_hash
from synth.core.records import Criterion, Task, ToolSpec, Trajectory
from synth.run import open_run, run_stages
from synth.stages.agents import AgentPlan, jaccard, plan_agent, toolsets
from tests.fake_openai import FakeOpenAI


def spec(toolset: str, domain: str, name: str) -> ToolSpec:
    return ToolSpec.model_validate({
        "name": name, "description": f"{name.replace('_', ' ')} in {toolset}.", "toolset": toolset,
        "toolset_id": f"id_{toolset}", "domain": domain,
        "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": []}})


SPECS = ([spec("notes", "office", n) for n in ("create_note", "get_note", "delete_note")]
         + [spec("calendar", "office", n) for n in ("add_event", "list_events")]
         + [spec("flights", "travel", n) for n in ("search_flights", "book_flight", "cancel_flight")]
         + [spec("hotels", "travel", n) for n in ("find_hotel", "reserve_room")])
GROUPS = toolsets(SPECS)
DOMAIN = {s.id: s.domain for s in SPECS}


def test_single_is_one_toolset_with_the_unit_id_runs_before_strategies_used():
    plan = plan_agent(GROUPS, "id_notes", "single", 0, seed=1)
    assert plan and [t.name for t in plan.tools] == ["create_note", "get_note", "delete_note"]
    assert plan.distractor_ids == [] and plan.toolset_ids == ["id_notes"]
    assert plan.unit_id == content_hash(["id_notes", 0, [t.id for t in GROUPS["id_notes"]]])


def test_mixed_spans_two_domains_and_is_deterministic():
    plans = [plan_agent(GROUPS, "id_notes", "mixed", v, seed=100 + v) for v in range(6)]
    assert plans == [plan_agent(GROUPS, "id_notes", "mixed", v, seed=100 + v) for v in range(6)]
    for plan in plans:
        assert plan is not None and plan.distractor_ids == []
        assert {DOMAIN[t.id] for t in plan.tools} == {"office", "travel"}
        partner = plan.toolset_ids[1]
        assert partner in ("id_flights", "id_hotels")
        assert [t.id for t in plan.tools] == [t.id for t in GROUPS["id_notes"] + GROUPS[partner]]
    assert len({p.toolset_ids[1] for p in plans}) == 2, "different seeds pick different partners"


def test_distractors_add_one_or_two_recorded_decoys_of_another_domain():
    plans = [plan_agent(GROUPS, "id_flights", "distractors", v, seed=7 * v) for v in range(8)]
    assert plans == [plan_agent(GROUPS, "id_flights", "distractors", v, seed=7 * v) for v in range(8)]
    for plan in plans:
        assert plan is not None and plan.strategy == "distractors"
        own = {t.id for t in GROUPS["id_flights"]}
        decoys = set(plan.distractor_ids)
        assert 1 <= len(decoys) <= 2 and {t.id for t in plan.tools} == own | decoys
        assert {DOMAIN[i] for i in decoys} == {"office"}
        assert decoys <= {t.id for t in GROUPS[plan.toolset_ids[1]]}
    assert {len(p.distractor_ids) for p in plans} == {1, 2}


def test_strategies_needing_another_domain_have_none_when_there_is_one_domain():
    office = toolsets([s for s in SPECS if s.domain == "office"])
    assert plan_agent(office, "id_notes", "mixed", 0, seed=0) is None
    assert plan_agent(office, "id_notes", "distractors", 0, seed=0) is None
    assert plan_agent(office, "id_notes", "single", 0, seed=0) is not None


def test_jaccard():
    assert jaccard("Confirm before deleting notes", "confirm BEFORE deleting notes!") == 1.0
    assert jaccard("a b c d", "a b x y") == 2 / 6
    assert jaccard("", "") == 1.0


def run_cfg(tmp_path, fake: FakeOpenAI, **agents) -> RunConfig:
    return RunConfig.model_validate({"name": "agents", "runs_dir": str(tmp_path),
                                     "llm": {"base_url": fake.base_url, "model": "fake", "max_retries": 0},
                                     "agents": agents})


PERSONAS = [
    ("Desk", "Helps office staff keep their records straight.", "Confirm changes before saving",
     "Invent ids", "a detail is missing", "brief"),
    ("Pilot", "Guides travellers through plans and bookings with care.", "Read back every booking",
     "Guess dates or cities", "the request is ambiguous", "warm and patient"),
    ("Ledger", "Serves small teams who track shared items and schedules.", "Quote only tool results",
     "Act on another user's data", "anything cannot be undone", "formal, precise"),
]


def persona(variant: int | None = None) -> str:
    """The same persona for every request (None), or a different one per variant."""
    name, role, must, must_not, ask, style = PERSONAS[variant or 0]
    return json.dumps({"name": name, "role": role, "must": [must], "must_not": [must_not], "ask_user_when": ask,
                       "style": style})


def persona_handler(distinct: bool):
    def handler(body: dict) -> str | None:
        prompt = body["messages"][-1]["content"]
        if "persona of an AI assistant" not in prompt:
            return None
        variant = int(prompt.rsplit("Variant: ", 1)[1].split(".")[0]) - 1
        return persona(variant if distinct else None)
    return handler


async def test_every_strategy_makes_agents_with_a_policy_prompt(tmp_path):
    async with FakeOpenAI(handler=persona_handler(distinct=True)) as fake:
        cfg = run_cfg(tmp_path, fake, strategies=["single", "mixed", "distractors"])
        async with open_run(cfg, quiet=True) as ctx:
            ctx.store.append("tools", SPECS)
            await run_stages(ctx, ["agents"])
            agents = ctx.store.read("agents")
            sent = len(fake.requests)
            await run_stages(ctx, ["agents"])  # resume: nothing redone
            assert len(fake.requests) == sent and ctx.store.read("errors") == []
    assert len(agents) == 3 * 4
    by = {(a.strategy, a.toolset_id): a for a in agents}
    assert by[("single", "id_notes")].toolset_ids == [] and by[("single", "id_notes")].toolset == "notes"
    mixed = by[("mixed", "id_hotels")]
    assert {DOMAIN[i] for i in mixed.tool_ids} == {"office", "travel"} and len(mixed.toolset_ids) == 2
    assert mixed.domain == "travel" and " + " in mixed.toolset
    decoyed = by[("distractors", "id_calendar")]
    assert decoyed.distractor_tool_ids and set(decoyed.distractor_tool_ids) < set(decoyed.tool_ids)
    assert decoyed.toolset == "calendar"  # decoys are not part of the agent's own service
    prompt = decoyed.system_prompt
    assert "- Always: Confirm" in prompt and "- Never: Invent" in prompt and "- Ask the user when: a detail is missing" in prompt
    # The persona prompt for a distractor agent does not show the decoys.
    persona_prompts = [r["messages"][-1]["content"] for r in fake.requests]
    decoy_names = {s.name for s in SPECS if s.id in decoyed.distractor_tool_ids}
    calendar_prompts = [p for p in persona_prompts if "add_event" in p and "search_flights" not in p
                        and "find_hotel" not in p]
    assert calendar_prompts and not any(n in p for p in calendar_prompts for n in decoy_names)


async def test_near_duplicate_agents_are_dropped_with_a_rejected_record(tmp_path):
    async with FakeOpenAI(handler=persona_handler(distinct=False)) as fake:
        cfg = run_cfg(tmp_path, fake, per_toolset=3)
        async with open_run(cfg, quiet=True) as ctx:
            ctx.store.append("tools", SPECS)
            await run_stages(ctx, ["agents"])
            agents, errors = ctx.store.read("agents"), ctx.store.read("errors")
            sent = len(fake.requests)
            await run_stages(ctx, ["agents"])
            assert len(fake.requests) == sent, "a group with dropped variants is still done"
    assert len(agents) == 4 and len(errors) == 8  # per toolset: variant 1 kept, 2 and 3 dropped
    assert all(e.error_type == "Rejected" and e.stage == "agents" for e in errors)
    assert "near-duplicate agent 'Desk' (variant 2) of variant 1: token Jaccard 1.00" in errors[0].message


async def test_distinct_variants_are_all_kept(tmp_path):
    async with FakeOpenAI(handler=persona_handler(distinct=True)) as fake:
        async with open_run(run_cfg(tmp_path, fake, per_toolset=3), quiet=True) as ctx:
            ctx.store.append("tools", SPECS)
            await run_stages(ctx, ["agents"])
            assert len(ctx.store.read("agents")) == 12 and ctx.store.read("errors") == []


async def test_mixed_with_a_single_domain_is_rejected_with_its_reason(tmp_path):
    async with FakeOpenAI() as fake:
        async with open_run(run_cfg(tmp_path, fake, strategies=["mixed"]), quiet=True) as ctx:
            ctx.store.append("tools", [s for s in SPECS if s.toolset == "notes"])
            await run_stages(ctx, ["agents"])
            assert ctx.store.read("agents") == []
            (error,) = ctx.store.read("errors")
    assert error.error_type == "Rejected" and "no toolset of another domain" in error.message


def test_calling_a_decoy_fails_the_distractor_check():
    task = Task(agent_id="a", goal="g", persona="p", rubric=[Criterion(text="t")])

    def trajectory(name: str) -> Trajectory:
        call = {"id": "call_0", "type": "function", "function": {"name": name, "arguments": "{}"}}
        return Trajectory(task_id=task.id, agent_id="a", tools=[], messages=[
            {"role": "assistant", "content": "", "tool_calls": [call]}])

    decoys = frozenset({"add_event"})
    assert run_checks(Subject(trajectory("book_flight"), task, decoys), TASK) == {"distractor_tools_unused": True}
    assert run_checks(Subject(trajectory("add_event"), task, decoys), TASK) == {"distractor_tools_unused": False}
    assert run_checks(Subject(trajectory("add_event"), task), TASK) == {}


def test_plans_round_trip():
    plan = plan_agent(GROUPS, "id_notes", "distractors", 0, seed=3)
    assert AgentPlan.model_validate(plan.model_dump()) == plan
