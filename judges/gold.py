"""Gold tasks: ground truth by construction. (Assertions: judges/assertions.py; whole-state match:
judges/state_match.py.)

A task for an executable toolset carries a gold solution (tool calls) and assertions over the final
state. `validate_tasks` replays each solution from the task's initial state with the real module,
each replay isolated as rollout episodes are (a pooled sandbox reset between replays, the rollout's
tool process mode), and keeps a task only when
- every gold call succeeds and every value it passes can be known: it is in the goal, the user's
  facts, the initial state or an earlier gold call's result (else no agent could reproduce it);
- its assertions do NOT all hold on the initial state (a conversation that does nothing fails it),
  and all hold after the replay.
A second replay with another seed finds what may differ between two correct runs (generated ids,
timestamps: the free paths). The task then stores the replay's whole final state
(`gold_final_state`), its free paths, and assertions derived from the gold diff beside the
writer's, so a trajectory is checked against the whole state and not only 1-4 written assertions.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import Any, Iterator

from judges.assertions import assertion_failures
from judges.state_match import derive_assertions, free_paths_between, timestamp_paths
from sandboxes import backend_of, provision
from sandboxes.pool import WarmPool
from synth.core.errors import ToolError
from synth.core.llm import LLM
from synth.core.records import GoldAction, Implementation, StateAssertion, Task, ToolSpec
from tools.runtime import ToolRuntime
from tools.server.wire import MAX_RESULT_CHARS
from tools.serving import RealPart, tool_runtime

DO_NOTHING_PASSES = "its assertions already hold on the initial state: a conversation that does nothing would pass"
REPLAY_SEEDS = (0, 1)  # two replays: where their final states differ is free
DERIVED_LIMIT = 8  # assertions derived from the gold diff, beside the writer's

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


class Replay:
    """One replay of a task's gold actions: the state before and after, each call's result, or why it failed."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.initial: dict[str, Any] = {}
        self.final: dict[str, Any] = {}
        self.results: list[str] = []


async def replay(runtime: ToolRuntime, task: Task, allowed: set[str]) -> Replay:
    """The gold actions of `task` on `runtime`, reset to its initial state."""
    out = Replay()
    await runtime.reset(task.initial_state)
    out.initial = await runtime.snapshot()  # STATE_DEFAULT filled in: what a do-nothing episode ends with
    for n, action in enumerate(task.gold_actions, 1):
        where = f"gold action {n} {action.tool}({action.arguments})"
        if action.tool not in allowed:
            out.problems.append(f"{where}: not one of the task's tools ({', '.join(sorted(allowed))})")
            return out
        try:
            arguments = parse_arguments(action)
        except ValueError as exc:
            out.problems.append(f"{where}: bad arguments: {exc}")
            return out
        try:
            outcome = await runtime.call(action.tool, arguments)
        except ToolError as exc:  # the server died on this call: the task cannot be replayed
            out.problems.append(f"{where}: {exc}")
            return out
        if outcome.is_error:
            out.problems.append(f"{where} failed: {outcome.text[:300]}")
            return out
        out.results.append(outcome.text)
    out.final = await runtime.snapshot()
    return out


def replay_problems(task: Task, first: Replay, specs: list[ToolSpec], known: str = "") -> list[str]:
    """Why the first replay does not make `task` a gold task, or []. `known`: what the agent is told
    besides the task (its system prompt: e.g. where a real server's data is)."""
    if first.problems:
        return first.problems
    if not assertion_failures(first.initial, task.assertions):
        return [DO_NOTHING_PASSES]
    problems = assertion_failures(first.final, task.assertions)
    return problems or unknowable_arguments(task, first.results, specs, known)


def unknowable_arguments(task: Task, results: list[str], specs: list[ToolSpec], known: str = "") -> list[str]:
    """Gold argument values no agent could know: in neither the goal, the user's facts, the initial
    state, `known` (the agent's system prompt), an earlier gold result nor the tool's enum. (Booleans, numbers below 10 and one-letter strings pass.)"""
    known = " ".join([task.goal, *task.user_facts, json.dumps(task.initial_state, ensure_ascii=False), known]).lower()
    enums = {s.name: s.input_schema for s in specs}
    problems = []
    for n, action in enumerate(task.gold_actions, 1):
        arguments = parse_arguments(action)
        for key, value in _leaves(arguments, action.tool):
            if isinstance(value, bool) or value is None or _in_enum(enums.get(action.tool, {}), key, value):
                continue
            text = (value if isinstance(value, str) else json.dumps(value)).strip().lower()
            if len(text) < 2 or text in known:
                continue
            problems.append(f"gold action {n} {action.tool}: {key}={json.dumps(value)} is not in the goal, the user's "
                            "facts, the initial state or the agent's prompt: no agent could know it (put it in user_facts)")
        known += " " + (results[n - 1] if n - 1 < len(results) else "").lower()
    return problems


def _leaves(value: Any, key: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, str(k))
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item, key)
    else:
        yield key, value


def _in_enum(schema: dict[str, Any], key: str, value: Any) -> bool:
    prop = (schema.get("properties") or {}).get(key) or {}
    options = prop.get("enum") or (prop.get("items") or {}).get("enum") or []
    return value in options


def gold_task(task: Task, first: Replay, second: Replay) -> Task | list[str]:
    """The task with its ground truth stored: the whole final state, the free paths (where the two
    replays differ, and changed values that read as the current time), and derived assertions."""
    if second.problems:  # passed once, failed with another seed: the solution depends on luck
        return [f"the gold replay with another seed failed: {p}" for p in second.problems]
    free = free_paths_between(first.final, second.final)
    free = sorted(set(free) | set(timestamp_paths(first.initial, first.final, free)))
    written = {(a.path, a.op) for a in task.assertions}
    derived = [a for a in derive_assertions(first.initial, first.final, free, DERIVED_LIMIT)
               if (a.path, a.op) not in written and not _under_free(a, free)]
    return Task.model_validate({**task.model_dump(exclude={"id"}), "gold_final_state": first.final, "free_paths": free,
                                "assertions": [a.model_dump() for a in [*task.assertions, *derived]]})


def _under_free(assertion: StateAssertion, free: list[str]) -> bool:
    parts = assertion.path.split(".")
    return any(all(a in ("*", b) for a, b in zip(p.split("."), parts)) and len(p.split(".")) <= len(parts)
               for p in free)


async def validate_tasks(sandbox_cfg: Any, labels: dict[str, str], tasks: list[Task], specs: list[ToolSpec],
                         impl: Implementation | None, allowed: set[str], *, process: str = "per_episode",
                         max_result_chars: int = MAX_RESULT_CHARS, real: list[RealPart] | None = None,
                         llm: LLM | None = None, known: str = "") -> list[tuple[Task, list[str]]]:
    """Replay every task's gold actions twice with different seeds, each replay one episode on a
    sandbox of `sandbox_cfg` from a pool of one (reset between episodes; a fresh sandbox each where
    the backend does not pool), tools in `process` mode (rollout.tool_process): (the task with its
    ground truth, []) or (the task, problems), in order. No faults: the solution must work.
    `real`: the real servers serving some of the tools (tools/serving.py), whose seeded environment
    each task's initial state sets; `llm` simulates the tools neither a module nor a server serves;
    `known`: what the agent is told besides the task (its system prompt)."""
    replays: list[list[Replay]] = [[] for _ in tasks]
    async with AsyncExitStack() as stack:
        pool = None
        if backend_of(sandbox_cfg).pools:
            pool = await stack.enter_async_context(WarmPool(sandbox_cfg, size=1, labels=labels))
        for seed in REPLAY_SEEDS:
            for n, task in enumerate(tasks):
                if seed != REPLAY_SEEDS[0] and replay_problems(task, replays[n][0], specs, known):
                    continue  # failed the first replay: no second one needed
                async with (provision(sandbox_cfg, labels=labels, pool=pool) as sandbox,
                            tool_runtime(specs, sandbox, impl=impl, llm=llm, seed=seed, process=process,
                                         max_result_chars=max_result_chars, real=real) as runtime):
                    replays[n].append(await replay(runtime, task, allowed))
    out: list[tuple[Task, list[str]]] = []
    for task, runs in zip(tasks, replays):
        problems = ["no gold actions"] if not task.gold_actions else ["no final-state assertions"] \
            if not task.assertions else replay_problems(task, runs[0], specs, known)
        if problems:
            out.append((task, problems))
            continue
        made = gold_task(task, runs[0], runs[1])
        out.append((task, made) if isinstance(made, list) else (made, []))
    return out
