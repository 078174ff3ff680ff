"""Verifiable checks on a trajectory. No LLM is involved, so they can veto the judge.

Checks compose: each is a function of a `Subject` (the trajectory, its task, the agent's decoy tool
names) returning passed or failed, or None when it does not apply to that subject; a group is a
dict of them by name (`STRUCTURAL`, `TASK`, both in `CHECKS`) and `run_checks` runs one. A new
check is one function and one entry. The order of the entries is the order of a verdict's checks
and of its drop reasons.

Structural checks hold for every trajectory; a trainer can rely on every kept row passing them.
Task checks apply when the task has final-state assertions (judges/assertions.py: evaluated on the
trajectory's final state; gold tasks and tasks on a seeded world have them), a gold final state
(judges/state_match.py: the whole final state must match the gold replay's, but for its free
paths) or the agent has decoy tools (none may be called), so verdicts of tasks without them keep
the same checks.

Besides structural checks there are two reward-hack checks, deliberately simple heuristics:
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
from judges.state_match import state_mismatches
from synth.core.records import Task, Trajectory
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


STRUCTURAL: dict[str, Check] = {
    "tool_calls_name_offered_tools": lambda s: not unknown_tools(s.trajectory),
    "tool_arguments_valid": lambda s: not invalid_arguments(s.trajectory),
    "tool_calls_answered": lambda s: calls_answered(s.trajectory.messages),
    "ends_with_assistant_reply": lambda s: ends_with_reply(s.trajectory.messages),
    "claims_backed_by_tool_calls": lambda s: not unbacked_claims(s.trajectory),
    "stated_ids_grounded": lambda s: not ungrounded_ids(s.trajectory),
}
TASK: dict[str, Check] = {
    "final_state_assertions": final_state_assertions,
    "final_state_matches_gold": final_state_matches_gold,
    "distractor_tools_unused": distractor_tools_unused,
}
CHECKS: dict[str, Check] = {**STRUCTURAL, **TASK}


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


def ends_with_reply(messages: list[dict[str, Any]]) -> bool:
    last = messages[-1] if messages else {}
    return last.get("role") == "assistant" and bool((last.get("content") or "").strip()) and not last.get("tool_calls")


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
