"""The episode's message handling: the closing user turn is kept, a turn cut at max_tokens is asked
again and then marked (never kept silently), and the agent's reasoning (a reasoning parser's field
or inline `<think>` blocks) is kept on its messages but never shown to the user simulator or the judge."""

from __future__ import annotations

from judges.checks import Subject, run_checks
from judges.judge import judge_prompt
from synth.core.llm_config import DEFAULT_CALL_MAX_TOKENS
from synth.core.records import TRUNCATED
from synth.user_sim import STOP
from tests.fake_openai import FakeOpenAI
from tests.test_rollout import run

THOUGHT = "secret plan: call get_a first"


def is_user_sim(body: dict) -> bool:
    return STOP in str(body["messages"][0]["content"])


def polite_user(body: dict) -> str:
    return f"Thanks, that is all. {STOP}" if len(body["messages"]) > 2 else "Please look up a."


async def test_the_closing_user_turn_stays_and_a_cut_off_one_does_not(tmp_path):
    def handler(body):
        if is_user_sim(body):
            return polite_user(body)
        if body.get("response_format"):
            return None
        return "Here is a: 42."

    async with FakeOpenAI(handler=handler) as fake:
        _, _, [stopped] = await run(tmp_path, fake, name="stop")
    assert stopped.user_stopped and stopped.messages[-1] == {"role": "user", "content": "Thanks, that is all."}
    assert stopped.messages[-2]["role"] == "assistant"
    assert run_checks(Subject(stopped))["ends_with_assistant_reply"]

    def never_stops(body):
        return "And b too, please." if is_user_sim(body) else handler(body)

    async with FakeOpenAI(handler=never_stops) as fake:
        _, _, [cut] = await run(tmp_path, fake, name="cut", max_turns=2)
    assert not cut.user_stopped and cut.messages[-1]["role"] == "assistant"  # the unanswered request is not kept


async def test_a_truncated_agent_turn_is_asked_again_with_twice_the_room(tmp_path):
    def handler(body):
        if is_user_sim(body):
            return polite_user(body)
        if body.get("response_format"):
            return None
        if body["max_tokens"] == DEFAULT_CALL_MAX_TOKENS["agent"]:
            return {"content": "Here is a: 4", "finish_reason": "length"}
        return "Here is a: 42."

    async with FakeOpenAI(handler=handler) as fake:
        _, _, [trajectory] = await run(tmp_path, fake, name="retry")
        agent = [b for b in fake.requests if not is_user_sim(b) and not b.get("response_format")]
    assert [b["max_tokens"] for b in agent][:2] == [DEFAULT_CALL_MAX_TOKENS["agent"], 2 * DEFAULT_CALL_MAX_TOKENS["agent"]]
    replies = [m for m in trajectory.messages if m["role"] == "assistant"]
    assert replies and all(TRUNCATED not in m for m in replies) and replies[-1]["content"] == "Here is a: 42."


async def test_a_turn_truncated_twice_is_marked_and_dropped_by_its_check(tmp_path):
    def handler(body):
        if is_user_sim(body):
            return polite_user(body)
        if body.get("response_format"):
            return None
        return {"content": "Here is a: 4", "finish_reason": "length"}

    async with FakeOpenAI(handler=handler) as fake:
        _, _, [trajectory] = await run(tmp_path, fake, name="cut-twice")
    marked = [m for m in trajectory.messages if m.get(TRUNCATED)]
    assert marked and all(m["role"] == "assistant" for m in marked)
    assert run_checks(Subject(trajectory))["agent_turns_complete"] is False
    # The mark is the episode's own: it never reaches an endpoint.
    assert all(TRUNCATED not in m for b in fake.requests for m in b["messages"])


async def test_reasoning_is_kept_on_the_agents_messages_but_not_shown_to_the_user_or_the_judge(tmp_path):
    def handler(body):
        if is_user_sim(body):
            return polite_user(body)
        if body.get("response_format"):
            return None
        if body.get("tools") and body["messages"][-1]["role"] != "tool":
            call = {"id": "x", "type": "function", "function": {"name": "get_a", "arguments": {"key": "a"}}}
            return {"content": f"<think>{THOUGHT}</think>", "tool_calls": [call]}
        return {"content": "Here is a: 42.", "reasoning_content": f"server-parsed {THOUGHT}"}

    async with FakeOpenAI(handler=handler) as fake:
        ctx, _, [trajectory] = await run(tmp_path, fake, name="think")
        user_requests = [b for b in fake.requests if is_user_sim(b)]
    reasoning = [m["reasoning_content"] for m in trajectory.messages if m.get("reasoning_content")]
    assert reasoning == [THOUGHT, f"server-parsed {THOUGHT}"]
    assert all("<think>" not in str(m.get("content")) for m in trajectory.messages)
    assert user_requests and all(THOUGHT not in str(b["messages"]) for b in user_requests)
    [task] = ctx.store.read("tasks")
    prompt = judge_prompt("judge", task, trajectory, [0])
    assert THOUGHT not in prompt and "Here is a: 42." in prompt
