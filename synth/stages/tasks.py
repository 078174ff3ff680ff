"""Tasks: for each agent, user goals from simple to complex, with hidden facts and a weighted rubric.

With `tasks.gold`, for an agent whose tools all run for real (a passing Implementation, the rule
the rollout uses), the LLM also writes an initial state, gold actions and final-state assertions; `judges/gold.py` replays
the gold actions in a fresh sandbox and only tasks whose solution works and whose assertions hold
are written (`validated=True`). The others are dropped with their reason (a Rejected error record).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from judges.gold import shape_problems, validate_tasks
from synth.context import Context
from synth.core.errors import Rejected
from synth.core.prompts import render
from synth.core.records import Agent, Criterion, GoldAction, Implementation, StateAssertion, Task, ToolSpec
from synth.core.units import StageStats, Unit, run_units
from synth.stages.tasks_real import draft_real_tasks
from tools.scaffold import read_state_default
from tools.serving import Serving, passed_implementations

Short = Annotated[str, Field(min_length=3, max_length=150)]
DECOYS = "Tools marked (decoy) belong to another service: no task may need them.\n"


class CriterionDraft(BaseModel):
    text: Short
    kind: Literal["essential", "important", "optional", "pitfall"]
    # Clamped, not rejected: llama.cpp's grammar ignores minimum/maximum, and a 0 or a 9 is no reason
    # to lose the whole task list.
    weight: Annotated[int, AfterValidator(lambda w: min(5, max(1, w)))] = Field(description="1 to 5")


class TaskDraft(BaseModel):
    goal: Annotated[str, Field(min_length=5, max_length=300)]
    persona: Short
    user_facts: list[Short] = Field(max_length=3)
    difficulty: Literal["easy", "medium", "hard"]
    rubric: list[CriterionDraft] = Field(min_length=1, max_length=20)


class GoldActionDraft(BaseModel):
    tool: Annotated[str, Field(min_length=1, max_length=64)]
    arguments: Annotated[str, Field(max_length=600)]  # a JSON object as a string: the schema stays simple


class AssertionDraft(BaseModel):
    path: Annotated[str, Field(min_length=1, max_length=120)]
    op: Literal["equals", "exists", "absent", "contains"]
    value: Annotated[str, Field(max_length=300)]


class GoldTaskDraft(TaskDraft):
    initial_state: Annotated[str, Field(max_length=2000)]
    gold_actions: list[GoldActionDraft] = Field(min_length=1, max_length=8)
    assertions: list[AssertionDraft] = Field(min_length=1, max_length=4)


def task_list_model(count: int, gold: bool = False) -> type[BaseModel]:
    """A reply schema whose list lengths match the config, so the model is told how many to write."""
    draft = GoldTaskDraft if gold else TaskDraft

    class TaskList(BaseModel):
        tasks: list[draft] = Field(min_length=1, max_length=count)  # type: ignore[valid-type]

    return TaskList


async def run(ctx: Context) -> StageStats:
    tools = {t.id: t for t in ctx.store.read("tools")}
    serving = Serving(tools, passed_implementations(ctx.store) if ctx.cfg.tasks.gold else {})
    units = [Unit(agent.id, agent) for agent in ctx.store.read("agents")]
    return await run_units(ctx, "tasks", "tasks", units, lambda u: draft_tasks(ctx, u, serving), ctx.cfg.concurrency)


async def draft_tasks(ctx: Context, unit: Unit[Agent], serving: Serving) -> list[Task]:
    """The tasks of one agent: gold ones (replayed before they are kept) when its tools run for real."""
    agent, cfg, tools = unit.payload, ctx.cfg.tasks, serving.tools
    # Real MCP servers with seeded data: the seed, gold actions and assertions (synth/stages/tasks_real.py).
    schema = task_list_model(cfg.per_agent, gold=True)
    if (real := await draft_real_tasks(ctx, unit, serving, schema, _task, DECOYS)) is not None:
        return real
    impl = serving.implementation(agent)
    decoys = set(agent.distractor_tool_ids)
    tool_lines = "\n".join(f"- {tools[i].name}: {tools[i].description}{' (decoy)' if i in decoys else ''}"
                           for i in agent.tool_ids if i in tools)
    values: dict[str, Any] = dict(system_prompt=agent.system_prompt, tools=tool_lines, count=cfg.per_agent,
                                  rubric_items=cfg.rubric_items, decoys=DECOYS if decoys else "")
    if impl is not None:
        default = read_state_default(impl.module)
        shown = json.dumps(default, sort_keys=True) if default is not None else "(not a literal: see the module)"
        values.update(state_default=shown, module=impl.module)
    prompt = render(__file__, "tasks_gold" if impl else "tasks", **values)
    reply = await ctx.llm.structured([{"role": "user", "content": prompt}],
                                     task_list_model(cfg.per_agent, gold=impl is not None),
                                     seed=ctx.seed_for("tasks", unit.id), call="tasks")
    drafts = reply.tasks[: cfg.per_agent]
    tasks = [_task(unit.id, agent, draft, cfg.rubric_items) for draft in drafts]
    if impl is None:
        return tasks
    return await _validated(ctx, unit.id, agent, tasks, drafts, tools, impl)


def _task(unit_id: str, agent: Agent, draft: TaskDraft, rubric_items: int) -> Task:
    return Task(unit=unit_id, agent_id=agent.id, goal=draft.goal, persona=draft.persona, user_facts=draft.user_facts,
                difficulty=draft.difficulty,
                rubric=[Criterion(text=c.text, kind=c.kind, weight=c.weight) for c in draft.rubric[:rubric_items]])


async def _validated(ctx: Context, unit_id: str, agent: Agent, tasks: list[Task], drafts: list[GoldTaskDraft],
                     tools: dict[str, ToolSpec], impl: Implementation) -> list[Task]:
    """Gold tasks whose initial state fits STATE_DEFAULT and whose solution replays; the rest are rejected."""
    default = read_state_default(impl.module)
    candidates: list[tuple[int, Task]] = []
    for n, (task, draft) in enumerate(zip(tasks, drafts), 1):
        try:
            initial = json.loads(draft.initial_state or "{}")
        except ValueError as exc:
            _reject(ctx, unit_id, n, task, [f"initial_state is not JSON: {exc}"])
            continue
        problems = ["initial_state is not a JSON object"] if not isinstance(initial, dict) else shape_problems(initial, default)
        if problems:
            _reject(ctx, unit_id, n, task, problems)
            continue
        candidates.append((n, Task.model_validate({
            **task.model_dump(exclude={"id"}), "initial_state": initial, "validated": True,
            "gold_actions": [GoldAction(tool=a.tool, arguments=a.arguments) for a in draft.gold_actions],
            "assertions": [StateAssertion(path=a.path, op=a.op, value=a.value) for a in draft.assertions],
        })))
    if not candidates:
        return []
    specs = [tools[i] for i in agent.tool_ids if i in tools]
    allowed = {tools[i].name for i in agent.tool_ids if i in tools and i not in agent.distractor_tool_ids}
    labels = ctx.sandbox_labels(**{"synth.gold": unit_id})
    rollout = ctx.cfg.rollout
    results = await validate_tasks(rollout.sandbox, labels, [t for _, t in candidates], specs, impl, allowed,
                                   process=rollout.tool_process, max_result_chars=rollout.tool_result_max_chars)
    kept = []
    for (n, task), (_, problems) in zip(candidates, results):
        if problems:
            _reject(ctx, unit_id, n, task, problems)
        else:
            kept.append(task)
    return kept


def _reject(ctx: Context, unit_id: str, n: int, task: Task, problems: list[str]) -> None:
    ctx.store.error("tasks", unit_id, Rejected(f"task {n} ({task.goal[:60]!r}) dropped: " + "; ".join(problems)))
