"""Evolve synthetic tools: categories -> application domains -> toolsets of MCP tool specs.

Toolsets share one state model so their tools compose. The LLM drafts parameters; the inputSchema
is built here and then validated like any imported schema, and invalid tools are dropped with
their reason.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from synth.errors import ParseError, Rejected
from synth.hashing import content_hash
from synth.pipeline import Context, StageStats, Unit, run_units
from synth.prompts import render
from tools.spec import ToolSpec, schema_problems

Label = Annotated[str, Field(min_length=2, max_length=40)]


class CategoryList(BaseModel):
    categories: list[Label] = Field(min_length=1, max_length=50)


class DomainList(BaseModel):
    domains: list[Label] = Field(min_length=1, max_length=50)


# String caps keep replies inside max_tokens: small models fill whatever room a string is given.
class ParameterDraft(BaseModel):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,30}$")]
    type: Literal["string", "integer", "number", "boolean"]
    description: Annotated[str, Field(max_length=80)]
    required: bool


class ToolDraft(BaseModel):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{2,40}$")]
    description: Annotated[str, Field(min_length=5, max_length=160)]
    parameters: list[ParameterDraft] = Field(min_length=1, max_length=4)


class ToolsetDraft(BaseModel):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{2,40}$")]
    state_model: Annotated[str, Field(max_length=200)]
    tools: list[ToolDraft] = Field(min_length=1, max_length=12)


def toolset_model(count: int) -> type[ToolsetDraft]:
    """The reply schema with room for exactly `count` tools, so the grammar stops the model there."""

    class Toolset(ToolsetDraft):
        tools: list[ToolDraft] = Field(min_length=1, max_length=count)

    return Toolset


class ToolsetPlan(BaseModel):
    category: str
    domain: str
    variant: int


async def evolve_tools(ctx: Context) -> StageStats:
    plans = await plan_toolsets(ctx)
    units = [Unit(content_hash(p.model_dump()), p) for p in plans]
    return await run_units(ctx, "tools", "tools", units, lambda u: draft_toolset(ctx, u), ctx.cfg.concurrency)


async def plan_toolsets(ctx: Context) -> list[ToolsetPlan]:
    """Categories, then domains per category. Cached LLM calls make this free on resume."""
    cfg = ctx.cfg.tools
    reply = await ctx.llm.structured(_ask(render(__file__, "categories", count=cfg.categories)), CategoryList)
    categories = _distinct(reply.categories)[: cfg.categories]

    async def domains_of(category: str) -> list[str]:
        prompt = render(__file__, "domains", category=category, count=cfg.domains_per_category)
        try:
            reply = await ctx.llm.structured(_ask(prompt), DomainList)
        except ParseError as exc:
            ctx.store.error("tools", content_hash(category), exc, raw=exc.raw)
            return []
        return _distinct(reply.domains)[: cfg.domains_per_category]

    domain_lists = await asyncio.gather(*(domains_of(c) for c in categories))
    return [
        ToolsetPlan(category=category, domain=domain, variant=variant)
        for category, domains in zip(categories, domain_lists)
        for domain in domains
        for variant in range(cfg.toolsets_per_domain)
    ]


async def draft_toolset(ctx: Context, unit: Unit[ToolsetPlan]) -> list[ToolSpec]:
    plan = unit.payload
    prompt = render(__file__, "toolset", domain=plan.domain, category=plan.category,
                    count=ctx.cfg.tools.tools_per_toolset, variant=plan.variant + 1)
    draft = await ctx.llm.structured(_ask(prompt), toolset_model(ctx.cfg.tools.tools_per_toolset),
                                     seed=ctx.seed_for("toolset", unit.id))
    specs, seen = [], set()
    for tool in draft.tools[: ctx.cfg.tools.tools_per_toolset]:
        spec = to_spec(tool, draft, plan, unit.id)
        problems = schema_problems(spec) + ([f"duplicate tool name {spec.name!r}"] if spec.name in seen else [])
        if problems:
            ctx.store.error("tools", unit.id, Rejected(f"tool {spec.name!r}: " + "; ".join(problems)),
                            raw=spec.model_dump_json(by_alias=True))
            continue
        seen.add(spec.name)
        specs.append(spec)
    return specs


def to_spec(tool: ToolDraft, toolset: ToolsetDraft, plan: ToolsetPlan, unit: str) -> ToolSpec:
    properties = {p.name: {"type": p.type, "description": p.description} for p in tool.parameters}
    required = sorted({p.name for p in tool.parameters if p.required})
    schema = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    return ToolSpec(
        unit=unit, name=tool.name, description=tool.description, inputSchema=schema, kind="simulated",
        category=plan.category, domain=plan.domain, toolset=toolset.name, toolset_id=unit,
        state_model=toolset.state_model,
    )


def _ask(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def _distinct(labels: list[str]) -> list[str]:
    seen, out = set(), []
    for label in labels:
        key = label.strip().lower()
        if key and key not in seen:
            seen.add(key)
            out.append(label.strip())
    return out
