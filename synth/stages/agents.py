"""Agents: tools sampled from the pool and a fresh system prompt (role, policy, style).

Sampling strategies (`agents.strategies`), each giving `per_toolset` agents per toolset:
- single: one toolset;
- mixed: the toolset plus every tool of a toolset from another domain;
- distractors: the toolset plus 1-2 decoy tools of another domain that no task needs (recorded on
  `Agent.distractor_tool_ids`, so tasks and checks know them).
Choices are seeded by (run seed, strategy, toolset, variant): reruns sample the same agents.

All variants of one (strategy, toolset) are one unit of work, so near-duplicates can be dropped
deterministically: a variant whose drafted persona has a token Jaccard >= `near_duplicate_jaccard`
with an earlier variant over the same toolsets is dropped with a Rejected error record.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import defaultdict
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from synth.context import Context
from synth.core.errors import Rejected
from synth.core.hashing import content_hash
from synth.core.prompts import render
from synth.core.records import Agent, ToolSpec
from synth.core.units import StageStats, Unit, run_units
from tools.serving import environment_notes

Strategy = Literal["single", "mixed", "distractors"]
Rule = Annotated[str, Field(min_length=3, max_length=150)]


class AgentDraft(BaseModel):
    name: Annotated[str, Field(min_length=2, max_length=40)]
    role: Annotated[str, Field(min_length=5, max_length=200)]
    must: list[Rule] = Field(min_length=1, max_length=3)
    must_not: list[Rule] = Field(min_length=1, max_length=3)
    ask_user_when: Annotated[str, Field(min_length=3, max_length=150)]
    style: Annotated[str, Field(min_length=2, max_length=100)]

    def text(self) -> str:
        """What the LLM wrote (not the template around it), for the near-duplicate check."""
        return " ".join([self.name, self.role, *self.must, *self.must_not, self.ask_user_when, self.style])


class AgentPlan(BaseModel):
    strategy: Strategy = "single"
    toolset_id: str
    variant: int
    tools: list[ToolSpec]
    toolset_ids: list[str] = Field(default_factory=list)
    distractor_ids: list[str] = Field(default_factory=list)

    @property
    def unit_id(self) -> str:
        if self.strategy == "single":  # the id runs made before strategies existed used
            return content_hash([self.toolset_id, self.variant, [t.id for t in self.tools]])
        return content_hash([self.strategy, self.toolset_id, self.variant, [t.id for t in self.tools]])


def toolsets(specs: list[ToolSpec]) -> dict[str, list[ToolSpec]]:
    groups: dict[str, list[ToolSpec]] = defaultdict(list)
    for spec in specs:
        groups[spec.toolset_id].append(spec)
    return dict(groups)


def plan_agent(groups: dict[str, list[ToolSpec]], toolset_id: str, strategy: Strategy, variant: int,
               seed: int) -> AgentPlan | None:
    """The tools of one agent; None when the strategy needs another domain and there is none."""
    own = groups[toolset_id]
    if strategy == "single":
        return AgentPlan(toolset_id=toolset_id, variant=variant, tools=own, toolset_ids=[toolset_id])
    others = sorted(t for t, specs in groups.items() if specs[0].domain != own[0].domain)
    if not others:
        return None
    rng = random.Random(seed)
    partner = rng.choice(others)
    if strategy == "mixed":
        return AgentPlan(strategy=strategy, toolset_id=toolset_id, variant=variant, tools=own + groups[partner],
                         toolset_ids=[toolset_id, partner])
    pool = sorted(groups[partner], key=lambda t: t.id)
    decoys = rng.sample(pool, min(len(pool), rng.choice([1, 2])))
    tools = own + decoys
    rng.shuffle(tools)  # decoys are not always last
    return AgentPlan(strategy=strategy, toolset_id=toolset_id, variant=variant, tools=tools,
                     toolset_ids=[toolset_id, partner], distractor_ids=[t.id for t in decoys])


def plan_agents(ctx: Context, specs: list[ToolSpec]) -> list[list[AgentPlan]]:
    """Plans grouped by (strategy, toolset), variants in order: one group is one unit of work."""
    groups = toolsets(specs)
    cfg = ctx.cfg.agents
    out = []
    for strategy in cfg.strategies:
        for toolset_id in groups:
            plans = [plan_agent(groups, toolset_id, strategy, variant, ctx.seed_for("agents", strategy, toolset_id, variant))
                     for variant in range(cfg.per_toolset)]
            if any(p is None for p in plans):
                ctx.store.error("agents", content_hash([strategy, toolset_id]), Rejected(
                    f"{strategy} agents for toolset {groups[toolset_id][0].toolset!r}: no toolset of another domain"))
                continue
            out.append(plans)  # type: ignore[arg-type]
    return out


async def run(ctx: Context) -> StageStats:
    # The unit id is the first variant's: it is always kept (nothing comes before it), so resume
    # finds it among the records, and runs made before grouping skip the same work.
    units = [Unit(plans[0].unit_id, plans) for plans in plan_agents(ctx, ctx.store.read("tools"))]
    return await run_units(ctx, "agents", "agents", units, lambda u: draft_group(ctx, u), ctx.cfg.concurrency)


async def draft_group(ctx: Context, unit: Unit[list[AgentPlan]]) -> list[Agent]:
    drafts = await asyncio.gather(*(draft_persona(ctx, plan) for plan in unit.payload))
    kept: list[tuple[AgentPlan, AgentDraft]] = []
    for plan, draft in zip(unit.payload, drafts):
        similar = [(jaccard(d.text(), draft.text()), earlier) for earlier, d in kept
                   if set(earlier.toolset_ids) == set(plan.toolset_ids)]
        score, twin = max(similar, key=lambda s: s[0], default=(0.0, None))
        if twin is not None and score >= ctx.cfg.agents.near_duplicate_jaccard:
            ctx.store.error("agents", plan.unit_id, Rejected(
                f"near-duplicate agent {draft.name!r} (variant {plan.variant + 1}) of variant {twin.variant + 1}: "
                f"token Jaccard {score:.2f}"))
            continue
        kept.append((plan, draft))
    return [to_agent(plan, draft) for plan, draft in kept]


async def draft_persona(ctx: Context, plan: AgentPlan) -> AgentDraft:
    # Decoys are left out of the persona prompt: the agent is for its own domain, the decoys just sit there.
    shown = [t for t in plan.tools if t.id not in plan.distractor_ids]
    domains = " and ".join(dict.fromkeys(t.domain for t in shown))
    prompt = render(__file__, "agent", domain=domains, tools="\n".join(f"- {t.name}: {t.description}" for t in shown),
                    variant=plan.variant + 1)
    return await ctx.llm.structured([{"role": "user", "content": prompt}], AgentDraft,
                                    seed=ctx.seed_for("agent", plan.unit_id))


def to_agent(plan: AgentPlan, draft: AgentDraft) -> Agent:
    policy = [f"- Always: {rule}" for rule in draft.must] + [f"- Never: {rule}" for rule in draft.must_not]
    system_prompt = render(__file__, "agent_system", name=draft.name, role=draft.role, style=draft.style,
                           policy="\n".join(policy), ask_user_when=draft.ask_user_when)
    if notes := environment_notes(plan.tools):  # real servers: where their data is (the repository's path)
        system_prompt += "\n\nYour environment:\n" + "\n".join(f"- {n}" for n in notes)
    first = next(t for t in plan.tools if t.toolset_id == plan.toolset_id)
    names = " + ".join(dict.fromkeys(t.toolset for t in plan.tools if t.id not in plan.distractor_ids))
    return Agent(unit=plan.unit_id, toolset_id=plan.toolset_id, toolset=names, domain=first.domain,
                 tool_ids=[t.id for t in plan.tools], name=draft.name, system_prompt=system_prompt,
                 strategy=plan.strategy, toolset_ids=plan.toolset_ids if plan.strategy != "single" else [],
                 distractor_tool_ids=plan.distractor_ids)


def jaccard(a: str, b: str) -> float:
    """Token-set Jaccard similarity (lower-cased words): cheap, deterministic, good at catching re-phrasings."""
    ta, tb = set(re.findall(r"\w+", a.lower())), set(re.findall(r"\w+", b.lower()))
    return len(ta & tb) / len(ta | tb) if ta | tb else 1.0
