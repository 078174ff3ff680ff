"""Agents: a toolset sampled from the pool and a fresh system prompt (role, policy, style)."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated

from pydantic import BaseModel, Field

from synth.hashing import content_hash
from synth.pipeline import Context, StageStats, Unit, run_units
from synth.prompts import render
from synth.records import Agent
from tools.spec import ToolSpec


class AgentDraft(BaseModel):
    name: Annotated[str, Field(min_length=2, max_length=40)]
    role: Annotated[str, Field(min_length=5, max_length=200)]
    policy: list[Annotated[str, Field(min_length=3, max_length=150)]] = Field(min_length=1, max_length=4)
    style: Annotated[str, Field(min_length=2, max_length=100)]


class AgentPlan(BaseModel):
    toolset_id: str
    variant: int
    tools: list[ToolSpec]


def toolsets(specs: list[ToolSpec]) -> dict[str, list[ToolSpec]]:
    groups: dict[str, list[ToolSpec]] = defaultdict(list)
    for spec in specs:
        groups[spec.toolset_id].append(spec)
    return dict(groups)


async def make_agents(ctx: Context) -> StageStats:
    plans = [
        AgentPlan(toolset_id=toolset_id, variant=variant, tools=tools)
        for toolset_id, tools in toolsets(ctx.store.read("tools")).items()
        for variant in range(ctx.cfg.agents.per_toolset)
    ]
    units = [Unit(content_hash([p.toolset_id, p.variant, [t.id for t in p.tools]]), p) for p in plans]
    return await run_units(ctx, "agents", "agents", units, lambda u: draft_agent(ctx, u), ctx.cfg.concurrency)


async def draft_agent(ctx: Context, unit: Unit[AgentPlan]) -> list[Agent]:
    tools = unit.payload.tools
    tool_lines = "\n".join(f"- {t.name}: {t.description}" for t in tools)
    prompt = render(__file__, "agent", domain=tools[0].domain, tools=tool_lines, variant=unit.payload.variant + 1)
    draft = await ctx.llm.structured([{"role": "user", "content": prompt}], AgentDraft,
                                     seed=ctx.seed_for("agent", unit.id))
    system_prompt = render(__file__, "agent_system", name=draft.name, role=draft.role, style=draft.style,
                           policy="\n".join(f"- {rule}" for rule in draft.policy))
    return [Agent(unit=unit.id, toolset_id=unit.payload.toolset_id, toolset=tools[0].toolset, domain=tools[0].domain,
                  tool_ids=[t.id for t in tools], name=draft.name, system_prompt=system_prompt)]
