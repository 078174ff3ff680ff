"""Planted defects: known defects put into copies of trajectories the filter kept, to measure what
the filter (checks + judge) catches. `synth judges calibrate --planted` runs them (judges/planted_recall.py).

Each planter takes a trajectory and its task and returns the defective copy, what was done, and
whether a check is built to see it (`by_check`: a deterministic defect, which the filter must
drop every time) or only the judge can (`judge`: reported as measured), or None when the defect
does not apply (no write call to drop, no hidden fact to leak...). Copies are new trajectories
(new ids); the originals are never changed.

- `drop_write_call`: every successful write call and its result are removed, and the assistant
  still claims the action ("I have created it for you." is added unless it already says so); the
  final state goes back to the initial state. By check (`claims_backed_by_tool_calls`, and the
  state checks where the task has them) when the tool's verb is a claim verb the check knows.
- `change_key_argument`: an id-like argument of a call is changed to an id nobody gave; results
  stay. By check (`call_ids_grounded`) for a call that does not create the entity; a plain text
  or number argument is changed instead when there is no such id (judge).
- `fabricate_tool_result`: a successful tool result is replaced by a plausible fabricated one
  (same keys, other values); judge.
- `leak_hidden_fact`: a hidden fact the goal does not state is added to the first user message.
  By check (`user_gives_facts_only_when_asked`).
- `user_breaks_role`: a user message gets a line spoken as the assistant or as an AI. By check
  (`user_stays_in_role`).
- `cut_last_turns`: the final assistant answer and what follows are cut; the user did not end the
  conversation. By check (`ends_with_assistant_reply`).
"""

from __future__ import annotations

import copy
import json
import random
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal

from judges.checks import ACTION_VERBS, id_like, string_values
from judges.user_checks import fact_value, first_word, is_write_name
from synth.core.records import Task, Trajectory

Catch = Literal["check", "judge"]

ROLE_BREAKS = (
    "I'm a chatbot, and I can only assist with text-based interactions.",
    "How can I assist you today?",
    "As an AI language model, I don't have personal preferences.",
    "Is there anything else I can help you with?",
    "I'm here to help! What can I do for you?",
    "As an AI, I cannot share that.",
)


@dataclass(frozen=True)
class Planted:
    kind: str
    trajectory: Trajectory
    detail: str
    by: Catch


def _copy(trajectory: Trajectory, **changes: Any) -> Trajectory:
    data = trajectory.model_dump(exclude={"id"})
    data.update(changes)
    return Trajectory.model_validate(data)


def _failed(content: Any) -> bool:
    return str(content or "").lstrip().lower().startswith("error")


def _succeeded_calls(messages: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(index of the assistant message, call) of calls whose result is not an error, in order."""
    results = {m.get("tool_call_id"): m.get("content") for m in messages if m["role"] == "tool"}
    return [(i, c) for i, m in enumerate(messages) if m["role"] == "assistant"
            for c in m.get("tool_calls") or [] if c["id"] in results and not _failed(results[c["id"]])]


def _claim_verb(tool: str) -> str | None:
    """The past-tense claim `claims_backed_by_tool_calls` reads for a tool's verb (create_x -> created)."""
    verb = first_word(tool)
    return next((claim for claim, stems in ACTION_VERBS.items() if verb in stems), None)


def drop_write_call(trajectory: Trajectory, task: Task, rng: random.Random) -> Planted | None:
    messages = copy.deepcopy(trajectory.messages)
    writes = [(i, c) for i, c in _succeeded_calls(messages) if is_write_name(c["function"]["name"])]
    if not writes:
        return None
    dropped = {c["id"] for _, c in writes}
    kept: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "tool" and message.get("tool_call_id") in dropped:
            continue
        if message["role"] == "assistant" and message.get("tool_calls"):
            calls = [c for c in message["tool_calls"] if c["id"] not in dropped]
            if not calls and not str(message.get("content") or "").strip():
                continue
            message = {**message, "tool_calls": calls} if calls else {k: v for k, v in message.items() if k != "tool_calls"}
        kept.append(message)
    tool = writes[0][1]["function"]["name"]
    verb = _claim_verb(tool)
    claim = f"I have {verb} it for you." if verb else "Done: I have taken care of it for you."
    last = max((i for i, m in enumerate(kept) if m["role"] == "assistant" and not m.get("tool_calls")), default=None)
    if last is None:
        kept.append({"role": "assistant", "content": claim})
    elif not verb or verb not in str(kept[last].get("content") or "").lower():
        kept[last] = {**kept[last], "content": f"{str(kept[last].get('content') or '').rstrip()} {claim}".strip()}
    copy_ = _copy(trajectory, messages=kept, tool_calls=[t for t in trajectory.tool_calls if t.call_id not in dropped],
                  final_state=copy.deepcopy(task.initial_state))
    # By construction a claim verb with no successful call left to back it, or assertions the undone
    # writes no longer satisfy: what a check is built to see (whether it does is what is measured).
    caught = verb is not None or bool(task.assertions)
    return Planted("drop_write_call", copy_, f"dropped {len(dropped)} write call(s) of {tool}; claim: {claim!r}",
                   "check" if caught else "judge")


def _fresh_id(value: str, taken: str, rng: random.Random) -> str:
    """`value` with its digits redrawn, until nothing in `taken` holds it."""
    for _ in range(100):
        out = re.sub(r"\d", lambda _: str(rng.randint(0, 9)), value)
        if out != value and out.lstrip("#").lower() not in taken:
            return out
    return value + "9"


def _replace_string(arguments: Any, old: str, new: str) -> Any:
    if isinstance(arguments, str):
        return new if arguments == old else arguments
    if isinstance(arguments, dict):
        return {k: _replace_string(v, old, new) for k, v in arguments.items()}
    if isinstance(arguments, list):
        return [_replace_string(v, old, new) for v in arguments]
    return arguments


def change_key_argument(trajectory: Trajectory, task: Task, rng: random.Random) -> Planted | None:
    messages = copy.deepcopy(trajectory.messages)
    taken = "\n".join(str(m.get("content") or "") for m in messages).lower()
    creators = ("create", "add", "new", "insert", "register", "make", "open", "post", "upload", "write")
    candidates: list[tuple[dict[str, Any], dict[str, Any], str, Catch]] = []
    for _, call in _succeeded_calls(messages):
        try:
            arguments = json.loads(call["function"]["arguments"] or "{}")
        except ValueError:
            continue
        if not isinstance(arguments, dict) or not arguments:
            continue
        ids = [v for v in string_values(arguments) if id_like(v)]
        if ids and first_word(call["function"]["name"]) not in creators:
            candidates.append((call, arguments, ids[0], "check"))
        else:
            key = sorted(arguments)[0]
            candidates.append((call, arguments, key, "judge"))
    if not candidates:
        return None
    by_check = [c for c in candidates if c[3] == "check"]
    call, arguments, target, by = (by_check or candidates)[0]
    if by == "check":
        new_value = _fresh_id(target, taken, rng)
        changed = _replace_string(arguments, target, new_value)
        detail = f"{call['function']['name']}: {target!r} -> {new_value!r}"
    else:
        old = arguments[target]
        new: Any = (old + rng.randint(1, 9) if isinstance(old, (int, float)) and not isinstance(old, bool)
                    else not old if isinstance(old, bool) else f"{old} (other)" if isinstance(old, str) else "other")
        changed = {**arguments, target: new}
        detail = f"{call['function']['name']}: {target} {old!r} -> {new!r}"
    call["function"]["arguments"] = json.dumps(changed)
    traces = [t.model_copy(update={"arguments": call["function"]["arguments"]}) if t.call_id == call["id"] else t
              for t in trajectory.tool_calls]
    return Planted("change_key_argument", _copy(trajectory, messages=messages, tool_calls=traces), detail, by)


def _fabricated(text: str, rng: random.Random) -> str:
    try:
        value = json.loads(text)
    except ValueError:
        return f"OK: done, reference FAB-{rng.randint(10000, 99999)}, total {rng.randint(100, 999)}.00"

    def alter(v: Any) -> Any:
        if isinstance(v, bool):
            return not v
        if isinstance(v, (int, float)):
            return v + rng.randint(3, 97)
        if isinstance(v, str):
            return f"FAB-{rng.randint(10000, 99999)}" if any(ch.isdigit() for ch in v) else f"{v} (updated)"
        if isinstance(v, dict):
            return {k: alter(x) for k, x in v.items()}
        if isinstance(v, list):
            return [alter(x) for x in v]
        return v
    return json.dumps(alter(value))


def fabricate_tool_result(trajectory: Trajectory, task: Task, rng: random.Random) -> Planted | None:
    messages = copy.deepcopy(trajectory.messages)
    answered = [m for m in messages if m["role"] == "tool" and not _failed(m.get("content"))]
    if not answered:
        return None
    target = answered[-1]
    old, target["content"] = target["content"], _fabricated(str(target["content"]), rng)
    traces = [t.model_copy(update={"result": target["content"]}) if t.call_id == target.get("tool_call_id") else t
              for t in trajectory.tool_calls]
    return Planted("fabricate_tool_result", _copy(trajectory, messages=messages, tool_calls=traces),
                   f"{target.get('name', '?')}: {str(old)[:80]!r} -> {target['content'][:80]!r}", "judge")


def leak_hidden_fact(trajectory: Trajectory, task: Task, rng: random.Random) -> Planted | None:
    goal = task.goal.lower()
    facts = [f for f in task.user_facts if len(fact_value(f)) >= 3 and fact_value(f).lower() not in goal]
    first = next((i for i, m in enumerate(trajectory.messages) if m["role"] == "user"), None)
    if not facts or first is None:
        return None
    fact = rng.choice(facts)
    messages = copy.deepcopy(trajectory.messages)
    messages[first]["content"] = f"{str(messages[first].get('content') or '').rstrip()} {fact.rstrip('.')}.".strip()
    return Planted("leak_hidden_fact", _copy(trajectory, messages=messages), f"first user turn + {fact!r}", "check")


def user_breaks_role(trajectory: Trajectory, task: Task, rng: random.Random) -> Planted | None:
    users = [i for i, m in enumerate(trajectory.messages) if m["role"] == "user"]
    if not users:
        return None
    at, line = rng.choice(users), rng.choice(ROLE_BREAKS)
    messages = copy.deepcopy(trajectory.messages)
    messages[at]["content"] = f"{str(messages[at].get('content') or '').rstrip()} {line}".strip()
    return Planted("user_breaks_role", _copy(trajectory, messages=messages), f"user message {at} + {line!r}", "check")


def cut_last_turns(trajectory: Trajectory, task: Task, rng: random.Random) -> Planted | None:
    answers = [i for i, m in enumerate(trajectory.messages)
               if m["role"] == "assistant" and str(m.get("content") or "").strip() and not m.get("tool_calls")]
    if not answers or answers[-1] < 2:
        return None
    messages = copy.deepcopy(trajectory.messages[:answers[-1]])
    return Planted("cut_last_turns", _copy(trajectory, messages=messages, user_stopped=False),
                   f"cut {len(trajectory.messages) - len(messages)} message(s) from the end", "check")


PLANTERS: dict[str, Callable[[Trajectory, Task, random.Random], Planted | None]] = {
    "drop_write_call": drop_write_call,
    "change_key_argument": change_key_argument,
    "fabricate_tool_result": fabricate_tool_result,
    "leak_hidden_fact": leak_hidden_fact,
    "user_breaks_role": user_breaks_role,
    "cut_last_turns": cut_last_turns,
}
