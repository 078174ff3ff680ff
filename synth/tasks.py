"""Tasks: for each agent, user goals from simple to complex, with hidden facts and a weighted rubric."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from synth.pipeline import Context, StageStats, Unit, run_units
from synth.prompts import render
from synth.records import Agent, Criterion, Task
from tools.spec import ToolSpec

Short = Annotated[str, Field(min_length=3, max_length=150)]


class CriterionDraft(BaseModel):
    text: Short
    kind: Literal["essential", "important", "optional", "pitfall"]
    weight: int = Field(ge=1, le=5)


class TaskDraft(BaseModel):
    goal: Annotated[str, Field(min_length=5, max_length=300)]
    persona: Short
    user_facts: list[Short] = Field(max_length=3)
    difficulty: Literal["easy", "medium", "hard"]
    rubric: list[CriterionDraft] = Field(min_length=1, max_length=20)


def task_list_model(count: int) -> type[BaseModel]:
    """A reply schema whose list lengths match the config, so the model is told how many to write."""

    class TaskList(BaseModel):
        tasks: list[TaskDraft] = Field(min_length=1, max_length=count)

    return TaskList


async def make_tasks(ctx: Context) -> StageStats:
    tools = {t.id: t for t in ctx.store.read("tools")}
    units = [Unit(agent.id, agent) for agent in ctx.store.read("agents")]
    return await run_units(ctx, "tasks", "tasks", units, lambda u: draft_tasks(ctx, u, tools), ctx.cfg.concurrency)


async def draft_tasks(ctx: Context, unit: Unit[Agent], tools: dict[str, ToolSpec]) -> list[Task]:
    agent, cfg = unit.payload, ctx.cfg.tasks
    tool_lines = "\n".join(f"- {tools[i].name}: {tools[i].description}" for i in agent.tool_ids if i in tools)
    prompt = render(__file__, "tasks", system_prompt=agent.system_prompt, tools=tool_lines, count=cfg.per_agent,
                    rubric_items=cfg.rubric_items)
    reply = await ctx.llm.structured([{"role": "user", "content": prompt}],
                                     task_list_model(cfg.per_agent),
                                     seed=ctx.seed_for("tasks", unit.id))
    return [
        Task(unit=unit.id, agent_id=agent.id, goal=draft.goal, persona=draft.persona, user_facts=draft.user_facts,
             difficulty=draft.difficulty,
             rubric=[Criterion(text=c.text, kind=c.kind, weight=c.weight) for c in draft.rubric[: cfg.rubric_items]])
        for draft in reply.tasks[: cfg.per_agent]
    ]
