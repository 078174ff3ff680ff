"""The tools stage (`synth tools evolve`): plan categories -> domains -> toolsets, then draft one
toolset per unit (tools/evolve.py). Its manifest section `tools_embeddings` says which embedding
backend decided near duplicates."""

from __future__ import annotations

from synth.context import Context
from synth.core.records import ToolSpec
from synth.core.units import StageStats, run_units
from tools.evolve import DedupGate, Steering, draft_toolset, embeddings_section, plan_toolsets, units_of


async def run(ctx: Context) -> StageStats:
    cfg = ctx.cfg.tools
    pool = ctx.store.read("tools", ToolSpec)  # at stage start: imported tools + units done before
    steer = Steering(pool, cfg.embeddings)
    units = units_of(await plan_toolsets(ctx.llm, ctx.store, cfg, steer))
    gate = None
    if cfg.near_duplicate_threshold is not None:
        gate = DedupGate(ctx.store, cfg.near_duplicate_threshold, pool, steer.embedder, units)
    section = embeddings_section(cfg, steer.embedder if (gate or steer.real) else None)
    stats = await run_units(ctx, "tools", "tools", units,
                            lambda u: draft_toolset(ctx.llm, ctx.store, cfg, ctx.cfg.seed, u, steer, gate),
                            ctx.cfg.concurrency)
    stats.manifest["tools_embeddings"] = section
    return stats
