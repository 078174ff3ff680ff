"""The deterministic junk detectors, each with what it must catch and what it must let pass, and the
keep rules that turn them into named drop reasons."""

from __future__ import annotations

import pytest

from judges.checks import (CHECKS, USER, USER_FLAG_OF, Subject, ends_with_reply, run_checks, text_calls,
                           truncated_turns, ungrounded_call_ids)
from judges.config import JudgeConfig
from judges.filters import drop_reasons
from judges.rubric_fit import grading_problems
from judges.text_checks import calls_in_text, echoed, prompt_echoes, simulator_prompt_shingles, template_shingles
from judges.user_checks import (invented_fact_turns, invented_values, leaked_fact_turns, role_breaks, stated_values,
                                stopped_early)
from synth.core.records import TRUNCATED, Criterion, CriterionResult, Task, ToolCallTrace, Trajectory

ORDER = {"type": "function", "function": {
    "name": "get_order", "description": "Look up an order by its id.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}
CANCEL = {"type": "function", "function": {
    "name": "cancel_order", "description": "Cancel an order.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}
TASK = Task(agent_id="a", goal="Cancel my last order.", persona="Ann, a nurse in Leeds.",
            user_facts=["Order number: A-1234", "Email: ann@example.com"],
            rubric=[Criterion(text="The order is cancelled.", kind="essential"),
                    Criterion(text="Cancels another order.", kind="pitfall")])


def call(name="cancel_order", arguments='{"order_id": "A-1234"}', call_id="call_0"):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def good_messages():
    return [
        {"role": "system", "content": "You are a shop assistant."},
        {"role": "user", "content": "I need to cancel my last order."},
        {"role": "assistant", "content": "Sure. What is the order number?"},
        {"role": "user", "content": "It's A-1234."},
        {"role": "assistant", "content": "", "tool_calls": [call()]},
        {"role": "tool", "tool_call_id": "call_0", "name": "cancel_order", "content": '{"status": "cancelled"}'},
        {"role": "assistant", "content": "Order A-1234 is cancelled."},
        {"role": "user", "content": "Thanks!"},
    ]


def trajectory(messages=None, **kw) -> Trajectory:
    kw.setdefault("user_stopped", True)
    return Trajectory(task_id=TASK.id, agent_id="a", messages=good_messages() if messages is None else messages,
                      tools=[ORDER, CANCEL], **kw)


def failed(traj: Trajectory, task: Task = TASK) -> set[str]:
    return {name for name, ok in run_checks(Subject(traj, task)).items() if not ok}


def test_a_clean_conversation_with_its_closing_turn_passes_every_check():
    assert failed(trajectory()) == set()
    assert ends_with_reply(good_messages(), user_stopped=True)
    # Only a user who ended the conversation may have the last word: else the agent never answered it.
    assert not ends_with_reply(good_messages(), user_stopped=False)
    assert "ends_with_assistant_reply" in failed(trajectory(user_stopped=False))


# -- role ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "I'm a chatbot, and I can only assist with text-based interactions.",
    "Hello! How can I assist you today?",
    "As an AI, I don't have an order.",
    "As an AI language model I cannot do that",
    "I am just an AI assistant.",
    "Is there anything else I can help you with?",
    "I'm here to help you with your business.",
    "What can I do for you today?",
    "I'd be happy to help you with that.",
    "I don't have personal experiences, but here is my order.",
    # seen in the quickstart's kept rows (SmolLM2-135M as the user)
    "I'm glad you're here. What can I help with today?",
    "I'll do my best to assist you, and I'll be happy to provide any assistance you need.",
    "If there are issues in your life that need attention, do not hesitate to ask for guidance.",
    "I'm here to help with whatever you're looking for. What brings you here today?",
    "I'd love to help out. What's the project about?",
    "I'd love to help, and I'd love to help. What's on your mind?",
    "Hello. How can I help today?",
    "I'm sorry, but as a chatbot, I don't have the ability to access personal data.",
    "I can help you with your order, but to get started, please find the details.",
    "I'm sorry, but I'm unable to assist you with your order.",
    # Qwen2.5-Coder-1.5B as the user, opening the quickstart's astronomy task
    "I can help you create a new star in the universe with a name, type, and radius.",
    "To get started, I need to know what specific star you are interested in learning about.",
    # SmolLM2-135M opening after the goal cue
    "Hello! I'm your AI chatbot assistant. I've been working on a new project.",
    "I'm so excited to help you create a new environmental site!",
    "Hello, I'm thrilled to assist you with your project.",
])
def test_role_break_is_found(text):
    assert role_breaks(text)


@pytest.mark.parametrize("text", [
    "Can you help me cancel my order?",
    "As an AI researcher, I need my order cancelled.",
    "I'm an assistant manager at a bakery.",
    "I am an assistant to the director.",
    "How can I help you find it? It's A-1234.",  # the user helping the agent find it
    "Thanks, that is all I needed.",
    "I need an AI-generated summary of my bookings.",
    "I would love your help with my order, please.",
    "Please feel free to call me back on that number.",
    "I'm glad it worked, thank you!",
    "I'm unable to log in, can you help me?",
    "I don't have access to my email right now.",
    "Maybe you can help me create a booking?",
    "I know which star I'm interested in: Vega.",
    "I'm so excited to finally book this trip!",
    "I'm the assistant manager of a bakery and need an order cancelled.",
])
def test_role_break_lets_a_user_be_a_user(text):
    assert role_breaks(text) == []


def test_role_break_fails_its_check_and_drops():
    messages = good_messages()
    messages[3]["content"] = "It's A-1234. How can I assist you today?"
    traj = trajectory(messages)
    assert "user_stays_in_role" in failed(traj)
    checks = run_checks(Subject(traj, TASK))
    assert "check failed: user_stays_in_role" in drop_reasons(JudgeConfig(), TASK, traj, [], checks, 1.0)


# -- invented facts ------------------------------------------------------------------------------

def test_stated_values_are_ids_emails_and_long_numbers():
    assert stated_values("My order A-1234 for $1,200.50, mail ann@example.com, 2 bags, room 12") == [
        "ann@example.com", "a-1234", "1200.50"]
    assert stated_values("On 2024-05-12 at gate B7") == ["2024-05-12"]  # B7: too short to name anything
    assert stated_values("Nothing with numbers here, just 3 words.") == []


def test_a_value_in_no_fact_goal_or_agent_message_is_invented():
    known = "\n".join([*TASK.user_facts, TASK.goal, TASK.persona, "Your refund id is RF-77."])
    assert invented_values("It's A-1234, email ann@example.com", known) == []
    assert invented_values("Use refund RF-77.", known) == []  # the agent said it first
    assert invented_values("My order is B-9999 and my phone 555-0100.", known) == ["b-9999", "555-0100"]
    assert invented_values("The amount was 1,500", "Budget: $1500") == []  # thousands separators are not a difference


def test_invented_fact_check_reads_what_was_said_before_each_user_turn():
    messages = good_messages()
    messages[3]["content"] = "It's A-1234, and also cancel B-9999."
    assert invented_fact_turns(messages, TASK) == [(3, ["b-9999"])]
    assert "user_states_only_known_facts" in failed(trajectory(messages))
    assert invented_fact_turns(good_messages(), TASK) == []


# -- leaked facts ----------------------------------------------------------------------------------

def test_a_fact_given_before_it_was_asked_for_is_leaked():
    messages = good_messages()
    messages[1]["content"] = "Cancel my last order, it is A-1234."
    assert leaked_fact_turns(messages, TASK) == [(1, ["Order number: A-1234"])]
    assert "user_gives_facts_only_when_asked" in failed(trajectory(messages))
    assert leaked_fact_turns(good_messages(), TASK) == []  # asked "What is the order number?" first


# -- stopping early, empty messages ------------------------------------------------------------

def test_stopping_before_any_tool_call_succeeded_on_a_write_task():
    messages = good_messages()[:4] + [{"role": "assistant", "content": "Let me see."}, {"role": "user", "content": "Bye."}]
    stopped = trajectory(messages)
    assert stopped_early(stopped, TASK)
    assert "user_does_not_stop_early" in failed(stopped)
    assert not stopped_early(trajectory(), TASK)
    assert not stopped_early(trajectory(messages, user_stopped=False), TASK)  # cut off, not stopped by the user


def test_empty_user_message_fails():
    messages = good_messages()
    messages[3]["content"] = "  "
    assert "user_messages_not_empty" in failed(trajectory(messages))


def test_user_flags_left_out_of_drop_user_flags_are_recorded_but_do_not_drop():
    messages = good_messages()
    messages[1]["content"] = "Cancel my last order, it is A-1234."
    traj = trajectory(messages)
    checks = run_checks(Subject(traj, TASK))
    assert checks["user_gives_facts_only_when_asked"] is False
    judged = [CriterionResult(index=0, passed=True, reason="r"), CriterionResult(index=1, passed=False, reason="r")]
    assert drop_reasons(JudgeConfig(), TASK, traj, judged, checks, 1.0) == [
        "check failed: user_gives_facts_only_when_asked"]
    lenient = JudgeConfig(drop_user_flags=["user_broke_role"])
    assert drop_reasons(lenient, TASK, traj, judged, checks, 1.0) == []
    assert set(USER_FLAG_OF) == set(USER) and set(USER_FLAG_OF.values()) == set(JudgeConfig().drop_user_flags)


def test_drop_user_flags_rejects_an_unknown_flag():
    with pytest.raises(ValueError, match="drop_user_flags"):
        JudgeConfig(drop_user_flags=["user_was_rude"])


# -- a tool call written as text -------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    'functions.cancel_order:\n{ "order_id": "A-1234" }',
    '<tool_call>{"name": "cancel_order", "arguments": {"order_id": "A-1234"}}</tool_call>',
    '{"name": "cancel_order", "arguments": {"order_id": "A-1234"}}',
    '{"arguments": {"order_id": "A-1234"}, "name": "cancel_order"}',
    'I will run cancel_order({"order_id": "A-1234"}) now.',
    'cancel_order: {"order_id": "A-1234"}',
])
def test_a_call_written_as_text_is_found(text):
    assert calls_in_text(text, ["get_order", "cancel_order"])


@pytest.mark.parametrize("text", [
    "I cancelled order A-1234 with cancel_order.",
    'The result was {"status": "cancelled"}.',
    "Your functions are fine: nothing to do.",
    "Use the name field and the arguments list in the form.",
])
def test_plain_text_about_tools_is_not_a_call(text):
    assert calls_in_text(text, ["get_order", "cancel_order"]) == []


def test_call_as_text_fails_its_check():
    messages = good_messages()
    messages[6]["content"] = 'functions.cancel_order:\n{"order_id": "A-1234"}'
    assert text_calls(trajectory(messages)) and "no_tool_calls_in_text" in failed(trajectory(messages))


# -- a tool result that repeats the simulator's prompt ------------------------------------------

def test_the_simulator_prompt_is_read_from_its_template():
    grams = simulator_prompt_shingles()
    assert grams and all(4 <= len(g) <= 6 for g in grams)
    assert ("answer", "the", "call", "as", "that", "service") in grams  # literal template words
    assert ("call", "name", "arguments") not in grams  # placeholders split the literal text


def test_a_short_literal_piece_between_placeholders_counts_whole():
    grams = template_shingles(["TOOL $name\nThe tool was called with: $arguments\nSTATE $state"])
    assert ("the", "tool", "was", "called", "with") in grams and ("tool",) not in grams


def test_a_result_in_the_simulators_words_is_an_echo():
    echo = "You are the backend of the tool described below. Answer the call as that service would."
    assert echoed(echo, simulator_prompt_shingles())
    messages = good_messages()
    messages[5]["content"] = echo
    assert prompt_echoes(messages, [ORDER, CANCEL]) and "tool_results_not_prompt_echo" in failed(trajectory(messages))


def test_a_result_that_repeats_a_short_piece_of_the_prompt_is_an_echo():
    # seen in the quickstart (SmolLM2-135M as the tool simulator, on the prompt of that time)
    text = "The tool was called with a function that returns an empty list."
    prompt = template_shingles(["The tool was called with: $arguments"])
    assert echoed(text, prompt) == ["the tool was called with"]


def test_an_ordinary_result_is_no_echo():
    for text in ('{"status": "cancelled", "order_id": "A-1234", "refund": 12.5}',
                 "Order A-1234 was cancelled; the refund of 12.50 EUR goes back to the card in 3 days.",
                 "Error: order A-9 not found",
                 "The tool was called.", "Called with care: the tool works with the state."):
        assert echoed(text, simulator_prompt_shingles()) == []


def test_words_the_tools_own_description_holds_do_not_count():
    tool = {"type": "function", "function": {"name": "t", "parameters": {},
            "description": "Returns what it found as JSON text with values from the state of the shop."}}
    messages = [{"role": "tool", "tool_call_id": "c", "content": "Found: as JSON text with values from the state."}]
    assert prompt_echoes(messages, []) and prompt_echoes(messages, [tool]) == []


# -- a turn cut at max_tokens ----------------------------------------------------------------------

def test_a_truncated_turn_fails_agent_turns_complete():
    messages = good_messages()
    messages[6][TRUNCATED] = True
    assert truncated_turns(messages) == [6] and "agent_turns_complete" in failed(trajectory(messages))


# -- ids passed to tools that nobody gave ------------------------------------------------------

def test_an_id_argument_nobody_gave_is_ungrounded():
    messages = good_messages()
    messages[4]["tool_calls"] = [call(arguments='{"order_id": "A-9876"}')]
    assert ungrounded_call_ids(trajectory(messages)) == ["A-9876"]
    assert "call_ids_grounded" in failed(trajectory(messages))
    assert ungrounded_call_ids(trajectory()) == []  # the user said A-1234


def test_ids_from_earlier_results_dates_and_creators_arguments_are_fine():
    messages = good_messages()
    messages[4]["tool_calls"] = [call("get_order", '{"order_id": "A-1234"}', "call_0")]
    messages[5] = {"role": "tool", "tool_call_id": "call_0", "name": "get_order", "content": '{"line": "LN-55"}'}
    messages.insert(6, {"role": "assistant", "content": "", "tool_calls": [
        call("cancel_order", '{"order_id": "LN-55", "date": "2024-05-12", "qty": "120"}', "call_1")]})
    messages.insert(7, {"role": "tool", "tool_call_id": "call_1", "name": "cancel_order", "content": "ok"})
    assert ungrounded_call_ids(trajectory(messages)) == []
    creator = [*good_messages()[:4], {"role": "assistant", "content": "", "tool_calls": [
        call("create_note", '{"note_id": "N-77"}')]}]
    assert ungrounded_call_ids(trajectory(creator)) == []


# -- rubric validation ---------------------------------------------------------------------------

def test_a_rubric_without_an_essential_criterion_is_invalid():
    assert grading_problems(TASK) == []
    thin = Task(agent_id="a", goal="g", persona="p", rubric=[Criterion(text="This task requires a lot of effort.")])
    assert grading_problems(thin) == ["no essential criterion"]
    twice = Task(agent_id="a", goal="g", persona="p", rubric=[Criterion(text="Done.", kind="essential"),
                                                              Criterion(text="done. ", kind="important")])
    assert grading_problems(twice) == ["a repeated criterion"]
    assert "rubric_valid" in failed(trajectory(), thin)


def test_every_new_check_is_a_check_of_the_judge_stage():
    for name in ("no_tool_calls_in_text", "tool_results_not_prompt_echo", "agent_turns_complete", "call_ids_grounded",
                 *USER, "rubric_valid"):
        assert name in CHECKS


def test_the_traces_decide_which_calls_succeeded():
    messages = good_messages()[:4] + [{"role": "assistant", "content": "", "tool_calls": [call()]},
                                      {"role": "tool", "tool_call_id": "call_0", "content": "Error: down"},
                                      {"role": "assistant", "content": "Sorry."}, {"role": "user", "content": "Bye"}]
    traces = [ToolCallTrace(call_id="call_0", name="cancel_order", arguments="{}", result="Error: down", is_error=True)]
    assert stopped_early(trajectory(messages, tool_calls=traces), TASK)
