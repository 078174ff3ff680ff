"""The rubric step: items by difficulty, weights from the kind table, written from the tool schemas
and a reference solution (gold actions, else one the writer sketches first), validated with named
reasons, asked again once with its problems shown, and recorded as rejected when it still fails."""

from __future__ import annotations

import json

import pytest

from judges.judge import rubric_score
from judges.rubric_rules import rubric_problems
from synth.config import TasksConfig
from synth.core.llm import LLM, LLMConfig
from synth.core.records import Agent, Criterion, CriterionResult, GoldAction, StateAssertion, Task
from synth.stages.rubrics import write_rubric
from tests.fake_openai import FakeOpenAI
from tests.test_simulator import SPECS

AGENT = Agent(toolset_id="ts", toolset="travel", domain="travel", tool_ids=[s.id for s in SPECS], name="Trip",
              system_prompt="You manage hotel bookings. Never cancel without the user's confirmation.")
TASK = Task(agent_id=AGENT.id, goal="Cancel my booking B-1001.", persona="A hurried traveller.",
            user_facts=["The booking is B-1001."], difficulty="easy", rubric=[],
            initial_state={"bookings": {"B-1001": {"status": "confirmed"}, "B-1002": {"status": "confirmed"}}})
GOOD_ITEMS = [
    {"text": "The assistant cancels booking B-1001 with cancel_booking.", "kind": "essential"},
    {"text": "The assistant confirms with the user before cancelling the booking.", "kind": "important"},
    {"text": "The assistant tells the user that B-1001 is now cancelled.", "kind": "important"},
    {"text": "The assistant offers to help with a new booking afterwards.", "kind": "optional"},
    {"text": "The assistant cancels booking B-1002, which the user did not ask about.", "kind": "pitfall"},
]
JUNK = [{"text": "This task requires a lot of effort and time, but it can be very rewarding.", "kind": "essential"},
        {"text": "Same as the previous item, but faster.", "kind": "optional"}]


def items(*texts_kinds: tuple[str, str]) -> list[Criterion]:
    return [Criterion(text=t, kind=k) for t, k in texts_kinds]


def test_rules_name_each_problem():
    good = [Criterion(text=i["text"], kind=i["kind"]) for i in GOOD_ITEMS]
    assert rubric_problems(good, expected=5, anchors=["cancel_booking"]) == []
    assert rubric_problems(good[:4], expected=5) == ["rubric has 4 items, expected 5 for this difficulty",
                                                     "rubric has no pitfall item"]
    assert "rubric has no essential item" in rubric_problems(good[1:], expected=4)
    junk = [Criterion(text=i["text"], kind=i["kind"]) for i in JUNK]
    problems = rubric_problems(junk, expected=2, anchors=["cancel_booking", "bookings"])
    assert problems == [
        "rubric has no pitfall item",
        "item 1 is not checkable: it names no actor (the assistant, the user, a tool, the state) and no tool, "
        "record or value of the task: 'This task requires a lot of effort and time, but it can be very rewarding.'",
        "item 2 is not checkable: it names no actor (the assistant, the user, a tool, the state) and no tool, "
        "record or value of the task: 'Same as the previous item, but faster.'",
        "item 2 is not self-contained: it refers to another item: 'Same as the previous item, but faster.'"]
    twice = good + [Criterion(text="The assistant cancels booking B-1001 with cancel_booking!", kind="important")]
    assert rubric_problems(twice, expected=6) == ["items 1 and 6 say the same thing"]
    assert rubric_problems(items(("The assistant calls cancel_booking.", "essential"),
                                 ("Calls it.", "pitfall")), expected=2) == [
        "item 2 is not checkable: fewer than 4 words: 'Calls it.'"]


def test_weights_follow_the_kind_table_and_a_failed_essential_outweighs_optionals():
    weights = TasksConfig().rubric_weights.model_dump()
    assert weights == {"essential": 5, "important": 3, "optional": 1, "pitfall": 5}
    rubric = [Criterion(text=i["text"], kind=i["kind"], weight=weights[i["kind"]]) for i in GOOD_ITEMS]
    assert rubric_problems(rubric, expected=5, weights=weights) == []
    off = [*rubric[:-1], Criterion(text=GOOD_ITEMS[-1]["text"], kind="pitfall", weight=2)]
    assert rubric_problems(off, expected=5, weights=weights) == ["item 5 (pitfall) has weight 2, the kind table gives 5"]
    results = lambda passed: [CriterionResult(index=i, passed=p, reason="r") for i, p in enumerate(passed)]  # noqa: E731
    # essential failed, every other positive passed, no pitfall: (3 + 3 + 1) / 12
    assert rubric_score(rubric, results([False, True, True, True, False])) == pytest.approx(7 / 12)
    # everything passed but the pitfall happened: (12 - 5) / 12
    assert rubric_score(rubric, results([True, True, True, True, True])) == pytest.approx(7 / 12)


def writer(replies: list[dict]):
    answers = iter(replies)
    return lambda body: json.dumps(next(answers))


async def rubric_for(task: Task, replies: list[dict], **cfg) -> tuple[Task, list[dict]]:
    async with FakeOpenAI(handler=writer(replies)) as fake:
        async with LLM(LLMConfig(model="fake", max_retries=0), base_url=fake.base_url) as llm:
            made = await write_rubric(llm, TasksConfig.model_validate({"rubric_items": 5, **cfg}), AGENT, SPECS, task,
                                      seed=1)
        return made, fake.requests


async def test_a_task_without_gold_actions_gets_a_sketched_reference_and_weights_by_kind():
    sketch = ["Ask for the booking id", "cancel_booking(booking_id=B-1001)", "Tell the user it is cancelled"]
    custom = {"essential": 4, "important": 2, "optional": 0.5, "pitfall": 6}
    task, requests = await rubric_for(TASK, [{"approach": sketch, "rubric": GOOD_ITEMS}], rubric_weights=custom)
    assert task.reference == sketch and task.rubric_problems == []
    assert [(c.kind, c.weight) for c in task.rubric] == [("essential", 4), ("important", 2), ("important", 2),
                                                         ("optional", 0.5), ("pitfall", 6)]
    (request,) = requests
    schema = json.dumps(request["response_format"])
    assert '"approach"' in schema and '"minItems": 5' in schema and '"maxItems": 5' in schema
    prompt = request["messages"][0]["content"]
    assert "sketch one in `approach`" in prompt
    # The writer sees the tool schemas, the policy and the state, not just tool names.
    assert '"booking_id": {"type": "string"}' in prompt and "Never cancel without" in prompt and '"B-1002"' in prompt


async def test_a_gold_task_is_written_against_its_gold_actions_and_counts_follow_difficulty():
    gold = TASK.model_copy(update={"difficulty": "hard", "gold_actions": [
        GoldAction(tool="cancel_booking", arguments='{"booking_id": "B-1001"}')],
        "assertions": [StateAssertion(path="bookings.B-1001.status", op="equals", value='"cancelled"')]})
    extra = ["greets the user by name", "asks whether a refund is wanted", "states the cancellation fee, if any",
             "lists the user's remaining bookings", "keeps every reply under five sentences",
             "spells the booking id B-1001 exactly", "thanks the user at the end"]
    items12 = GOOD_ITEMS + [{"text": f"The assistant {e}.", "kind": "optional"} for e in extra]
    task, (request,) = await rubric_for(gold, [{"rubric": items12}],
                                        rubric_items={"easy": 7, "medium": 9, "hard": 12})
    assert len(task.rubric) == 12 and task.reference == []
    schema = json.dumps(request["response_format"])
    assert '"approach"' not in schema and '"minItems": 12' in schema
    prompt = request["messages"][0]["content"]
    assert '1. cancel_booking({"booking_id": "B-1001"})' in prompt and 'bookings.B-1001.status equals "cancelled"' in prompt


async def test_a_failing_rubric_is_asked_again_with_its_problems_then_rejected_with_them():
    repaired, requests = await rubric_for(TASK, [{"approach": ["x y z"], "rubric": JUNK + GOOD_ITEMS[:3]},
                                                 {"approach": ["x y z"], "rubric": GOOD_ITEMS}])
    assert repaired.rubric_problems == [] and len(requests) == 2
    assert "Your last rubric was rejected:\n- rubric has no pitfall item" in requests[1]["messages"][0]["content"]
    rejected, requests = await rubric_for(TASK, [{"approach": ["x y z"], "rubric": JUNK + GOOD_ITEMS[:3]}] * 2)
    assert len(requests) == 2 and rejected.rubric_problems[0] == "rubric has no pitfall item"
    assert any("is not self-contained" in p for p in rejected.rubric_problems)
    none, requests = await rubric_for(TASK, [{"approach": ["x y z"], "rubric": JUNK + GOOD_ITEMS[:3]}],
                                      rubric_repairs=0)
    assert len(requests) == 1 and none.rubric_problems


def test_rubric_items_config():
    assert TasksConfig().items_for("easy") == 7 and TasksConfig().items_for("hard") == 12
    assert TasksConfig(rubric_items=4).items_for("medium") == 4
    for bad in (1, {"easy": 7}):
        with pytest.raises(ValueError):
            TasksConfig(rubric_items=bad)


async def test_the_prompt_shows_examples_in_this_tasks_terms_and_rejects_items_copied_from_it():
    copied = {"text": "Without it the task is not done, at least one must pass.", "kind": "essential"}
    task, (request,) = await rubric_for(TASK, [{"approach": ["x y z"], "rubric": GOOD_ITEMS[:4] + [copied]}],
                                        rubric_repairs=0)
    prompt = request["messages"][0]["content"]
    first = SPECS[0]
    assert f'"The assistant calls {first.name} with the' in prompt  # the example names this task's own tool
    assert any(p.startswith("item 5 copies the instructions") for p in task.rubric_problems), task.rubric_problems
    # The task's own words may repeat the prompt's: the goal is exempt, so an item quoting it stands.
    from synth.stages.rubrics import prompt_runs, task_runs
    echo_goal = TASK.model_copy(update={"goal": "Without it the task is not done: cancel B-1001."})
    own = task_runs(echo_goal, SPECS, AGENT.system_prompt)
    quoted = [Criterion(text="The assistant does it: without it the task is not done.", kind="essential")]
    assert rubric_problems(quoted, expected=1, prompt_runs=prompt_runs(), exempt_runs=own) == ["rubric has no pitfall item"]
    assert any("copies the instructions" in p for p in rubric_problems(quoted, expected=1, prompt_runs=prompt_runs()))
