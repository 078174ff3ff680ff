"""Gold actions and final-state assertions: evaluate assertions on a state, replay a reference solution.

A task for an executable toolset carries a gold solution (tool calls) and assertions over the final
state. `validate_task` replays the solution from the task's initial state with the real module in a
fresh sandbox and checks the assertions on the snapshot: a task whose own solution fails, or whose
assertions do not hold after it, cannot grade anyone, so the tasks stage drops it with the reason.
The judge reuses `assertion_failures` on each trajectory's final state.
"""

from __future__ import annotations

import json
from typing import Any

from sandboxes import provision
from synth.core.errors import ToolError
from synth.context import Context
from synth.core.records import GoldAction, Implementation, StateAssertion, Task, ToolSpec
from tools.executable import ExecutableToolset

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


# ---------------------------------------------------------------- the module's state shape


def shape_problems(initial: dict[str, Any], default: dict[str, Any] | None) -> list[str]:
    """An initial state must use STATE_DEFAULT's top-level keys with the same JSON types."""
    if default is None:
        return []
    problems = [f"initial_state key {k!r} is not in STATE_DEFAULT ({', '.join(sorted(default))})"
                for k in initial if k not in default]
    for key, value in initial.items():
        if key in default and _kind(value) != _kind(default[key]):
            problems.append(f"initial_state.{key} is a {_kind(value)}, STATE_DEFAULT has a {_kind(default[key])}")
    return problems


def _kind(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, (int, float)):
        return "number"
    return {dict: "object", list: "array", str: "string"}.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- gold replay


def parse_arguments(action: GoldAction) -> dict[str, Any]:
    arguments = json.loads(action.arguments or "{}")
    if not isinstance(arguments, dict):
        raise ValueError("arguments must be a JSON object")
    return arguments


async def replay_problems(runtime: ExecutableToolset, task: Task, allowed: set[str]) -> list[str]:
    """Why `task` is not valid on this runtime (reset to its initial state), or [] when it is."""
    if not task.gold_actions:
        return ["no gold actions"]
    if not task.assertions:
        return ["no final-state assertions"]
    await runtime.reset(task.initial_state)
    for n, action in enumerate(task.gold_actions, 1):
        where = f"gold action {n} {action.tool}({action.arguments})"
        if action.tool not in allowed:
            return [f"{where}: not one of the task's tools ({', '.join(sorted(allowed))})"]
        try:
            arguments = parse_arguments(action)
        except ValueError as exc:
            return [f"{where}: bad arguments: {exc}"]
        try:
            outcome = await runtime.call(action.tool, arguments)
        except ToolError as exc:  # the server died on this call: the task cannot be replayed
            return [f"{where}: {exc}"]
        if outcome.is_error:
            return [f"{where} failed: {outcome.text[:300]}"]
    return assertion_failures(await runtime.snapshot(), task.assertions)


async def validate_tasks(ctx: Context, tasks: list[Task], specs: list[ToolSpec], impl: Implementation,
                         allowed: set[str], label: str) -> list[tuple[Task, list[str]]]:
    """Replay every task's gold actions in one fresh sandbox (reset per task): (task, problems) in order."""
    out = []
    labels = {"synth.run": ctx.cfg.name, "synth.gold": label}
    async with provision(ctx.cfg.rollout.sandbox, labels=labels) as sandbox:
        async with ExecutableToolset(specs, sandbox, module=impl.module) as runtime:  # no faults: the solution must work
            for task in tasks:
                out.append((task, await replay_problems(runtime, task, allowed)))
    return out
