"""The tools stage (`synth tools evolve`; the first stage of `synth run`): import the real MCP servers of
`tools.servers` (once: a resumed run skips those in tools.jsonl), then plan categories -> domains ->
toolsets and draft one toolset per unit (tools/evolve.py) unless `tools.evolve` is off. Its
manifest section `tools_embeddings` says which embedding backend decided near duplicates."""

from __future__ import annotations

import time

from synth.context import Context
from synth.core.records import ToolSpec
from synth.core.units import StageStats, run_units
from tools.catalog import configured_sources
from tools.evolve import DedupGate, Steering, draft_toolset, embeddings_section, plan_toolsets, units_of
from tools.mcp_import import import_tools


async def run(ctx: Context) -> StageStats:
    cfg = ctx.cfg.tools
    imported = await import_servers(ctx)
    pool = ctx.store.read("tools", ToolSpec)  # at stage start: imported tools + units done before
    if not cfg.evolve:
        return StageStats("tools", records=imported, summary={"imported": imported})
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
    if cfg.servers:
        stats.summary["imported"] = imported
    return stats


async def import_servers(ctx: Context) -> int:
    """Import the configured servers not imported before (matched by their command); tools imported."""
    if not ctx.cfg.tools.servers:
        return 0
    started = time.monotonic()
    done = {str((t.provenance or {}).get("command")) for t in ctx.store.read("tools") if t.kind == "real"}
    sources = [s for s in await configured_sources(ctx.cfg.tools.servers) if s.target not in done]
    if not sources:
        return 0
    results = await import_tools(sources, ctx.store)
    tools = sum(len(r.tools) for r in results)
    if not ctx.quiet:
        for r in results:
            why = f" ({r.rejections[0].message[:160]})" if r.rejections and not r.tools else ""
            ctx.console.print(f"[dim]imported {len(r.tools)} tools from {r.server or r.source}{why}[/dim]")
        ctx.console.print(f"[dim]tools: {tools} imported from {len(sources)} servers in "
                          f"{time.monotonic() - started:.1f}s[/dim]")
    return tools
