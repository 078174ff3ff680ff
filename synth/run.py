"""Run the pipeline: open the run directory and the LLM endpoint, run stages from one table, summarize.

A stage is `async def run(ctx) -> StageStats` (synth/stages/); what it reports for the manifest
(its entry's extra keys, top-level sections such as user_flags or pass_k) comes back on its
StageStats, so marking a stage done is the same for every one.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.parse
from collections import Counter
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable

from rich.console import Console
from rich.table import Table

from judges.metrics import funnel_report
from sandboxes.gc import remove_run_leftovers
from synth.config import RunConfig, dump_config
from synth.context import Context, run_id
from synth.core.errors import ConfigError
from synth.core.llm import LLM, LLMConfig
from synth.core.llm_config import ROLES
from synth.core.llm_cache import ResponseCache
from synth.core.local_llm import embedded_server
from synth.core.store import RunStore
from synth.core.units import StageStats
from synth.core.usage import UsageMeter, current_stage
from synth.stages import agents, export, implement, judge, rollout, tasks, tools


@dataclass(frozen=True)
class Stage:
    run: Callable[[Context], Awaitable[StageStats]]
    in_pipeline: Callable[[RunConfig, tuple[int, int] | None], bool] = lambda cfg, shard: True
    """Whether `synth run` (with this config, as this shard) runs it."""


STAGES: dict[str, Stage] = {
    "tools": Stage(tools.run),
    "implement": Stage(implement.run, lambda cfg, shard: cfg.tools.implement),  # slow and optional
    "agents": Stage(agents.run),
    "tasks": Stage(tasks.run),
    "rollout": Stage(rollout.run),
    "judge": Stage(judge.run),
    "export": Stage(export.run, lambda cfg, shard: shard is None),  # shards are merged, then exported
}


def pipeline_stages(cfg: RunConfig, shard: tuple[int, int] | None = None) -> list[str]:
    """What `synth run` runs, in order."""
    return [name for name, stage in STAGES.items() if stage.in_pipeline(cfg, shard)]


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
        await asyncio.to_thread(remove_run_leftovers, cfg.rollout.sandbox, run_id(cfg))
        base_url = cfg.llm.base_url or os.environ.get("OPENAI_BASE_URL")

        async def start_embedded() -> str:
            if not quiet:
                console.print("[dim]no endpoint configured: starting the embedded model server[/dim]")
            return await stack.enter_async_context(
                embedded_server(cfg.embedded, log_path=store.root / "embedded_server.log"))

        llm = LLM(embedded_llm_config(cfg) if not base_url else cfg.llm, base_url=base_url, meter=meter,
                  cache=ResponseCache(store.root / "cache"), start_endpoint=start_embedded)
        stack.push_async_callback(llm.aclose)
        store.update_manifest(models=model_provenance(cfg, llm, base_url))
        ctx = Context(cfg=cfg, store=store, llm=llm, meter=meter, console=console, quiet=quiet, shard=shard)
        try:
            yield ctx
        finally:
            _save_usage(ctx, time.monotonic() - started)


def embedded_llm_config(cfg: RunConfig) -> LLMConfig:
    """The client config for the embedded server: unless llm.model is set, requests name the served model
    (its preset's alias), so a run's cached replies of one preset never answer for another."""
    if "model" in cfg.llm.model_fields_set:
        return cfg.llm
    return cfg.llm.model_copy(update={"model": cfg.embedded.served_alias()})


def model_provenance(cfg: RunConfig, llm: LLM, base_url: str | None) -> dict[str, dict[str, str]]:
    """Which model and endpoint each role used ("default": tools, agents, tasks), for the manifest and
    the dataset card. Endpoints are shown without credentials, query or fragment."""
    shared = public_url(base_url) if base_url else f"embedded {cfg.embedded.model or cfg.embedded.model_file or 'SmolLM2-135M'}"
    out = {"default": {"model": llm.cfg.model, "endpoint": shared}}
    for role in ROLES:
        own = cfg.llm.roles.get(role)
        out[role] = {"model": llm.role(role).cfg.model,
                     "endpoint": public_url(own.base_url) if own and own.base_url else shared}
    return out


def public_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


async def run_stages(ctx: Context, names: list[str]) -> None:
    """Run these stages in order, marking each done in the manifest."""
    for name in names:
        token = current_stage.set(name)  # planning calls made before run_units count for the stage too
        try:
            stats = await STAGES[name].run(ctx)
        finally:
            current_stage.reset(token)
        ctx.stats[name] = stats
        _mark(ctx, name, stats)


def _mark(ctx: Context, name: str, stats: StageStats) -> None:
    manifest = ctx.store.manifest()
    manifest.setdefault("stages", {})[name] = {"status": "done", "failed_units": stats.failed, **stats.summary}
    manifest.update(stats.manifest)
    manifest["funnel"] = funnel_report(ctx.store)
    manifest["counts"] = manifest["funnel"]["counts"]
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
    counts = funnel_report(ctx.store)["counts"]
    reasons = Counter(r for v in ctx.store.read("verdicts") for r in v.reasons)
    table.caption = (
        "skip: units finished by an earlier run (resumed); reqs: LLM requests sent; hits: answered from cache\n"
        f"LLM requests sent: {total.requests} (cache hits {total.cached}); "
        f"kept {counts['kept']} of {counts['verdicts']} judged trajectories\n"
        f"sandbox: {export.isolation_statement(ctx.cfg)}"
        + "".join(f"\n  dropped {n}x: {reason}" for reason, n in reasons.most_common(5))
    )
    return table
