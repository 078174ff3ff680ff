"""Run the pipeline: open the run directory and the LLM endpoint, run stages, summarize."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from contextlib import AsyncExitStack, asynccontextmanager
from typing import AsyncIterator, Awaitable, Callable

from rich.console import Console
from rich.table import Table

from synth.agents import make_agents
from synth.config import RunConfig, dump_config
from synth.core.errors import ConfigError
from synth.export import export_run, funnel
from synth.core.llm import LLM
from synth.core.llm_cache import ResponseCache
from synth.core.local_llm import embedded_server
from synth.context import Context
from synth.core.units import StageStats
from synth.rollout import make_rollouts, pass_report
from synth.core.store import RunStore
from synth.tasks import make_tasks
from synth.core.usage import UsageMeter, current_stage
from synth.user_sim import user_flag_counts
from judges.filters import funnel_report
from sandboxes.gc import remove_run_leftovers
from judges.stage import judge_all
from synth.stages import implement, tools

log = logging.getLogger(__name__)
Stage = Callable[[Context], Awaitable[StageStats]]
STAGES: dict[str, Stage] = {
    "tools": tools.run,
    "implement": implement.run,
    "agents": make_agents,
    "tasks": make_tasks,
    "rollout": make_rollouts,
    "judge": judge_all,
}


def pipeline_stages(cfg: RunConfig) -> list[str]:
    """What `synth run` runs: every stage, `implement` only when the config asks for it (slow, optional)."""
    return [name for name in STAGES if name != "implement" or cfg.tools.implement]


@asynccontextmanager
async def open_run(cfg: RunConfig, *, quiet: bool = False, console: Console | None = None,
                   shard: tuple[int, int] | None = None) -> AsyncIterator[Context]:
    """The run dir (locked), the LLM client (the embedded server, started on the first request the
    cache cannot answer, when no endpoint is set), usage saved on exit."""
    console = console or Console(stderr=True)
    store = RunStore(cfg.run_dir)
    meter = UsageMeter()
    started = time.monotonic()
    async with AsyncExitStack() as stack:
        store.open(dump_config(cfg), cfg.content_hash())
        stack.callback(store.close)  # releases the run dir's lock whatever fails below
        if shard:
            label, previous = f"{shard[0]}/{shard[1]}", store.manifest().get("shard")
            if previous and previous != label:
                raise ConfigError(f"{store.root} is shard {previous}, not {label}; give this shard its own --name")
            store.update_manifest(shard=label)
        await asyncio.to_thread(remove_run_leftovers, cfg.rollout.sandbox, cfg.name)
        base_url = cfg.llm.base_url or os.environ.get("OPENAI_BASE_URL")

        async def start_embedded() -> str:
            if not quiet:
                console.print("[dim]no endpoint configured: starting the embedded model server[/dim]")
            return await stack.enter_async_context(
                embedded_server(cfg.embedded, log_path=store.root / "embedded_server.log"))

        llm = LLM(cfg.llm, base_url=base_url, meter=meter, cache=ResponseCache(store.root / "cache"),
                  start_endpoint=start_embedded)
        stack.push_async_callback(llm.aclose)
        ctx = Context(cfg=cfg, store=store, llm=llm, meter=meter, console=console, quiet=quiet, shard=shard)
        try:
            yield ctx
        finally:
            _save_usage(ctx, time.monotonic() - started)


async def run_stages(ctx: Context, names: list[str], *, export: bool = True) -> None:
    for name in names:
        token = current_stage.set(name)  # planning calls made before run_units count for the stage too
        try:
            await STAGES[name](ctx)
        finally:
            current_stage.reset(token)
        _mark(ctx, name)
    if export:
        ctx.stats["export"] = StageStats("export")
        started = time.monotonic()
        rows = export_run(ctx)
        ctx.stats["export"].records = rows["sft_rows"]
        ctx.stats["export"].seconds = time.monotonic() - started
        _mark(ctx, "export", **rows)


def _mark(ctx: Context, stage: str, **extra: int) -> None:
    manifest = ctx.store.manifest()
    stats = ctx.stats.get(stage)
    manifest.setdefault("stages", {})[stage] = {"status": "done", "failed_units": stats.failed if stats else 0, **extra}
    manifest.update(stats.manifest if stats else {})
    manifest["funnel"] = funnel_report(ctx.store)
    manifest["counts"] = manifest["funnel"]["counts"]
    if stage == "rollout":
        manifest["user_flags"] = user_flag_counts(ctx.store.read("trajectories"))
    if stage == "judge":
        manifest["pass_k"] = pass_report(ctx.store.read("trajectories"), ctx.store.read("verdicts"))
    ctx.store.write_manifest(manifest)


def _save_usage(ctx: Context, seconds: float) -> None:
    """Cumulative usage by stage across invocations, plus this invocation's own totals."""
    manifest = ctx.store.manifest()
    usage = manifest.setdefault("usage", {})
    for stage, now in ctx.meter.by_stage().items():
        before = usage.get(stage, {})
        usage[stage] = {k: round(before.get(k, 0) + v, 3) for k, v in now.model_dump().items()}
    total = ctx.meter.total()
    manifest["last_invocation"] = {"seconds": round(seconds, 2), **total.model_dump()}
    ctx.store.write_manifest(manifest)


def summary_table(ctx: Context) -> Table:
    table = Table(title=f"synth run {ctx.cfg.name}: {ctx.store.root}")
    table.add_column("stage", no_wrap=True)
    for column in ("units", "skip", "done", "fail", "recs", "reqs", "hits", "tokens", "secs"):
        table.add_column(column, justify="right", no_wrap=True)
    by_stage = ctx.meter.by_stage()
    for name, stats in ctx.stats.items():
        usage = by_stage.get(name)
        tokens = (usage.prompt_tokens + usage.completion_tokens) if usage else 0
        table.add_row(name, str(stats.units), str(stats.skipped), str(stats.done), str(stats.failed),
                      str(stats.records), str(usage.requests if usage else 0), str(usage.cached if usage else 0),
                      str(tokens), f"{stats.seconds:.1f}")
    total = ctx.meter.total()
    counts = funnel(ctx)
    reasons = Counter(r for v in ctx.store.read("verdicts") for r in v.reasons)
    table.caption = (
        "skip: units finished by an earlier run (resumed); reqs: LLM requests sent; hits: answered from cache\n"
        f"LLM requests sent: {total.requests} (cache hits {total.cached}); "
        f"kept {counts['kept']} of {counts['verdicts']} judged trajectories"
        + "".join(f"\n  dropped {n}x: {reason}" for reason, n in reasons.most_common(5))
    )
    return table
