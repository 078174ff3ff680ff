"""Evolve synthetic tools: categories -> application domains -> toolsets of MCP tool specs (the tools
stage, synth/stages/tools.py, runs it one toolset per unit).

Toolsets share one state model so their tools compose. The LLM drafts parameters; the inputSchema
is built here and then validated like any imported schema, and invalid tools are dropped with
their reason.

Steering: the categories and domains prompts list the labels the imported (real) tools already
cover and ask for far ones; the toolset prompt names the imported tools nearest to its domain. Only
imported tools steer, never this run's own output, so a resumed run sends the very same prompts
(cache hits, the same plan).

Near duplicates (tools.near_duplicate_threshold): units draft concurrently but decide in plan
order, each against the pool as it stood at stage start plus every tool kept by earlier units of
this pass. A resumed run sees the earlier units' tools in tools.jsonl instead, so it decides alike.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Annotated, Any, Literal

import numpy as np

from pydantic import BaseModel, Field, WithJsonSchema

from synth.core.errors import ParseError, Rejected
from synth.core.hashing import content_hash, derive_seed
from synth.core.llm import LLM
from synth.core.prompts import render
from synth.core.records import ToolSpec
from synth.core.store import RunStore
from synth.core.units import Unit
from tools.config import ToolsConfig
from tools.diversity import Embedder, get_embedder, near_duplicates, nearest, tool_text
from tools.names import PARAMETER_NAME, TOOL_NAME, NameRule, Repair, snake_case
from tools.spec import schema_problems

MAX_COVERED = 30  # labels listed in a steering prompt: enough to steer, short enough for small models
NEAREST_TOOLS = 8

Label = Annotated[str, Field(min_length=2, max_length=40)]


class CategoryList(BaseModel):
    categories: list[Label] = Field(min_length=1, max_length=50)


class DomainList(BaseModel):
    domains: list[Label] = Field(min_length=1, max_length=50)


def _identifier(rule: NameRule) -> Any:
    """A name field: the schema sent to the model asks for the pattern (a grammar-constrained server
    enforces it), but a reply that breaks it still parses, so `_draft` can repair the name to
    snake_case (tools/names.py) instead of losing the whole toolset to a failed repair round."""
    return Annotated[str, Field(min_length=1, max_length=80),
                     WithJsonSchema({"type": "string", "pattern": rule.pattern})]


ToolName = _identifier(TOOL_NAME)
ParameterName = _identifier(PARAMETER_NAME)


# String caps keep replies inside max_tokens: small models fill whatever room a string is given.
class ParameterDraft(BaseModel):
    name: ParameterName
    type: Literal["string", "integer", "number", "boolean"]
    description: Annotated[str, Field(max_length=80)]
    required: bool


class ToolDraft(BaseModel):
    name: ToolName
    description: Annotated[str, Field(min_length=5, max_length=160)]
    parameters: list[ParameterDraft] = Field(min_length=1, max_length=4)


class ToolsetDraft(BaseModel):
    name: ToolName
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


def units_of(plans: list[ToolsetPlan]) -> list[Unit[ToolsetPlan]]:
    """One unit of work per planned toolset; its id is the plan's content hash (and the toolset's id)."""
    return [Unit(content_hash(p.model_dump()), p) for p in plans]


def embeddings_section(cfg: ToolsConfig, embedder: Embedder | None) -> dict:
    """manifest.json `tools_embeddings`: which backend decided near duplicates (and steered), so a
    reader of the run knows whether MiniLM or the lexical fallback was in effect ("auto" hides it).
    `backend` is null when nothing was embedded (no threshold and no imported tools)."""
    return {
        "configured": cfg.embeddings,
        "backend": embedder.backend_name if embedder else None,
        "near_duplicate_threshold": cfg.near_duplicate_threshold,
        "near_duplicate_removal": cfg.near_duplicate_threshold is not None,
    }


class Steering:
    """What the imported (real) tools cover: labels for the plan prompts, nearest tools per domain."""

    def __init__(self, pool: list[ToolSpec], backend: str):
        self.real = [t for t in pool if t.kind == "real"]
        self.backend = backend
        self._vectors: np.ndarray | None = None

    @property
    def embedder(self) -> Embedder:
        return get_embedder(self.backend)  # type: ignore[arg-type]

    def covered(self, field: str) -> str:
        counts = Counter(getattr(t, field) for t in self.real if getattr(t, field))
        labels = sorted(counts, key=lambda label: (-counts[label], label))[:MAX_COVERED]
        return ", ".join(labels) or "nothing yet"

    def nearest_tools(self, category: str, domain: str) -> str:
        if not self.real:
            return "none yet"
        if self._vectors is None:
            self._vectors = self.embedder.embed([tool_text(t) for t in self.real])
        query = self.embedder.embed([f"{domain} ({category})"])[0]
        names = []
        for i in nearest(query, self._vectors, NEAREST_TOOLS * 2):
            if self.real[i].name not in names:
                names.append(self.real[i].name)
        return ", ".join(names[:NEAREST_TOOLS])


class DedupGate:
    """Decides near duplicates unit by unit in plan order, whatever order the drafts finish in."""

    def __init__(self, store: RunStore, threshold: float, pool: list[ToolSpec], embedder: Embedder,
                 units: list[Unit[ToolsetPlan]]):
        self.store, self.embedder = store, embedder
        self.threshold = float(threshold)
        self.kept: list[ToolSpec] = list(pool)
        self.vectors = embedder.embed([tool_text(t) for t in pool])
        done = store.done_units("tools")
        self.order = [u.id for u in units]
        self.turns = {u.id: asyncio.Event() for u in units}
        for unit_id in done:
            if unit_id in self.turns:
                self.turns[unit_id].set()

    async def decide(self, unit_id: str, specs: list[ToolSpec]) -> list[ToolSpec]:
        # run_units dequeues units in plan order, so every earlier unit is already running or
        # finished: waiting on them cannot deadlock.
        for earlier in self.order[: self.order.index(unit_id)]:
            await self.turns[earlier].wait()
        vectors = self.embedder.embed([tool_text(s) for s in specs])
        hits = near_duplicates(vectors, self.threshold, self.vectors)
        n_ref, kept = len(self.kept), []
        for spec, hit in zip(specs, hits):
            if hit is None:
                kept.append(spec)
                continue
            index, cosine = hit
            # Indices past the pool point into this unit's own earlier (kept) specs.
            twin = self.kept[index] if index < n_ref else specs[index - n_ref]
            where = twin.toolset or twin.domain or twin.category or "-"
            self.store.error("tools", unit_id, Rejected(
                f"tool {spec.name!r}: near duplicate of {twin.name!r} ({twin.kind}, {where}, id {twin.id}): "
                f"cosine {cosine:.3f} >= {self.threshold} ({self.embedder.backend_name} embeddings)"),
                raw=spec.model_dump_json(by_alias=True))
        self.kept += kept
        self.vectors = np.concatenate([self.vectors, vectors[[h is None for h in hits]]])
        return kept

    def release(self, unit_id: str) -> None:
        self.turns[unit_id].set()


async def plan_toolsets(llm: LLM, store: RunStore, cfg: ToolsConfig, steer: Steering | None = None) -> list[ToolsetPlan]:
    """Categories, then domains per category. Cached LLM calls make this free on resume."""
    steer = steer or Steering([], cfg.embeddings)
    prompt = render(__file__, "categories", count=cfg.categories, covered=steer.covered("category"))
    reply = await llm.structured(_ask(prompt), CategoryList)
    categories = _distinct(reply.categories)[: cfg.categories]
    covered_domains = steer.covered("domain")

    async def domains_of(category: str) -> list[str]:
        prompt = render(__file__, "domains", category=category, count=cfg.domains_per_category,
                        covered=covered_domains)
        try:
            reply = await llm.structured(_ask(prompt), DomainList)
        except ParseError as exc:
            store.error("tools", content_hash(category), exc, raw=exc.raw)
            return []
        return _distinct(reply.domains)[: cfg.domains_per_category]

    domain_lists = await asyncio.gather(*(domains_of(c) for c in categories))
    return [
        ToolsetPlan(category=category, domain=domain, variant=variant)
        for category, domains in zip(categories, domain_lists)
        for domain in domains
        for variant in range(cfg.toolsets_per_domain)
    ]


async def draft_toolset(llm: LLM, store: RunStore, cfg: ToolsConfig, run_seed: int, unit: Unit[ToolsetPlan],
                        steer: Steering | None = None, gate: DedupGate | None = None) -> list[ToolSpec]:
    """The toolset of one plan, its invalid tools (and near duplicates, with a gate) rejected with their reason."""
    try:
        specs = await _draft(llm, store, cfg, run_seed, unit, steer or Steering([], cfg.embeddings))
        return await gate.decide(unit.id, specs) if gate else specs
    finally:
        if gate:
            gate.release(unit.id)  # also after a failed draft, so later units are not kept waiting


async def _draft(llm: LLM, store: RunStore, cfg: ToolsConfig, run_seed: int, unit: Unit[ToolsetPlan],
                 steer: Steering) -> list[ToolSpec]:
    plan = unit.payload
    prompt = render(__file__, "toolset", domain=plan.domain, category=plan.category,
                    count=cfg.tools_per_toolset, variant=plan.variant + 1,
                    nearest=steer.nearest_tools(plan.category, plan.domain))
    draft = await llm.structured(_ask(prompt), toolset_model(cfg.tools_per_toolset),
                                 seed=derive_seed(run_seed, "toolset", unit.id))
    toolset_name = snake_case(draft.name, TOOL_NAME)
    if toolset_name is None:
        store.error("tools", unit.id, Rejected(
            f"toolset name {draft.name!r} cannot be made to fit {TOOL_NAME.pattern} without guessing"),
            raw=draft.model_dump_json())
        return []
    toolset_repairs = [Repair("toolset", draft.name, toolset_name)] if toolset_name != draft.name else []
    draft = draft.model_copy(update={"name": toolset_name})
    specs, seen = [], set()
    for raw_tool in draft.tools[: cfg.tools_per_toolset]:
        tool, repairs, problems = repair_names(raw_tool)
        if tool.name in seen:
            renamed = f" (repaired from {raw_tool.name!r})" if tool.name != raw_tool.name else ""
            problems.append(f"duplicate tool name {tool.name!r}{renamed}")
        spec = to_spec(tool, draft, plan, unit.id, toolset_repairs + repairs)
        problems += [] if problems else schema_problems(spec)
        if problems:
            store.error("tools", unit.id, Rejected(f"tool {raw_tool.name!r}: " + "; ".join(problems)),
                        raw=spec.model_dump_json(by_alias=True))
            continue
        seen.add(spec.name)
        specs.append(spec)
    return specs


def repair_names(tool: ToolDraft) -> tuple[ToolDraft, list[Repair], list[str]]:
    """The tool with its name and parameter names in snake_case where that is unambiguous, the
    repairs made, and the problems left (a name that cannot be repaired; two parameters that
    become one name, when a repair made them collide)."""
    repairs, problems = [], []
    name = snake_case(tool.name, TOOL_NAME)
    if name is None:
        problems.append(f"tool name {tool.name!r} cannot be made to fit {TOOL_NAME.pattern} without guessing")
    elif name != tool.name:
        repairs.append(Repair("tool", tool.name, name))
    parameters, sources = [], {}
    for parameter in tool.parameters:
        fixed = snake_case(parameter.name, PARAMETER_NAME)
        if fixed is None:
            problems.append(f"parameter name {parameter.name!r} cannot be made to fit {PARAMETER_NAME.pattern} "
                            "without guessing")
            continue
        if fixed != parameter.name:
            repairs.append(Repair("parameter", parameter.name, fixed))
        sources.setdefault(fixed, []).append(parameter.name)
        parameters.append(parameter.model_copy(update={"name": fixed}))
    for fixed, originals in sources.items():
        if len(originals) > 1 and any(o != fixed for o in originals):
            problems.append(f"parameters {', '.join(map(repr, originals))} all become {fixed!r}: ambiguous")
    return tool.model_copy(update={"name": name or tool.name, "parameters": parameters}), repairs, problems


def to_spec(tool: ToolDraft, toolset: ToolsetDraft, plan: ToolsetPlan, unit: str,
            repairs: list[Repair] = ()) -> ToolSpec:
    properties = {p.name: {"type": p.type, "description": p.description} for p in tool.parameters}
    required = sorted({p.name for p in tool.parameters if p.required})
    schema = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    return ToolSpec(
        unit=unit, name=tool.name, description=tool.description, inputSchema=schema, kind="simulated",
        category=plan.category, domain=plan.domain, toolset=toolset.name, toolset_id=unit,
        state_model=toolset.state_model,
        # Repaired names say what the model wrote (None otherwise: unrepaired specs keep their ids).
        provenance={"repaired": [r.as_dict() for r in repairs]} if repairs else None,
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
