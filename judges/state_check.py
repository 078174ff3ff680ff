"""Verifiable checks on a trajectory. No LLM is involved, so they can veto the judge."""

from __future__ import annotations

import json
from typing import Any

from synth.records import Trajectory
from tools.spec import validate_arguments


def structural_checks(trajectory: Trajectory) -> dict[str, bool]:
    """Each check by name -> passed. A trainer can rely on every kept row passing all of them."""
    return {
        "tool_calls_name_offered_tools": not unknown_tools(trajectory),
        "tool_arguments_valid": not invalid_arguments(trajectory),
        "tool_calls_answered": calls_answered(trajectory.messages),
        "ends_with_assistant_reply": ends_with_reply(trajectory.messages),
    }


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
