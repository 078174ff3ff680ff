"""The informed judge: what its prompt holds, criteria shuffled per sample and mapped back, and the keep
rules (every essential passes and no pitfall happened, then the threshold), with the judge on its own
model through the judge stage."""

from __future__ import annotations

import json

import pytest

from judges.config import JudgeConfig
from judges.filters import drop_reasons
from judges.judge import criteria_order, judge, judge_prompt, rubric_score
from judges.judge_context import state_changes
from synth.config import RunConfig, dump_config
from synth.context import Context
from synth.core.llm import LLM
from synth.core.records import Agent, Criterion, CriterionResult, Task, Trajectory
from synth.core.store import RunStore
from synth.core.usage import UsageMeter
from synth.run import run_stages
from tests.fake_openai import FakeOpenAI
from tests.judge_replies import shown_texts

BOOK = {"type": "function", "function": {
    "name": "book_room", "description": "Book a meeting room.",
    "parameters": {"type": "object", "properties": {"room": {"type": "string"}, "hours": {"type": "integer"},
                                                    "floor": {"enum": [1, 2]}}, "required": ["room"]}}}
RUBRIC = [Criterion(text=f"criterion {i}", kind=kind, weight=w) for i, (kind, w) in enumerate(
    [("essential", 5), ("important", 3), ("important", 3), ("optional", 1), ("important", 3), ("pitfall", 5)])]
TASK = Task(agent_id="a", goal="Book room Orion for 2 hours.", persona="Bo, an office manager.",
            user_facts=["Badge number: B-5521", "Team: platform"], rubric=RUBRIC,
            initial_state={"rooms": {"orion": {"booked": False}, "vega": {"booked": False}}})
MESSAGES = [
    {"role": "system", "content": "You are the office bot. POLICY-7: never book Vega on Fridays."},
    {"role": "user", "content": "Book Orion please."},
    {"role": "assistant", "content": "", "reasoning_content": "hidden chain of thought",
     "tool_calls": [{"id": "c", "type": "function", "function": {"name": "book_room", "arguments": '{"room": "orion"}'}}]},
    {"role": "tool", "tool_call_id": "c", "name": "book_room", "content": "booked"},
    {"role": "assistant", "content": "<think>more hidden thoughts</think>Orion is booked."},
    {"role": "user", "content": "Thanks!"},
]
TRAJECTORY = Trajectory(task_id=TASK.id, agent_id="a", messages=MESSAGES, tools=[BOOK], user_stopped=True,
                        final_state={"rooms": {"orion": {"booked": True, "by": "B-5521"}, "vega": {"booked": False}}})


def test_the_judge_prompt_holds_the_policy_the_facts_the_schemas_and_the_state():
    prompt = judge_prompt("judge", TASK, TRAJECTORY, list(range(len(RUBRIC))))
    assert "POLICY-7: never book Vega on Fridays." in prompt  # the agent's system prompt
    assert "Badge number: B-5521" in prompt and "Team: platform" in prompt  # the user's hidden facts
    assert "- book_room(room: string, hours?: integer, floor?: 1|2): Book a meeting room." in prompt
    assert "~ rooms.orion.booked: false -> true" in prompt and '+ rooms.orion.by = "B-5521"' in prompt
    assert "rooms.vega" not in prompt  # unchanged paths are not listed
    assert "[turn 2] USER (closing message): Thanks!" in prompt
    assert "hidden" not in prompt and "<think>" not in prompt  # reasoning is not the judge's to read
    assert "$" not in prompt


def test_state_changes_open_up_the_simulators_json_strings():
    assert state_changes({"k": '{"a": 1}'}, {"k": '{"a": 2, "b": "x"}', "new": "v"}) == [
        "~ k.a: 1 -> 2", '+ k.b = "x"', '+ new = "v"']
    assert state_changes({"gone": 1}, {}) == ["- gone (was 1)"]


class OrderAwareJudge:
    """Answers each criterion by its text (as a careful judge would), whatever order it is shown in."""

    def __init__(self, verdicts: dict[str, bool]):
        self.verdicts, self.orders = verdicts, []

    async def structured(self, messages, schema, **kw):
        texts = shown_texts(messages[0]["content"])
        self.orders.append(texts)
        return schema.model_validate({"results": [
            {"reason": f"about {t}", "passed": self.verdicts[t], "turn": 1} for t in texts]})


async def test_criteria_order_differs_across_samples_yet_results_map_back():
    verdicts = {c.text: i % 2 == 0 for i, c in enumerate(RUBRIC)}
    llm = OrderAwareJudge(verdicts)
    outcome = await judge(llm, JudgeConfig(samples=5), TASK, TRAJECTORY, seed=3)
    assert len({tuple(o) for o in llm.orders}) > 1  # the samples saw different orders
    assert all(sorted(o) == sorted(verdicts) for o in llm.orders)
    for sample in outcome.samples:  # every sample mapped back to the rubric's indexes
        assert [r.index for r in sample] == list(range(len(RUBRIC)))
        assert [r.passed for r in sample] == [verdicts[c.text] for c in RUBRIC]
        assert [r.reason for r in sample] == [f"about {c.text}" for c in RUBRIC]
    assert [r.passed for r in outcome.results] == [verdicts[c.text] for c in RUBRIC]
    orders = {tuple(criteria_order(len(RUBRIC), seed)) for seed in range(20)}
    assert len(orders) > 10 and criteria_order(6, 3) == criteria_order(6, 3)  # seeded: a rerun repeats it


def results(**passed: bool) -> list[CriterionResult]:
    return [CriterionResult(index=i, passed=passed.get(f"c{i}", c.kind != "pitfall"), reason="r")
            for i, c in enumerate(RUBRIC)]


def test_an_essential_failure_drops_even_above_the_threshold():
    res = results(c0=False)
    score = rubric_score(RUBRIC, res)
    assert score == pytest.approx(10 / 15) and score >= JudgeConfig().keep_threshold
    assert drop_reasons(JudgeConfig(), TASK, TRAJECTORY, res, {}, score) == ["essential criterion failed: criterion 0"]


def test_a_pitfall_that_happened_drops_even_above_the_threshold():
    res = results(c5=True)
    score = rubric_score(RUBRIC, res)
    assert score == pytest.approx(10 / 15) and score >= JudgeConfig().keep_threshold
    assert drop_reasons(JudgeConfig(), TASK, TRAJECTORY, res, {}, score) == ["pitfall happened: criterion 5"]


def test_then_the_threshold():
    res = results(c1=False, c2=False, c4=False)
    score = rubric_score(RUBRIC, res)
    assert score == pytest.approx(6 / 15)
    assert drop_reasons(JudgeConfig(), TASK, TRAJECTORY, res, {}, score) == ["score 0.40 below threshold 0.50"]
    assert drop_reasons(JudgeConfig(), TASK, TRAJECTORY, results(), {}, 1.0) == []


async def test_the_judge_stage_asks_the_judge_roles_model(tmp_path):
    def handler(body):
        prompt = body["messages"][0]["content"]
        return json.dumps({"results": [{"reason": "ok", "passed": "5" not in t, "turn": 1} for t in shown_texts(prompt)]})

    async with FakeOpenAI(handler=handler) as fake:
        cfg = RunConfig(runs_dir=str(tmp_path), name="roles", llm={
            "base_url": fake.base_url, "model": "agent-model", "max_retries": 0,
            "roles": {"judge": {"model": "judge-model", "temperature": 0.0}}})
        store = RunStore(cfg.run_dir)
        store.open(dump_config(cfg), cfg.content_hash())
        agent = Agent(toolset_id="ts", toolset="rooms", domain="office", tool_ids=[], name="a", system_prompt="s")
        task = TASK.model_copy(update={"agent_id": agent.id, "id": ""})
        task = Task.model_validate(task.model_dump(exclude={"id"}))
        store.append("agents", [agent])
        store.append("tasks", [task])
        store.append("trajectories", [TRAJECTORY.model_copy(update={"task_id": task.id, "agent_id": agent.id})])
        async with LLM(cfg.llm, base_url=fake.base_url) as llm:
            ctx = Context(cfg=cfg, store=store, llm=llm, meter=UsageMeter(), quiet=True)
            await run_stages(ctx, ["judge"])
        store.close()
    [request] = fake.requests
    assert request["model"] == "judge-model" and request["max_tokens"] == cfg.llm.tokens_for("judge")
    [verdict] = store.read("verdicts")
    assert verdict.keep, verdict.reasons
