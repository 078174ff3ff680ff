"""Final-state assertions: a path into the state, an op, a value. Gold replay (judges/gold.py) keeps
a task only when its assertions hold after its own solution; the judge checks them on every
trajectory's final state (judges/checks.py `final_state_assertions`)."""

from __future__ import annotations

import json
from typing import Any

from synth.core.records import StateAssertion

_MISSING = object()


def parse_value(text: str) -> Any:
    """An assertion's value: JSON, or the bare text when it is not JSON (models often drop the quotes)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def resolve(state: Any, path: str) -> Any:
    """The value at a dot-separated path (dict keys, list indexes), or _MISSING."""
    node = state
    for part in path.split(".") if path else []:
        if isinstance(node, dict):
            node = node.get(part, _MISSING)
        elif isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                return _MISSING
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def _matches(actual: Any, expected: Any) -> bool:
    """Equal, or for dicts: every expected key has an equal value (a partial record)."""
    if isinstance(actual, dict) and isinstance(expected, dict):
        return all(k in actual and _matches(actual[k], v) for k, v in expected.items())
    return actual == expected


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(actual, str):
        return isinstance(expected, str) and expected in actual
    if isinstance(actual, list):
        return any(_matches(item, expected) for item in actual)
    if isinstance(actual, dict):
        return _matches(actual, expected) if isinstance(expected, dict) else str(expected) in actual
    return False


def holds(state: dict[str, Any], assertion: StateAssertion) -> bool:
    actual = resolve(state, assertion.path)
    if assertion.op == "exists":
        return actual is not _MISSING
    if assertion.op == "absent":
        return actual is _MISSING
    if actual is _MISSING:
        return False
    expected = parse_value(assertion.value)
    return actual == expected if assertion.op == "equals" else _contains(actual, expected)


def assertion_failures(state: dict[str, Any], assertions: list[StateAssertion]) -> list[str]:
    """One line per assertion that does not hold, naming it and what the state holds there."""
    failures = []
    for a in assertions:
        if not holds(state, a):
            actual = resolve(state, a.path)
            shown = "missing" if actual is _MISSING else json.dumps(actual, sort_keys=True)[:120]
            what = f"{a.path} {a.op}" + (f" {a.value}" if a.op in ("equals", "contains") else "")
            failures.append(f"assertion {what} does not hold (found: {shown})")
    return failures
