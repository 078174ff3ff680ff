"""Gold tasks: is a task's reference solution valid? (The assertions themselves: judges/assertions.py.)

A task for an executable toolset carries a gold solution (tool calls) and assertions over the final
state. `validate_tasks` replays each solution from the task's initial state with the real module and
checks the assertions on the snapshot, each task isolated from the others as rollout episodes are (a
pooled sandbox reset between tasks, the rollout's tool process mode): a task whose own solution
fails, or whose assertions do not hold after it, cannot grade anyone, so the tasks stage drops it
with the reason.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import Any

from judges.assertions import assertion_failures
from sandboxes import backend_of, provision
from sandboxes.pool import WarmPool
from synth.core.errors import ToolError
from synth.core.llm import LLM
from synth.core.records import GoldAction, Implementation, Task, ToolSpec
from tools.runtime import ToolRuntime
from tools.server.wire import MAX_RESULT_CHARS
from tools.serving import RealPart, tool_runtime

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


async def replay_problems(runtime: ToolRuntime, task: Task, allowed: set[str]) -> list[str]:
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


async def validate_tasks(sandbox_cfg: Any, labels: dict[str, str], tasks: list[Task], specs: list[ToolSpec],
                         impl: Implementation | None, allowed: set[str], *, process: str = "per_episode",
                         max_result_chars: int = MAX_RESULT_CHARS, real: list[RealPart] | None = None,
                         llm: LLM | None = None) -> list[tuple[Task, list[str]]]:
    """Replay every task's gold actions, one episode each, on a sandbox of `sandbox_cfg` from a pool
    of one (reset between tasks; a fresh sandbox per task where the backend does not pool), tools in
    `process` mode (rollout.tool_process): (task, problems) in order. No faults: the solution must work.
    `real`: the real servers serving some of the tools (tools/serving.py), whose seeded environment
    each task's initial state sets."""
    out = []
    async with AsyncExitStack() as stack:
        pool = None
        if backend_of(sandbox_cfg).pools:
            pool = await stack.enter_async_context(WarmPool(sandbox_cfg, size=1, labels=labels))
        for task in tasks:
            async with (provision(sandbox_cfg, labels=labels, pool=pool) as sandbox,
                        tool_runtime(specs, sandbox, impl=impl, llm=llm, seed=0, process=process,
                                     max_result_chars=max_result_chars, real=real) as runtime):
                out.append((task, await replay_problems(runtime, task, allowed)))
    return out
