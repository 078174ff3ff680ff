"""Tasks: for each agent, user goals from simple to complex with hidden facts, a state to start from,
checks on the state it ends in, and a rubric.

One request writes an agent's tasks; then each task's state is checked and each kept task gets its
rubric (synth/stages/rubrics.py, one request per task). Two kinds of task:
- gold (`tasks.gold`, for an agent whose tools all run for real: a passing Implementation, the rule
  the rollout uses): an initial state in STATE_DEFAULT's shape, gold actions and assertions;
  `judges/gold.py` replays the gold actions in a fresh sandbox, twice, and keeps the task only when
  its assertions fail on the initial state and hold after the replay; the replay's whole final
  state and free paths are stored (`validated=True`);
- simulated (`tasks.world`): a seeded world of records, the task's and distractors
  (synth/stages/tasks_world.py), and assertions for tasks that change it.
A dropped task is a Rejected error record naming each problem; a rubric that fails validation is
kept with its problems on the task (`rubric_problems`).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from judges.gold import shape_problems, validate_tasks
from judges.user_checks import persona_problems
from synth.context import Context
from synth.core.errors import ParseError, Rejected
from synth.core.prompts import render
from synth.core.records import Agent, GoldAction, Implementation, StateAssertion, Task, ToolSpec
from synth.core.units import StageStats, Unit, run_units
from synth.stages.rubrics import write_rubric
from synth.stages.tasks_real import draft_real_tasks
from synth.stages.tasks_world import (assertion_problems, build_world, missing_ids, record_model, world_collections,
                                      world_problems)
from tools.scaffold import read_state_default
from tools.serving import Serving, passed_implementations

Short = Annotated[str, Field(min_length=3, max_length=150)]
TOKENS_PER_TASK = {"plain": 150, "world": 500, "gold": 700}  # a whole task list must fit in one reply
# (and in llm.timeout_s: the 135M model fills every string to its maxLength, at ~15 tokens/s here)
DECOYS = "Tools marked (decoy) belong to another service: no task may need them.\n"


class TaskDraft(BaseModel):
    goal: Annotated[str, Field(min_length=5, max_length=300)]
    persona: Short
    user_facts: list[Short] = Field(max_length=3)
    difficulty: Literal["easy", "medium", "hard"]


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


def task_list_model(count: int, kind: Literal["plain", "world", "gold"] = "plain",
                    collections: list[str] | None = None) -> type[BaseModel]:
    """A reply schema whose list lengths match the config, so the model is told how many to write."""
    draft: type[BaseModel] = GoldTaskDraft if kind == "gold" else TaskDraft
    if kind == "world":
        record = record_model(collections or [])

        class WorldTaskDraft(TaskDraft):
            # llama.cpp's grammar writes keys in alphabetical order: world_checks after the world.
            world: list[record] = Field(min_length=2, max_length=4)  # type: ignore[valid-type]
            world_checks: list[AssertionDraft] = Field(max_length=4)

        draft = WorldTaskDraft

    class TaskList(BaseModel):
        tasks: list[draft] = Field(min_length=1, max_length=count)  # type: ignore[valid-type]

    return TaskList


async def run(ctx: Context) -> StageStats:
    tools = {t.id: t for t in ctx.store.read("tools")}
    serving = Serving(tools, passed_implementations(ctx.store))  # the rollout's choice: real or simulated tools
    units = [Unit(agent.id, agent) for agent in ctx.store.read("agents")]
    stats = await run_units(ctx, "tasks", "tasks", units, lambda u: draft_tasks(ctx, u, serving), ctx.cfg.concurrency)
    tasks = ctx.store.read("tasks")
    stats.summary.update(gold=sum(t.validated for t in tasks), seeded_world=sum(bool(t.initial_state) for t in tasks),
                         rubric_rejected=sum(bool(t.rubric_problems) for t in tasks))
    return stats


async def draft_tasks(ctx: Context, unit: Unit[Agent], serving: Serving) -> list[Task]:
    """The tasks of one agent: drafted, their states checked (gold ones replayed), then their rubrics."""
    agent, cfg, tools = unit.payload, ctx.cfg.tasks, serving.tools
    specs = [tools[i] for i in agent.tool_ids if i in tools]
    # Real MCP servers with seeded data: the seed, gold actions and assertions (synth/stages/tasks_real.py).
    real = await draft_real_tasks(ctx, unit, serving, task_list_model(cfg.per_agent, "gold"), _task, DECOYS)
    if real is not None:
        return await _with_rubrics(ctx, unit, agent, specs, real)
    impl = serving.implementation(agent)  # None: the rollout simulates this agent's tools
    kind = ("gold" if cfg.gold else "plain") if impl else "world" if cfg.world else "plain"
    decoys = set(agent.distractor_tool_ids)
    tool_lines = "\n".join(f"- {s.name}: {s.description}{' (decoy)' if s.id in decoys else ''}" for s in specs)
    collections = world_collections([s for s in specs if s.id not in decoys])
    values: dict[str, Any] = dict(system_prompt=agent.system_prompt, tools=tool_lines, count=cfg.per_agent,
                                  decoys=DECOYS if decoys else "", collections=", ".join(collections))
    if kind == "gold":
        default = read_state_default(impl.module)
        shown = json.dumps(default, sort_keys=True) if default is not None else "(not a literal: see the module)"
        values.update(state_default=shown, module=impl.module)
    prompt = render(__file__, {"gold": "tasks_gold", "world": "tasks_world", "plain": "tasks"}[kind], **values)
    reply = await ctx.llm.structured([{"role": "user", "content": prompt}],
                                     task_list_model(cfg.per_agent, kind, collections),
                                     seed=ctx.seed_for("tasks", unit.id),
                                     max_tokens=max(ctx.cfg.llm.max_tokens, 100 + TOKENS_PER_TASK[kind] * cfg.per_agent))
    drafts = reply.tasks[: cfg.per_agent]
    if kind == "gold":
        tasks = await _gold(ctx, unit.id, agent, drafts, specs, impl)  # type: ignore[arg-type]
    elif kind == "world":
        tasks = _seeded(ctx, unit.id, agent, drafts, collections)
    else:
        tasks = _plain(ctx, unit.id, agent, drafts)
    return await _with_rubrics(ctx, unit, agent, specs, tasks)


def _plain(ctx: Context, unit_id: str, agent: Agent, drafts: list[TaskDraft]) -> list[Task]:
    """Plain tasks; as with every kind, a persona that describes the assistant rejects its task."""
    kept = []
    for n, draft in enumerate(drafts, 1):
        task = _task(unit_id, agent, draft)
        if problems := persona_problems(draft.persona):
            _reject(ctx, unit_id, n, task, problems)
        else:
            kept.append(task)
    return kept


async def _with_rubrics(ctx: Context, unit: Unit[Agent], agent: Agent, specs: list[ToolSpec],
                        tasks: list[Task]) -> list[Task]:
    """The rubric step (synth/stages/rubrics.py) on each task that passed its state checks. A task whose
    writer gave no parseable rubric, even after the repair round, is rejected with the parse error; the
    agent's other tasks stay."""
    kept = []
    for n, task in enumerate(tasks):
        try:
            kept.append(await write_rubric(ctx.llm, ctx.cfg.tasks, agent, specs, task,
                                           seed=ctx.seed_for("rubric", unit.id, n), max_tokens=ctx.cfg.llm.max_tokens))
        except ParseError as exc:
            _reject(ctx, unit.id, n + 1, task, [f"no valid rubric reply: {exc}"])
    return kept


def _task(unit_id: str, agent: Agent, draft: TaskDraft, **fields: Any) -> Task:
    return Task(unit=unit_id, agent_id=agent.id, goal=draft.goal, persona=draft.persona, user_facts=draft.user_facts,
                difficulty=draft.difficulty, rubric=[], **fields)


def _assertions(drafts: list[AssertionDraft]) -> list[StateAssertion]:
    return [StateAssertion(path=a.path, op=a.op, value=a.value) for a in drafts]


def _seeded(ctx: Context, unit_id: str, agent: Agent, drafts: list[Any], collections: list[str]) -> list[Task]:
    """Tasks on a seeded world that passes its checks (tasks_world.py); the rest are rejected."""
    kept = []
    for n, draft in enumerate(drafts, 1):
        world, problems = build_world(draft.world)
        task = _task(unit_id, agent, draft, initial_state=world, assertions=_assertions(draft.world_checks))
        problems += world_problems(world, [draft.goal, *draft.user_facts]) + persona_problems(draft.persona)
        problems += assertion_problems(world, task.assertions, collections)
        if problems:
            _reject(ctx, unit_id, n, task, problems)
        else:
            kept.append(task)
    return kept


async def _gold(ctx: Context, unit_id: str, agent: Agent, drafts: list[GoldTaskDraft], specs: list[ToolSpec],
                impl: Implementation) -> list[Task]:
    """Gold tasks whose initial state fits STATE_DEFAULT and that are ground truth by construction
    (judges/gold.py); the rest are rejected."""
    default = read_state_default(impl.module)
    candidates: list[tuple[int, Task]] = []
    for n, draft in enumerate(drafts, 1):
        plain = _task(unit_id, agent, draft)
        try:
            initial = json.loads(draft.initial_state or "{}")
        except ValueError as exc:
            _reject(ctx, unit_id, n, plain, [f"initial_state is not JSON: {exc}"])
            continue
        problems = ["initial_state is not a JSON object"] if not isinstance(initial, dict) else shape_problems(initial, default)
        problems += [f"the goal or the user's facts mention {i!r}, which is not in the initial state"
                     for i in missing_ids(initial, [draft.goal, *draft.user_facts])] if not problems else []
        problems += persona_problems(draft.persona)
        if problems:
            _reject(ctx, unit_id, n, plain, problems)
            continue
        candidates.append((n, _task(unit_id, agent, draft, initial_state=initial, validated=True,
                                    gold_actions=[GoldAction(tool=a.tool, arguments=a.arguments) for a in draft.gold_actions],
                                    assertions=_assertions(draft.assertions))))
    if not candidates:
        return []
    allowed = {s.name for s in specs if s.id not in agent.distractor_tool_ids}
    labels = ctx.sandbox_labels(**{"synth.gold": unit_id})
    rollout = ctx.cfg.rollout
    results = await validate_tasks(rollout.sandbox, labels, [t for _, t in candidates], specs, impl, allowed,
                                   process=rollout.tool_process, max_result_chars=rollout.tool_result_max_chars,
                                   known=agent.system_prompt)
    kept = []
    for (n, _), (task, problems) in zip(candidates, results):
        if problems:
            _reject(ctx, unit_id, n, task, problems)
        else:
            kept.append(task)
    return kept


def _reject(ctx: Context, unit_id: str, n: int, task: Task, problems: list[str]) -> None:
    named = "; ".join(dict.fromkeys(problems))  # each problem once, however many records repeat it
    ctx.store.error("tasks", unit_id, Rejected(f"task {n} ({task.goal[:60]!r}) dropped: {named}"))
