"""Tasks for agents whose tools include real MCP servers with a seeded environment (git, filesystem,
memory, sqlite): the LLM writes each task's seed (the initial state), gold actions and final-state
assertions; a seed that does not fit its kind is dropped with the field named, and the rest are
replayed against the real servers in a fresh sandbox (judges/gold.py, the same replay executable
toolsets get). Only tasks whose solution works and whose assertions hold are written
(`validated=True`); the others are dropped with their reason.

Hooked into the tasks stage (synth/stages/tasks.py), which hands it its gold-task reply schema
(the seed is the draft's `initial_state`) and its task maker: `draft_real_tasks` returns None for
agents it does not handle (no real server with an environment), which then get the usual tasks.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from pydantic import BaseModel

from judges.gold import validate_tasks
from judges.user_checks import persona_problems
from synth.context import Context
from synth.core.errors import Rejected
from synth.core.prompts import render
from synth.core.records import Agent, GoldAction, StateAssertion, Task
from synth.core.units import Unit
from tools.launch import with_binds
from tools.serving import RealPart, Serving, passed_implementations


def seeded(parts: list[RealPart]) -> list[RealPart]:
    return [p for p in parts if p.launch.kind is not None]


def keyed(agent_parts: list[RealPart], has_rest: bool) -> bool:
    """Whether the state is an object of part states by toolset name (a routed runtime) or one part's."""
    return len(agent_parts) > 1 or has_rest


async def draft_real_tasks(ctx: Context, unit: Unit[Agent], serving: Serving, schema: type[BaseModel],
                           make_task: Callable[..., Task], decoys_note: str) -> list[Task] | None:
    """The agent's tasks, or None when it has no real server with seeded data. `schema`: the tasks
    stage's gold-task list (goal, persona, facts, initial_state, gold actions, assertions; the rubric
    step writes the rubric afterwards); `make_task(unit_id, agent, draft)`: its Task from a draft."""
    agent, cfg, tools = unit.payload, ctx.cfg.tasks, serving.tools
    parts = serving.real(agent)
    if not seeded(parts):
        return None
    specs = [tools[i] for i in agent.tool_ids if i in tools]
    serving = Serving(tools, passed_implementations(ctx.store))  # the other tools' implementation, if any
    rest = [s for s in specs if s.name not in {t.name for p in parts for t in p.specs}]
    by_key = keyed(parts, bool(rest))
    decoys = set(agent.distractor_tool_ids)
    tool_lines = "\n".join(f"- {s.name}: {s.description[:300]}{' (decoy)' if s.id in decoys else ''}; "
                           f"{json.dumps(s.input_schema.get('properties', {}))[:300]}" for s in specs)
    environments = "\n".join(
        f"- {p.key} ({p.launch.kind.name}): {p.launch.kind.note.format(data=p.launch.kind.data_path())}\n"
        f"  seed example: {json.dumps(p.launch.kind.example)}\n  state after: {p.launch.kind.state_doc}"
        for p in seeded(parts))
    shape = (f"with one key per server ({', '.join(repr(p.key) for p in seeded(parts))}), each holding its seed"
             if by_key else "shaped like the seed example")
    prompt = render(__file__, "tasks_real", system_prompt=agent.system_prompt, tools=tool_lines,
                    decoys=decoys_note if decoys else "", environments=environments, count=cfg.per_agent,
                    seed_shape=shape)
    reply = await ctx.llm.structured([{"role": "user", "content": prompt}], schema, seed=ctx.seed_for("tasks", unit.id))
    candidates: list[tuple[int, Task]] = []
    for n, draft in enumerate(reply.tasks[: cfg.per_agent], 1):  # type: ignore[attr-defined]
        task = make_task(unit.id, agent, draft)
        if problems := persona_problems(draft.persona):
            _reject(ctx, unit.id, n, task, problems)
            continue
        try:
            initial = _initial_state(draft.initial_state, parts, by_key)
        except ValueError as exc:
            _reject(ctx, unit.id, n, task, [str(exc)])
            continue
        candidates.append((n, Task.model_validate({
            **task.model_dump(exclude={"id"}), "initial_state": initial, "validated": True,
            "gold_actions": [GoldAction(tool=a.tool, arguments=a.arguments) for a in draft.gold_actions],
            "assertions": [StateAssertion(path=a.path, op=a.op, value=a.value) for a in draft.assertions],
        })))
    if not candidates:
        return []
    allowed = {s.name for s in specs if s.id not in decoys}
    sandbox = with_binds(ctx.cfg.rollout.sandbox, [p.launch for p in parts])
    results = await validate_tasks(sandbox, ctx.sandbox_labels(**{"synth.gold": unit.id}), [t for _, t in candidates],
                                   specs, serving.rest_implementation(agent), allowed, real=parts,
                                   llm=ctx.llm if rest else None, process=ctx.cfg.rollout.tool_process,
                                   max_result_chars=ctx.cfg.rollout.tool_result_max_chars, known=agent.system_prompt)
    kept = []
    for (n, _), (task, problems) in zip(candidates, results):
        if problems:
            _reject(ctx, unit.id, n, task, problems)
        else:
            kept.append(task)
    return kept


def _initial_state(text: str, parts: list[RealPart], by_key: bool) -> dict[str, Any]:
    """The task's initial state from the drafted seed: each seeded part's seed validated (defaults filled)."""
    try:
        seed = json.loads(text or "{}")
    except ValueError as exc:
        raise ValueError(f"seed is not JSON: {exc}") from None
    if not isinstance(seed, dict):
        raise ValueError("seed is not a JSON object")
    if not by_key:
        return parts[0].launch.kind.validate_seed(seed)  # type: ignore[union-attr]
    state = {}
    for part in seeded(parts):
        state[part.key] = part.launch.kind.validate_seed(seed.get(part.key) or {})  # type: ignore[union-attr]
    return state


def _reject(ctx: Context, unit_id: str, n: int, task: Task, problems: list[str]) -> None:
    ctx.store.error("tasks", unit_id, Rejected(f"task {n} ({task.goal[:60]!r}) dropped: " + "; ".join(problems)))
