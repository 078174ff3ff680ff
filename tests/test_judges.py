"""Judges without an LLM: rubric score arithmetic, structural state checks, drop reasons, and the judge prompt."""

import copy
import json

import pytest
from pydantic import ValidationError

from judges.checks import (STRUCTURAL, Subject, calls_answered, ends_with_reply, invalid_arguments, run_checks,
                           unknown_tools)
from judges.config import JudgeConfig
from judges.filters import drop_reasons
from judges.judge import criteria_order, judge_prompt, judge_trajectory, judgment_model, rubric_score, transcript
from synth.core.records import Criterion, CriterionResult, Task, Trajectory
from tests.judge_replies import shown_order

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}
CHECKS = {"tool_calls_name_offered_tools", "tool_arguments_valid", "tool_calls_answered", "ends_with_assistant_reply",
          "claims_backed_by_tool_calls", "stated_ids_grounded"}


def call(call_id="c1", name="get_weather", arguments='{"city": "Paris"}'):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def clean_messages():
    return [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call()]},
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny in Paris."},
    ]


def trajectory(messages=None, **kw) -> Trajectory:
    return Trajectory(task_id="t1", agent_id="a1", messages=clean_messages() if messages is None else messages,
                      tools=[WEATHER], **kw)


def failed(traj: Trajectory) -> set[str]:
    checks = run_checks(Subject(traj), STRUCTURAL)
    assert set(checks) == CHECKS
    return {name for name, ok in checks.items() if not ok}


def crit(kind="important", weight=1.0, text=None) -> Criterion:
    return Criterion(text=text or f"{kind} {weight}", weight=weight, kind=kind)


def results(*passed: bool) -> list[CriterionResult]:
    return [CriterionResult(index=i, passed=p, reason="r") for i, p in enumerate(passed)]


# -- rubric_score ----------------------------------------------------------------------------

def test_score_is_weighted_and_normalized():
    rubric = [crit("essential", 2), crit("important", 1), crit("optional", 1)]
    assert rubric_score(rubric, results(True, False, True)) == pytest.approx(0.75)
    assert rubric_score(rubric, results(False, True, True)) == pytest.approx(0.5)
    assert rubric_score(rubric, results(True, True, True)) == pytest.approx(1.0)
    assert rubric_score(rubric, results(False, False, False)) == 0.0


def test_pitfall_subtracts_only_when_it_happened():
    rubric = [crit(weight=1), crit(weight=1), crit("pitfall", 1)]
    assert rubric_score(rubric, results(True, True, False)) == pytest.approx(1.0)
    assert rubric_score(rubric, results(True, True, True)) == pytest.approx(0.5)
    assert rubric_score(rubric, results(True, False, True)) == pytest.approx(0.0)


def test_score_is_clamped_to_unit_interval():
    rubric = [crit(weight=1), crit("pitfall", 5)]
    assert rubric_score(rubric, results(True, True)) == 0.0
    assert rubric_score(rubric, results(False, True)) == 0.0
    assert rubric_score([crit(weight=3)], results(True)) == 1.0


def test_all_pitfall_rubric_scores_zero():
    rubric = [crit("pitfall"), crit("pitfall")]
    assert rubric_score(rubric, results(False, False)) == 0.0
    assert rubric_score(rubric, results(True, True)) == 0.0


def test_score_matches_results_by_index_and_missing_counts_as_failed():
    rubric = [crit(weight=1), crit(weight=3)]
    shuffled = [CriterionResult(index=1, passed=True, reason="r"), CriterionResult(index=0, passed=False, reason="r")]
    assert rubric_score(rubric, shuffled) == pytest.approx(0.75)
    assert rubric_score(rubric, [CriterionResult(index=0, passed=True, reason="r")]) == pytest.approx(0.25)
    assert rubric_score(rubric, []) == 0.0


# -- structural checks -----------------------------------------------------------------------

def test_clean_trajectory_passes_every_check():
    assert failed(trajectory()) == set()


def test_plain_chat_without_tools_passes():
    assert failed(trajectory([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])) == set()


def break_call(**kw):
    messages = clean_messages()
    messages[2]["tool_calls"] = [call(**kw)]
    return messages


@pytest.mark.parametrize("messages, expected", [
    (break_call(name="get_wether"), {"tool_calls_name_offered_tools"}),
    (break_call(arguments='{"city": 3}'), {"tool_arguments_valid"}),
    (break_call(arguments='{"days": 2}'), {"tool_arguments_valid"}),
    (break_call(arguments='{"city": "Paris"'), {"tool_arguments_valid"}),
    (break_call(arguments='["Paris"]'), {"tool_arguments_valid"}),
    (clean_messages()[:3] + clean_messages()[4:], {"tool_calls_answered"}),
    ([*clean_messages()[:3], {**clean_messages()[3], "tool_call_id": "c2"}, clean_messages()[4]],
     {"tool_calls_answered"}),
    (clean_messages()[:4], {"ends_with_assistant_reply"}),
    ([*clean_messages()[:2], {"role": "assistant", "content": "Let me check.", "tool_calls": [call()]}],
     {"ends_with_assistant_reply", "tool_calls_answered"}),  # its call is necessarily unanswered too
    ([*clean_messages()[:4], {"role": "assistant", "content": "  "}], {"ends_with_assistant_reply"}),
], ids=["unknown-tool", "wrong-type", "missing-required", "not-json", "not-object", "unanswered",
        "wrong-answer-id", "ends-on-tool", "ends-on-tool-call", "ends-on-blank-reply"])
def test_each_defect_fails_exactly_its_check(messages, expected):
    assert failed(trajectory(messages)) == expected


def test_unknown_tools_lists_names():
    assert unknown_tools(trajectory(break_call(name="launch_missiles"))) == ["launch_missiles"]
    assert unknown_tools(trajectory()) == []


def test_invalid_arguments_names_call_and_path():
    [problem] = invalid_arguments(trajectory(break_call(call_id="c9", arguments='{"city": "Paris", "days": "two"}')))
    assert problem.startswith("c9: ") and "days" in problem
    [problem] = invalid_arguments(trajectory(break_call(call_id="c9", arguments="{oops")))
    assert problem == "c9: arguments are not JSON"


def test_empty_arguments_mean_an_empty_object():
    relaxed = copy.deepcopy(WEATHER)
    relaxed["function"]["parameters"]["required"] = []
    traj = Trajectory(task_id="t", agent_id="a", messages=break_call(arguments=""), tools=[relaxed])
    assert invalid_arguments(traj) == []
    assert invalid_arguments(trajectory(break_call(arguments=""))) != []  # city is required


def test_calls_answered_needs_answers_before_the_next_assistant_turn():
    messages = clean_messages()
    late = [messages[0], messages[1], messages[2], {"role": "assistant", "content": "wait"}, messages[3]]
    assert calls_answered(late) is False
    duplicate = [*messages[:4], messages[3], messages[4]]
    assert calls_answered(duplicate) is False
    parallel = [*messages[:2], {"role": "assistant", "content": "", "tool_calls": [call("a"), call("b")]},
                {"role": "tool", "tool_call_id": "b", "content": "x"}, {"role": "tool", "tool_call_id": "a", "content": "y"},
                messages[4]]
    assert calls_answered(parallel) is True
    assert calls_answered(parallel[:4] + parallel[5:]) is False


def test_ends_with_reply_on_empty_messages():
    assert ends_with_reply([]) is False


# -- drop_reasons ----------------------------------------------------------------------------

RUBRIC = [Criterion(text="books the room", kind="essential"), Criterion(text="is polite"),
          Criterion(text="deletes data", kind="pitfall")]
TASK = Task(agent_id="a1", goal="book a room", persona="p", rubric=RUBRIC)
OK_CHECKS = {name: True for name in CHECKS}


def reasons(cfg=None, traj=None, res=None, checks=None, score=1.0):
    return drop_reasons(cfg or JudgeConfig(), TASK, traj or trajectory(user_stopped=True),
                        results(True, True, False) if res is None else res,
                        OK_CHECKS if checks is None else checks, score)


def test_good_trajectory_has_no_drop_reasons():
    assert reasons() == []
    assert reasons(score=0.5) == []  # reaching the threshold keeps


def test_essential_failure_drops():
    assert reasons(res=results(False, True, False)) == ["essential criterion failed: books the room"]
    assert reasons(res=[]) == ["essential criterion failed: books the room"]  # no result = failed


def test_threshold_drops():
    assert reasons(score=0.49) == ["score 0.49 below threshold 0.50"]
    assert reasons(cfg=JudgeConfig(keep_threshold=0.9), score=0.8) == ["score 0.80 below threshold 0.90"]


def test_check_vetoes_a_perfect_score():
    assert reasons(checks={**OK_CHECKS, "tool_arguments_valid": False}, score=1.0) == [
        "check failed: tool_arguments_valid"]


def test_require_user_stop():
    cut = trajectory(user_stopped=False)
    assert reasons(traj=cut) == []
    assert reasons(cfg=JudgeConfig(require_user_stop=True), traj=cut) == [
        "cut off by max_turns before the user ended the conversation"]
    assert reasons(cfg=JudgeConfig(require_user_stop=True), traj=trajectory(user_stopped=True)) == []


def test_every_reason_is_kept():
    found = reasons(cfg=JudgeConfig(require_user_stop=True), traj=trajectory(user_stopped=False),
                    res=results(False, False, True), checks={**OK_CHECKS, "tool_calls_answered": False}, score=0.0)
    assert found == ["check failed: tool_calls_answered", "essential criterion failed: books the room",
                     "pitfall happened: deletes data", "score 0.00 below threshold 0.50",
                     "cut off by max_turns before the user ended the conversation"]


# -- transcript and the LLM judge ------------------------------------------------------------

def test_transcript_numbers_turns_and_shows_tools():
    text = transcript(clean_messages())
    assert "weather bot" not in text  # the system prompt is not shown to the judge
    assert text.splitlines() == [
        "[turn 1] USER: Weather in Paris?",
        '[turn 1] ASSISTANT CALLS get_weather({"city": "Paris"})',
        "[turn 1] TOOL RESULT (get_weather): sunny",
        "[turn 1] ASSISTANT: It is sunny in Paris.",
    ]
    two = transcript(clean_messages() + [{"role": "user", "content": "thanks"}])
    assert two.splitlines()[-1] == "[turn 2] USER: thanks"


def test_transcript_of_nothing_shown_is_raw_json():
    messages = [{"role": "system", "content": "s"}]
    assert transcript(messages) == json.dumps(messages)


class FakeJudgeLLM:
    """Answers structured() with a fixed list of verdicts and remembers what it was sent."""

    def __init__(self, verdicts):
        self.verdicts = verdicts
        self.calls = []

    async def structured(self, messages, schema, **kw):
        self.calls.append((messages, schema, kw))
        return schema.model_validate({"results": [
            {"reason": f"because {i}", "passed": passed, "turn": i + 1} for i, passed in enumerate(self.verdicts)]})


async def test_judge_trajectory_sends_criteria_in_a_seeded_order_and_maps_results_back():
    llm = FakeJudgeLLM([True, False, True])  # verdicts in the order the prompt lists the criteria
    found = await judge_trajectory(llm, TASK, trajectory(), seed=42)

    [(messages, schema, kw)] = llm.calls
    prompt = messages[0]["content"]
    assert messages[0]["role"] == "user" and len(messages) == 1
    assert "book a room" in prompt
    order = criteria_order(3, 42)
    assert order == [1, 0, 2]  # seed 42 shows criterion 2 first
    assert "1. [important] is polite\n2. [essential] books the room\n3. [pitfall] deletes data" in prompt
    assert "[turn 1] USER: Weather in Paris?" in prompt
    assert "$" not in prompt  # every placeholder filled
    assert kw["seed"] == 42 and kw["temperature"] == 0.0 and kw["call"] == "judge"

    # The first verdict was about "is polite" (index 1): results come back in the rubric's order.
    assert [r.index for r in found] == [0, 1, 2]
    assert [r.passed for r in found] == [False, True, True]
    assert [r.reason for r in found] == ["because 1", "because 0", "because 2"]
    assert [r.turn for r in found] == [2, 1, 3]
    assert rubric_score(TASK.rubric, found) == pytest.approx(0.0)  # 1 of 2 positives, pitfall happened


def test_judgment_model_demands_one_result_per_criterion():
    model = judgment_model(2)
    one = {"reason": "r", "passed": True, "turn": 1}
    assert len(model.model_validate({"results": [one, one]}).results) == 2
    for wrong in ([one], [one, one, one]):
        with pytest.raises(ValidationError):
            model.model_validate({"results": wrong})
    with pytest.raises(ValidationError):
        model.model_validate({"results": [one, {**one, "reason": ""}]})  # a verdict needs its reason
    with pytest.raises(ValidationError):
        model.model_validate({"results": [one, {**one, "turn": -2}]})


async def test_a_criterion_no_turn_bears_on_is_judged_with_turn_minus_one_and_stored_without_a_turn():
    class NoTurnJudge(FakeJudgeLLM):
        async def structured(self, messages, schema, **kw):
            return schema.model_validate({"results": [
                {"reason": "never happened", "passed": False, "turn": -1},
                {"reason": "booked", "passed": True, "turn": 2}, {"reason": "r", "passed": True, "turn": 3}]})

    found = await judge_trajectory(NoTurnJudge([]), TASK, trajectory(), seed=42)
    assert sorted((r.turn for r in found), key=str) == [2, 3, None]
    assert "-1 when no turn bears on it" in judge_prompt("judge", TASK, trajectory(), [0, 1, 2])


# -- several samples and the single-score mode ----------------------------------------------

from judges.checks import successful_calls, unbacked_claims, ungrounded_ids  # noqa: E402
from judges.filters import reason_kind  # noqa: E402
from judges.judge import SINGLE_INDEX, judge, majority, sample_seeds  # noqa: E402
from judges.metrics import funnel_report  # noqa: E402


class SeededJudgeLLM:
    """Answers by call: `by_call[i]` are the verdicts of the i-th request in the rubric's order (they are
    sent back in the order its prompt listed the criteria) or its 0-10 score (single)."""

    def __init__(self, by_call):
        self.by_call, self.calls = by_call, []

    async def structured(self, messages, schema, **kw):
        answer = self.by_call[len(self.calls)]
        self.calls.append((messages, schema, kw))
        if isinstance(answer, int):
            return schema.model_validate({"reason": f"score {answer}", "score": answer})
        order = shown_order(messages[0]["content"], [c.text for c in RUBRIC])
        return schema.model_validate({"results": [
            {"reason": f"call {len(self.calls)}", "passed": answer[i], "turn": 1} for i in order]})


def test_majority_per_criterion_and_ties_fail():
    samples = [results(True, True, False), results(True, False, False), results(False, False, True)]
    combined = majority(samples)
    assert [r.passed for r in combined] == [True, False, False]
    assert combined[0].reason == "r (2/3 samples agree)"
    assert [r.passed for r in majority([results(True), results(False)])] == [False]  # a tie fails
    assert majority([results(True, False)]) == results(True, False)  # one sample: unchanged


def test_sample_seeds_keep_the_first_and_differ():
    seeds = sample_seeds(42, 4)
    assert seeds[0] == 42 and len(set(seeds)) == 4 and sample_seeds(42, 4) == seeds


async def test_one_sample_is_greedy_and_uses_the_seed():
    llm = SeededJudgeLLM([[True, True, False]])
    outcome = await judge(llm, JudgeConfig(), TASK, trajectory(), seed=7)
    assert [kw["seed"] for _, _, kw in llm.calls] == [7] and llm.calls[0][2]["temperature"] == 0.0
    assert outcome.score == pytest.approx(1.0) and len(outcome.samples) == 1


async def test_several_samples_vote_per_criterion():
    llm = SeededJudgeLLM([[True, True, False], [False, True, True], [True, False, True]])
    outcome = await judge(llm, JudgeConfig(samples=3, sample_temperature=0.9), TASK, trajectory(), seed=7)
    assert [kw["seed"] for _, _, kw in llm.calls] == sample_seeds(7, 3)
    assert {kw["temperature"] for _, _, kw in llm.calls} == {0.9}
    assert [r.passed for r in outcome.results] == [True, True, True]
    assert outcome.score == pytest.approx(0.5)  # (2 positives - the pitfall that happened in 2 of 3) / 2
    assert outcome.scores == [pytest.approx(1.0), 0.0, 0.0]


async def test_single_mode_normalizes_a_0_to_10_score():
    llm = SeededJudgeLLM([7])
    outcome = await judge(llm, JudgeConfig(mode="single"), TASK, trajectory(), seed=1)
    prompt = llm.calls[0][0][0]["content"]
    assert "0 (useless" in prompt and "[essential] books the room" in prompt and "$" not in prompt
    assert outcome.score == pytest.approx(0.7)
    [result] = outcome.results
    assert (result.index, result.passed, result.reason) == (SINGLE_INDEX, True, "score 7")
    mean = await judge(SeededJudgeLLM([2, 9, 4]), JudgeConfig(mode="single", samples=3), TASK, trajectory(), seed=1)
    assert mean.score == pytest.approx(0.5) and mean.results[0].reason == "score 2 (1/3 samples agree)"


def test_single_mode_does_not_check_essentials_one_by_one():
    single = [CriterionResult(index=SINGLE_INDEX, passed=True, reason="fine")]
    assert reasons(cfg=JudgeConfig(mode="single"), res=single, score=0.8) == []
    assert reasons(cfg=JudgeConfig(mode="single"), res=single, score=0.3) == ["score 0.30 below threshold 0.50"]
    assert reasons(res=single, score=0.8) == ["essential criterion failed: books the room"]


# -- reward-hack checks ----------------------------------------------------------------------

def said(text, *, tool="get_weather", result="sunny", user="Weather in Paris?", traces=None):
    messages = [{"role": "user", "content": user},
                {"role": "assistant", "content": "", "tool_calls": [call(name=tool)]},
                {"role": "tool", "tool_call_id": "c1", "name": tool, "content": result},
                {"role": "assistant", "content": text}]
    return Trajectory(task_id="t", agent_id="a", messages=messages, tools=[WEATHER], tool_calls=traces or [])


@pytest.mark.parametrize("text, tool, result, expected", [
    ("I booked your room.", "get_weather", "sunny", ["booked"]),
    ("I booked your room.", "book_room", "ok", []),
    ("Your booking was reserved and the email sent.", "reserve_room", "ok", ["sent"]),
    ("I booked your room.", "book_room", "Error: no rooms", ["booked"]),  # the call failed
    ("I have not booked it yet.", "get_weather", "sunny", []),
    ("Should it be cancelled?", "get_weather", "sunny", []),
    ("If you want, it will be deleted.", "get_weather", "sunny", []),
    ("The ticket was Cancelled. Then I DELETED the old one.", "cancel_ticket", "ok", ["deleted"]),
    ("It is sunny in Paris.", "get_weather", "sunny", []),
], ids=["no-tool", "backed", "one-of-two", "failed-call", "negated", "question", "conditional", "case", "no-claim"])
def test_claimed_actions_need_a_successful_matching_call(text, tool, result, expected):
    assert unbacked_claims(said(text, tool=tool, result=result)) == expected


def test_traces_decide_success_when_recorded():
    from synth.core.records import ToolCallTrace

    failed_trace = [ToolCallTrace(call_id="c1", name="book_room", arguments="{}", result="x", is_error=True)]
    assert unbacked_claims(said("I booked it.", tool="book_room", result="ok", traces=failed_trace)) == ["booked"]
    assert successful_calls(said("x", tool="book_room")) == [("book_room", '{"city": "Paris"}')]


@pytest.mark.parametrize("text, expected", [
    ("Your confirmation is BK-99812.", ["BK-99812"]),
    ("Confirmation BK-99812.", []),  # with the tool result below
    ("Order #A1234 is on its way.", []),  # the user said it
    ("Ticket #55512 is open; it costs 12000 and leaves 2025-01-03.", ["#55512"]),
    ("IMPORTANT: it is sunny -----", []),  # no digit: not an id
], ids=["invented", "from-tool", "from-user", "hash-digits-vs-amount-and-date", "no-digit"])
def test_stated_ids_must_come_from_a_tool_or_the_user(text, expected):
    result = '{"confirmation": "bk-99812"}' if "Confirmation BK" in text else "sunny"
    assert ungrounded_ids(said(text, result=result, user="Where is order #A1234?")) == expected


def test_hack_checks_veto_through_structural_checks():
    assert failed(said("I booked it as BK-99812.")) == {"claims_backed_by_tool_calls", "stated_ids_grounded"}


def test_a_new_check_is_one_function_in_a_group_and_vetoes_like_the_others():
    def says_thanks(s: Subject) -> bool:
        return any("thank" in (m.get("content") or "").lower() for m in s.trajectory.messages if m["role"] == "user")

    traj = trajectory(user_stopped=True)
    checks = run_checks(Subject(traj), {**STRUCTURAL, "user_says_thanks": says_thanks})
    assert list(checks)[:-1] == list(STRUCTURAL) and checks["user_says_thanks"] is False
    assert drop_reasons(JudgeConfig(), TASK, traj, results(True, True, False), checks, 1.0) == [
        "check failed: user_says_thanks"]


# -- funnel ----------------------------------------------------------------------------------

def test_reason_kind_keeps_check_names_and_drops_details():
    assert reason_kind("check failed: tool_arguments_valid") == "check failed: tool_arguments_valid"
    assert reason_kind("essential criterion failed: books the room") == "essential criterion failed"
    assert reason_kind("score 0.20 below threshold 0.50") == "score below threshold"
    assert reason_kind("cut off by max_turns before the user ended the conversation").startswith("cut off")


def test_funnel_report_counts_stages_reasons_and_failures(tmp_path):
    from synth.core.records import Verdict
    from synth.core.store import RunStore

    store = RunStore(tmp_path)
    store.append("tasks", [TASK])
    store.append("verdicts", [
        Verdict(trajectory_id="t1", task_id=TASK.id, keep=True, score=1.0),
        Verdict(trajectory_id="t2", task_id=TASK.id, reasons=["score 0.10 below threshold 0.50",
                                                              "essential criterion failed: a",
                                                              "essential criterion failed: b"]),
        Verdict(trajectory_id="t3", task_id=TASK.id, reasons=["check failed: stated_ids_grounded"]),
    ])
    store.error("rollout", "u1", TimeoutError("slow"))
    store.error("judge", "u2", ValueError("bad"))
    report = funnel_report(store)
    assert report["counts"] == {"tools": 0, "agents": 0, "tasks": 1, "trajectories": 0, "verdicts": 3, "kept": 1}
    assert report["dropped"] == 2
    assert report["drop_reasons"] == {"score below threshold": 1, "essential criterion failed": 1,
                                      "check failed: stated_ids_grounded": 1}
    assert report["failed_units"] == {"judge": 1, "rollout": 1}
    json.dumps(report)  # goes into manifest.json as is
