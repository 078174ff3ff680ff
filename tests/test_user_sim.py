"""The user simulator against a scripted fake endpoint: what it sees, what it says, what it flags."""

from __future__ import annotations

import pytest

from synth.core.llm import LLM, LLMConfig
from synth.core.records import Criterion, Task, ToolCallTrace, ToolSpec, Trajectory
from synth.user_sim import (BROKE_ROLE, EMPTY_MESSAGE, FACT_LEAKED, PREMATURE_STOP, ROLE_RETRIED, STOP, UserSimulator, asked_about, fact_value,
                            is_write_tool, leaked_facts, needs_tools, premature_stop, user_flag_counts)
from tests.fake_openai import FakeOpenAI

TASK = Task(agent_id="a", goal="Cancel my last order.", persona="A busy nurse.",
            user_facts=["Order number: A-1234", "Email: ann@example.com"],
            rubric=[Criterion(text="The assistant cancels the order with cancel_order.")])
SCHEMA = {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}


def spec(name: str, **extra) -> ToolSpec:
    return ToolSpec(name=name, description=f"{name} tool", inputSchema=SCHEMA, **extra)


def honest_user(body: dict) -> str | None:
    """Plays the user: the agent's last message is the `user` role in the simulator's view."""
    agent = body["messages"][-1]["content"].lower()
    if "?" in agent and "order" in agent:
        return "It's A-1234."
    if "?" in agent and "email" in agent:
        return "ann@example.com"
    if "cancelled" in agent:
        return f"Great, thanks! {STOP}"
    return "I need to cancel my last order."


@pytest.fixture
async def llm_for():
    made: list[tuple[FakeOpenAI, LLM]] = []

    async def start(handler) -> tuple[FakeOpenAI, LLM]:
        fake = FakeOpenAI(handler=handler)
        await fake.start()
        llm = LLM(LLMConfig(model="fake", max_retries=0), base_url=fake.base_url)
        made.append((fake, llm))
        return fake, llm

    yield start
    for fake, llm in made:
        await llm.aclose()
        await fake.stop()


def convo(*pairs: tuple[str, str]) -> list[dict]:
    return [{"role": role, "content": text} for role, text in pairs]


async def test_view_swaps_roles_and_hides_tool_traffic(llm_for):
    _, llm = await llm_for(honest_user)
    user = UserSimulator(llm, TASK, seed=1)
    conversation = [
        {"role": "user", "content": "Cancel my order please."},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_0", "type": "function",
                                                             "function": {"name": "find", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_0", "name": "find", "content": "{\"secret\": \"tool-only\"}"},
        {"role": "assistant", "content": "What is your order number?"},
    ]
    view = user.view(conversation)
    assert [m["role"] for m in view] == ["system", "assistant", "user"]
    assert [m["content"] for m in view[1:]] == ["Cancel my order please.", "What is your order number?"]
    assert "tool-only" not in str(view) and "tool_calls" not in str(view)
    system = view[0]["content"]
    assert "Order number: A-1234" in system and STOP in system and "only when the assistant asks" in system
    # Before the agent spoke, a cue (not a greeting it could echo) asks for the opening, restating the goal.
    opening = user.view([])
    assert [m["role"] for m in opening] == ["system", "user"]
    assert TASK.goal in opening[1]["content"] and "how can i help" not in opening[1]["content"].lower()


async def test_facts_come_out_only_when_asked(llm_for):
    fake, llm = await llm_for(honest_user)
    user = UserSimulator(llm, TASK, seed=1)
    opening = await user.opening()
    assert "A-1234" not in opening and "ann@" not in opening
    history = convo(("user", opening), ("assistant", "Sure. What is your order number?"))
    text, stopped = await user.reply(history)
    assert text == "It's A-1234." and not stopped
    history += convo(("user", text), ("assistant", "Done: order A-1234 is cancelled."))
    text, stopped = await user.reply(history)
    assert stopped and STOP not in text and text == "Great, thanks!"
    assert user.flags == []
    assert user.usage["user_calls"] == 3 == len(fake.requests)
    assert user.usage["prompt_tokens"] > 0 and user.usage["completion_tokens"] > 0


async def test_a_fact_given_unasked_is_flagged(llm_for):
    _, llm = await llm_for(lambda body: "Cancel order A-1234 please, my email is ann@example.com.")
    user = UserSimulator(llm, TASK, seed=1)
    await user.opening()
    assert user.flags == [FACT_LEAKED]


@pytest.mark.parametrize("agent, leaked", [
    ("What is your order number?", []),                          # asked: '?' and a shared word ("order")
    ("Could you tell me more?", ["Order number: A-1234"]),       # a question, but not about the fact
    ("I will look up your order number now.", ["Order number: A-1234"]),  # about it, but no question
])
def test_leak_rule(agent, leaked):
    assert leaked_facts(TASK.user_facts, agent, "Sure, it is A-1234.") == leaked


def test_leak_rule_ignores_values_already_known():
    said_before = "My order is A-1234."
    assert leaked_facts(TASK.user_facts, "Anything else?", "Again: A-1234", known=said_before) == []
    assert leaked_facts(["Order number: 7"], "ok", "7 days")  == []  # too short to tell apart from chatter


def test_fact_value_and_asked_about():
    assert fact_value("Order number: A-1234.") == "A-1234"
    assert fact_value("My name is Ann Lee") == "Ann Lee"
    assert fact_value("Prefers window seats") == "Prefers window seats"
    assert asked_about("Which orders do you mean?", "Order number: A-1234")  # plural folds to singular
    assert not asked_about("Which flight do you mean?", "Order number: A-1234")


async def test_a_role_break_is_asked_again_once_with_the_phrase_named(llm_for):
    def echoing_then_honest(body: dict) -> str:
        system = body["messages"][0]["content"]
        return "I need to cancel my last order." if "Your last draft" in system else "Hello! How can I assist you today?"

    fake, llm = await llm_for(echoing_then_honest)
    user = UserSimulator(llm, TASK, seed=1)
    assert await user.opening() == "I need to cancel my last order."
    assert user.flags == [ROLE_RETRIED]  # recorded, but the retry stayed in role: nothing to drop
    assert len(fake.requests) == 2 == user.usage["user_calls"]
    retry = fake.requests[1]["messages"][0]["content"]
    assert "How can I assist you today?" in retry and retry.startswith(user.system)
    assert fake.requests[0]["seed"] != fake.requests[1]["seed"]


async def test_a_role_break_that_survives_the_retry_keeps_its_flag(llm_for):
    fake, llm = await llm_for(lambda body: "I'm here to help! What can I do for you?")
    user = UserSimulator(llm, TASK, seed=1)
    await user.opening()
    assert user.flags == [ROLE_RETRIED, BROKE_ROLE] and len(fake.requests) == 2


async def test_an_empty_message_is_flagged(llm_for):
    _, llm = await llm_for(lambda body: "")
    user = UserSimulator(llm, TASK, seed=1)
    assert await user.opening() == TASK.goal  # the goal stands in for a silent opening
    assert user.flags == [EMPTY_MESSAGE]


def trace(is_error: bool) -> ToolCallTrace:
    return ToolCallTrace(call_id="call_0", name="cancel_order", arguments="{}", result="r", is_error=is_error)


def test_premature_stop_rule():
    specs = [spec("get_order"), spec("cancel_order")]
    assert premature_stop(TASK, specs, [], stopped=True)
    assert premature_stop(TASK, specs, [trace(is_error=True)], stopped=True)  # only failed calls
    assert not premature_stop(TASK, specs, [trace(is_error=False)], stopped=True)
    assert not premature_stop(TASK, specs, [], stopped=False)  # cut off by max_turns is not the user's doing
    chat_only = Task(agent_id="a", goal="Say hi.", persona="p", rubric=[Criterion(text="The assistant greets.")])
    assert not premature_stop(chat_only, [spec("get_order")], [], stopped=True)  # read-only tools, not in rubric


def test_write_tools_and_needs_tools():
    assert is_write_tool(spec("cancel_order")) and is_write_tool(spec("createBooking"))
    assert not is_write_tool(spec("get_order"))
    assert is_write_tool(spec("get_order", annotations={"readOnlyHint": False}))  # the annotation wins
    assert not is_write_tool(spec("update_cache", annotations={"readOnlyHint": True}))
    lookup = Task(agent_id="a", goal="g", persona="p", rubric=[Criterion(text="Calls get_order once.")])
    assert needs_tools(lookup, [spec("get_order")])


def test_flag_counts_for_the_manifest():
    def traj(flags):
        return Trajectory(task_id="t", agent_id="a", messages=[], tools=[], user_flags=flags)

    counts = user_flag_counts([traj([FACT_LEAKED]), traj([FACT_LEAKED, PREMATURE_STOP]), traj([])])
    assert counts == {"trajectories": 3, FACT_LEAKED: 2, PREMATURE_STOP: 1, EMPTY_MESSAGE: 0}


@pytest.mark.parametrize("persona, is_assistant", [
    ("A Booking Assistant who can create bookings for dates", True),  # what Qwen2.5-Coder-0.5B wrote
    ("An AI assistant for hotels", True),
    ("A chatbot that answers questions", True),
    ("A student studying astronomy", False),
    ("A teaching assistant at a university", False),  # a person whose job is called assistant
    ("A real estate agent looking for listings", False),
    ("An AI researcher at a lab", False),
])
def test_a_persona_must_be_a_user_not_the_assistant(persona, is_assistant):
    from judges.user_checks import persona_problems
    assert bool(persona_problems(persona)) == is_assistant
