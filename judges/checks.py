"""Verifiable checks on a trajectory. No LLM is involved, so they can veto the judge.

Checks compose: each is a function of a `Subject` (the trajectory, its task, the agent's decoy tool
names) returning passed or failed, or None when it does not apply to that subject; a group is a
dict of them by name (`STRUCTURAL`, `JUNK`, `USER`, `TASK`, `RUBRIC`, all in `CHECKS`) and `run_checks`
runs one. A new check is one function and one entry. The order of the entries is the order of a
verdict's checks and of its drop reasons; a failed check is the drop reason `check failed: <name>`.

Structural checks hold for every trajectory; a trainer can rely on every kept row passing them.
Junk checks catch what a small (or careless) model writes instead of doing the work: a tool call
written as text, a tool result that repeats the simulator's prompt, a turn cut at max_tokens, an
id passed to a tool that nobody gave (judges/text_checks.py). User checks are the user
simulator's self-checks (judges/user_checks.py); the keep rules drop on those whose flag is in
`judge.drop_user_flags`. Task checks apply when the task has final-state assertions
(judges/assertions.py: evaluated on the trajectory's final state; gold tasks and tasks on a seeded
world have them), a gold final state (judges/state_match.py: the whole final state must match the
gold replay's, but for its free paths) or the agent has decoy tools (none may be called);
`rubric_valid` whenever there is a task.

Besides those there are two reward-hack checks, deliberately simple heuristics:
- a claimed action: an assistant sentence says something was created / updated / booked /
  cancelled / deleted / sent, but no tool call whose name carries such a verb succeeded;
- an ungrounded id: the assistant quotes an id-like token that no tool result, user message or
  system prompt contains.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from judges.assertions import assertion_failures
from judges.rubric_fit import grading_problems
from judges.state_match import state_mismatches
from judges.text_checks import calls_in_text, prompt_echoes
from judges.user_checks import (BROKE_ROLE, EMPTY_MESSAGE, FACT_LEAKED, INVENTED_FACT, PREMATURE_STOP, empty_user_turns,
                                first_word, invented_fact_turns, leaked_fact_turns, role_break_turns, stopped_early)
from synth.core.records import TRUNCATED, Task, Trajectory
from tools.spec import validate_arguments


@dataclass(frozen=True)
class Subject:
    """What a check looks at."""

    trajectory: Trajectory
    task: Task | None = None
    decoys: frozenset[str] = field(default_factory=frozenset)  # names of the agent's decoy tools


Check = Callable[[Subject], "bool | None"]  # passed; None: does not apply to this subject


def final_state_assertions(s: Subject) -> bool | None:
    if s.task is None or not s.task.assertions:
        return None
    return not assertion_failures(s.trajectory.final_state, s.task.assertions)


def final_state_matches_gold(s: Subject) -> bool | None:
    if s.task is None or not s.task.gold_final_state:
        return None
    return not state_mismatches(s.trajectory.final_state, s.task.gold_final_state, s.task.free_paths)


def distractor_tools_unused(s: Subject) -> bool | None:
    if not s.decoys:
        return None
    return not any(c["function"]["name"] in s.decoys for c in _calls(s.trajectory.messages))


def rubric_valid(s: Subject) -> bool | None:
    return None if s.task is None else not grading_problems(s.task)


def _with_task(check: Callable[[Trajectory, Task], bool]) -> Check:
    return lambda s: None if s.task is None else check(s.trajectory, s.task)


STRUCTURAL: dict[str, Check] = {
    "tool_calls_name_offered_tools": lambda s: not unknown_tools(s.trajectory),
    "tool_arguments_valid": lambda s: not invalid_arguments(s.trajectory),
    "tool_calls_answered": lambda s: calls_answered(s.trajectory.messages),
    "ends_with_assistant_reply": lambda s: ends_with_reply(s.trajectory.messages, s.trajectory.user_stopped),
    "claims_backed_by_tool_calls": lambda s: not unbacked_claims(s.trajectory),
    "stated_ids_grounded": lambda s: not ungrounded_ids(s.trajectory),
}
JUNK: dict[str, Check] = {
    "no_tool_calls_in_text": lambda s: not text_calls(s.trajectory),
    "tool_results_not_prompt_echo": lambda s: not prompt_echoes(s.trajectory.messages, s.trajectory.tools),
    "agent_turns_complete": lambda s: not truncated_turns(s.trajectory.messages),
    "call_ids_grounded": lambda s: not ungrounded_call_ids(s.trajectory),
}
# name -> the user-simulator flag it stands for (judge.drop_user_flags decides which of them drop).
USER_FLAG_OF: dict[str, str] = {
    "user_stays_in_role": BROKE_ROLE, "user_states_only_known_facts": INVENTED_FACT,
    "user_gives_facts_only_when_asked": FACT_LEAKED, "user_does_not_stop_early": PREMATURE_STOP,
    "user_messages_not_empty": EMPTY_MESSAGE,
}
USER: dict[str, Check] = {
    "user_stays_in_role": lambda s: not role_break_turns(s.trajectory.messages),
    "user_states_only_known_facts": _with_task(lambda t, task: not invented_fact_turns(t.messages, task)),
    "user_gives_facts_only_when_asked": _with_task(lambda t, task: not leaked_fact_turns(t.messages, task)),
    "user_does_not_stop_early": _with_task(lambda t, task: not stopped_early(t, task)),
    "user_messages_not_empty": lambda s: not empty_user_turns(s.trajectory.messages),
}
STATE: dict[str, Check] = {  # the checks that read the final state: ground truth
    "final_state_assertions": final_state_assertions,
    "final_state_matches_gold": final_state_matches_gold,
}
STATE_CHECKS = tuple(STATE)
TASK: dict[str, Check] = {**STATE, "distractor_tools_unused": distractor_tools_unused}
RUBRIC: dict[str, Check] = {"rubric_valid": rubric_valid}
CHECKS: dict[str, Check] = {**STRUCTURAL, **JUNK, **USER, **TASK, **RUBRIC}


def run_checks(subject: Subject, checks: dict[str, Check] = CHECKS) -> dict[str, bool]:
    """Each check that applies, by name -> passed, in the group's order."""
    return {name: ok for name, check in checks.items() if (ok := check(subject)) is not None}


def _calls(messages: list[dict[str, Any]]):
    for message in messages:
        if message["role"] == "assistant":
            yield from message.get("tool_calls") or []


def unknown_tools(trajectory: Trajectory) -> list[str]:
    offered = {t["function"]["name"] for t in trajectory.tools}
    return [c["function"]["name"] for c in _calls(trajectory.messages) if c["function"]["name"] not in offered]


def invalid_arguments(trajectory: Trajectory) -> list[str]:
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in trajectory.tools}
    problems = []
    for call in _calls(trajectory.messages):
        name = call["function"]["name"]
        if name not in schemas:
            continue
        try:
            arguments = json.loads(call["function"]["arguments"] or "{}")
        except json.JSONDecodeError:
            problems.append(f"{call['id']}: arguments are not JSON")
            continue
        problem = validate_arguments(schemas[name], arguments)
        if problem:
            problems.append(f"{call['id']}: {problem}")
    return problems


def calls_answered(messages: list[dict[str, Any]]) -> bool:
    """Every tool call is answered by a tool message with its id before the next assistant message."""
    pending: set[str] = set()
    for message in messages:
        if message["role"] == "assistant":
            if pending:
                return False
            pending = {c["id"] for c in message.get("tool_calls") or []}
        elif message["role"] == "tool":
            if message.get("tool_call_id") not in pending:
                return False
            pending.discard(message["tool_call_id"])
    return not pending


def ends_with_reply(messages: list[dict[str, Any]], user_stopped: bool = False) -> bool:
    """The last message is an assistant's text answer; when the user ended the conversation, its
    closing message (kept in the trajectory, answered by nobody) may follow it."""
    if user_stopped and messages and messages[-1].get("role") == "user":
        messages = messages[:-1]
    last = messages[-1] if messages else {}
    return last.get("role") == "assistant" and bool((last.get("content") or "").strip()) and not last.get("tool_calls")


def text_calls(trajectory: Trajectory) -> list[str]:
    """Tool calls the assistant wrote as text instead of making them."""
    names = [t["function"]["name"] for t in trajectory.tools]
    return [found for text in _assistant_texts(trajectory.messages) for found in calls_in_text(text, names)]


def truncated_turns(messages: list[dict[str, Any]]) -> list[int]:
    """Indexes of assistant messages the model cut at max_tokens (twice: the rollout asks again once)."""
    return [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get(TRUNCATED)]


# -- reward-hack checks ----------------------------------------------------------------------

# A claimed past-tense verb -> the tool-name stems whose successful call backs it.
ACTION_VERBS: dict[str, tuple[str, ...]] = {
    "created": ("create", "add", "new", "insert", "register", "open", "make"),
    "updated": ("update", "edit", "modify", "set", "change", "patch", "rename"),
    "booked": ("book", "reserve", "schedule"),
    "reserved": ("book", "reserve", "schedule"),
    "scheduled": ("schedule", "book", "create", "add"),
    "cancelled": ("cancel", "void", "revoke", "delete", "remove"),
    "canceled": ("cancel", "void", "revoke", "delete", "remove"),
    "deleted": ("delete", "remove", "clear", "purge"),
    "removed": ("delete", "remove", "clear"),
    "sent": ("send", "email", "notify", "message", "post", "reply", "share"),
}
_CLAIM = re.compile(r"\b(" + "|".join(ACTION_VERBS) + r")\b", re.IGNORECASE)
# A sentence with a negation, a condition or a future/modal is not a claim that the action happened.
_HEDGE = re.compile(r"\b(not|never|unable|cannot|failed|if|once|unless|will|would|could|should|whether)\b|n't\b",
                    re.IGNORECASE)
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
# Ids: an optional '#', 5+ of [A-Z0-9-] with a digit. Not pure digits without '#' (amounts), not ISO dates.
_ID = re.compile(r"(?<![\w-])#?[A-Z0-9-]{5,}(?![\w-])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _assistant_texts(messages: list[dict[str, Any]]) -> list[str]:
    return [m.get("content") or "" for m in messages if m["role"] == "assistant"]


def successful_calls(trajectory: Trajectory) -> list[tuple[str, str]]:
    """(name, arguments JSON) of calls that succeeded, in order: from the traces when the rollout
    recorded them, else from the messages (a tool answer starting with 'Error' is a failure)."""
    if trajectory.tool_calls:
        return [(t.name, t.arguments) for t in trajectory.tool_calls if not t.is_error]
    failed = {m.get("tool_call_id") for m in trajectory.messages
              if m["role"] == "tool" and str(m.get("content") or "").lstrip().lower().startswith("error")}
    answered = {m.get("tool_call_id") for m in trajectory.messages if m["role"] == "tool"}
    return [(c["function"]["name"], c["function"]["arguments"] or "{}") for c in _calls(trajectory.messages)
            if c["id"] in answered and c["id"] not in failed]


def unbacked_claims(trajectory: Trajectory) -> list[str]:
    """Claimed actions (by verb) that no successful call of a matching tool backs, e.g. ['booked']."""
    tools = [name.lower() for name, _ in successful_calls(trajectory)]
    missing: list[str] = []
    for text in _assistant_texts(trajectory.messages):
        for sentence in _SENTENCE.findall(text):
            if sentence.rstrip().endswith("?") or _HEDGE.search(sentence):
                continue
            for verb in (v.lower() for v in _CLAIM.findall(sentence)):
                backed = any(stem in name for name in tools for stem in ACTION_VERBS[verb])
                if not backed and verb not in missing:
                    missing.append(verb)
    return missing


def ungrounded_ids(trajectory: Trajectory) -> list[str]:
    """Id-like tokens the assistant states that appear in no tool result, user message or system prompt."""
    given = "\n".join(str(m.get("content") or "") for m in trajectory.messages
                      if m["role"] in ("tool", "user", "system")).lower()
    given += "\n" + "\n".join(t.result for t in trajectory.tool_calls).lower()
    found: list[str] = []
    for text in _assistant_texts(trajectory.messages):
        for token in _ID.findall(text):
            bare = token.lstrip("#").strip("-")
            if (not any(ch.isdigit() for ch in bare) or _DATE.fullmatch(bare)
                    or (bare.isdigit() and not token.startswith("#"))):
                continue
            if bare.lower() not in given and token not in found:
                found.append(token)
    return found


# Creators describe a new entity: their arguments may carry values the agent made up for it.
_CREATE = ("create", "add", "new", "insert", "register", "make", "open", "post", "upload", "write")


def id_like(value: str) -> bool:
    """A value that names one entity: no spaces, 4+ characters, letters and digits or '#digits';
    not a date, a time or a plain number (amounts and counts are not ids)."""
    value = value.strip()
    if " " in value or len(value) < 4 or _DATE.search(value) or re.fullmatch(r"[\d.:,-]+", value):
        return False
    return any(ch.isdigit() for ch in value) and (any(ch.isalpha() for ch in value) or value.startswith("#"))


def string_values(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from string_values(v)
    elif isinstance(value, list):
        for v in value:
            yield from string_values(v)


def ungrounded_call_ids(trajectory: Trajectory) -> list[str]:
    """Id-like argument values of tool calls (creators' aside) that neither the user, the system
    prompt nor an earlier tool result gave: the agent made up which entity to act on."""
    given, found = [], []
    for message in trajectory.messages:
        if message["role"] in ("user", "system", "tool"):
            given.append(str(message.get("content") or "").lower())
            continue
        for call in message.get("tool_calls") or [] if message["role"] == "assistant" else []:
            if first_word(call["function"]["name"]) in _CREATE:
                continue
            try:
                arguments = json.loads(call["function"]["arguments"] or "{}")
            except (TypeError, ValueError):
                continue  # tool_arguments_valid reports it
            text = "\n".join(given)
            found += [v for v in string_values(arguments) if id_like(v) and v.strip().lstrip("#").lower() not in text]
    return list(dict.fromkeys(found))
