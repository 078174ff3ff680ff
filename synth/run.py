"""Run the pipeline: open the run directory and the LLM endpoint, run stages from one table, summarize.

A stage is `async def run(ctx) -> StageStats` (synth/stages/); what it reports for the manifest
(its entry's extra keys, top-level sections such as user_flags or pass_k) comes back on its
StageStats, so marking a stage done is the same for every one.

Usage is written to the manifest after every stage (cumulative over invocations), with its cost
when `llm.prices` is set. When the run's budget is reached (synth/core/budget.py) the stage in
flight is marked `stopped`, the manifest says which budget stopped it, and `BudgetReached`
propagates: the command prints the summary and exits with code 3 (synth/commands/common.py).
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.parse
from collections import Counter
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

from rich.console import Console
from rich.table import Table

from judges.metrics import funnel_report, state_check_report
from sandboxes.gc import remove_run_leftovers
from synth.config import RunConfig, dump_config
from synth.context import Context, run_id
from synth.core.budget import LEDGER_FILE, BudgetReached, Ledger, Spent
from synth.core.cost import COST_DIGITS, cost_section, money
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
    reads: str | None = None
    """The record kind its units are made from (`synth run --estimate` scales the stage by it)."""
    writes: str | None = None
    """The record kind its units write."""


STAGES: dict[str, Stage] = {
    "tools": Stage(tools.run, writes="tools"),
    "implement": Stage(implement.run, lambda cfg, shard: cfg.tools.implement, "tools", "implementations"),  # slow, optional
    "agents": Stage(agents.run, reads="tools", writes="agents"),
    "tasks": Stage(tasks.run, reads="agents", writes="tasks"),
    "rollout": Stage(rollout.run, reads="tasks", writes="trajectories"),
    "judge": Stage(judge.run, reads="trajectories", writes="verdicts"),
    "export": Stage(export.run, lambda cfg, shard: shard is None),  # shards are merged, then exported
}


def pipeline_stages(cfg: RunConfig, shard: tuple[int, int] | None = None) -> list[str]:
    """What `synth run` runs, in order."""
    return [name for name, stage in STAGES.items() if stage.in_pipeline(cfg, shard)]


@asynccontextmanager
async def open_run(cfg: RunConfig, *, quiet: bool = False, console: Console | None = None,
                   shard: tuple[int, int] | None = None, cache_dir: Path | None = None) -> AsyncIterator[Context]:
    """The run dir (locked), its ledger (spend and budget), the LLM client (the embedded server,
    started on the first request the cache cannot answer, when no endpoint is set), usage saved on
    exit. `cache_dir`: another response cache than the run dir's (the --estimate pilot uses the real run's)."""
    console = console or Console(stderr=True)
    store = RunStore(cfg.run_dir)
    meter = UsageMeter()
    async with AsyncExitStack() as stack:
        store.open(dump_config(cfg), cfg.content_hash())
        stack.callback(store.close)  # releases the run dir's lock whatever fails below
        if shard:
            label, previous = f"{shard[0]}/{shard[1]}", store.manifest().get("shard")
            if previous and previous != label:
                raise ConfigError(f"{store.root} is shard {previous}, not {label}; give this shard its own --name")
            store.update_manifest(shard=label)
        usage_base = store.manifest().get("usage", {})
        ledger = Ledger.open(store.root / LEDGER_FILE, cfg.llm.budget, cfg.llm.prices, start=_spent(usage_base))
        stack.callback(ledger.close)
        await asyncio.to_thread(remove_run_leftovers, cfg.rollout.sandbox, run_id(cfg))
        base_url = cfg.llm.base_url or os.environ.get("OPENAI_BASE_URL")

        async def start_embedded() -> str:
            if not quiet:
                console.print("[dim]no endpoint configured: starting the embedded model server[/dim]")
            return await stack.enter_async_context(
                embedded_server(cfg.embedded, log_path=store.root / "embedded_server.log"))

        llm = LLM(embedded_llm_config(cfg) if not base_url else cfg.llm, base_url=base_url, meter=meter,
                  cache=ResponseCache(cache_dir or store.root / "cache"), start_endpoint=start_embedded, ledger=ledger)
        stack.push_async_callback(llm.aclose)
        store.update_manifest(models=model_provenance(cfg, llm, base_url))
        ctx = Context(cfg=cfg, store=store, llm=llm, meter=meter, console=console, quiet=quiet, shard=shard,
                      ledger=ledger, usage_base=usage_base)
        try:
            yield ctx
        finally:
            save_usage(ctx)


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
    """Run these stages in order, marking each done in the manifest. When the budget is reached the
    stage in flight is marked stopped (what it finished is on disk) and BudgetReached propagates."""
    for name in names:
        token = current_stage.set(name)  # planning calls made before run_units count for the stage too
        try:
            stats = await STAGES[name].run(ctx)
        except BudgetReached as stop:
            ctx.stopped = stop
            ctx.stats.setdefault(name, StageStats(name))
            _mark(ctx, name, ctx.stats[name], status="stopped")
            raise
        finally:
            current_stage.reset(token)
        ctx.stats[name] = stats
        _mark(ctx, name, stats)


def _mark(ctx: Context, name: str, stats: StageStats, status: str = "done") -> None:
    manifest = ctx.store.manifest()
    before = manifest.get("stages", {}).get(name)
    entry = {"status": status, "failed_units": stats.failed, **stats.summary}
    # Wall seconds summed over invocations; unknown (left out) when units done by an invocation that
    # did not record its time were skipped here.
    if isinstance(before, dict) and "seconds" in before:
        entry["seconds"] = round(before["seconds"] + stats.seconds, 1)
    elif not stats.skipped:
        entry["seconds"] = round(stats.seconds, 1)
    if status == "stopped" and ctx.stopped is not None:
        entry["stopped_by"] = ctx.stopped.which
        budget = manifest.setdefault("budget", {})
        budget.setdefault("stops", []).append({
            "stage": name, "by": ctx.stopped.which, "limit": ctx.stopped.limit, "tokens": ctx.stopped.spent.tokens,
            "cost": round(ctx.stopped.spent.cost, COST_DIGITS), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    manifest.setdefault("stages", {})[name] = entry
    manifest.update(stats.manifest)
    manifest["funnel"] = funnel_report(ctx.store)
    manifest["counts"] = manifest["funnel"]["counts"]
    ctx.store.write_manifest(manifest)
    save_usage(ctx)


def save_usage(ctx: Context) -> None:
    """Usage by stage, cumulative across invocations (what the run dir held when this one opened plus
    this one's meter), this invocation's totals, and the cost and budget sections. Written after each
    stage and at the end, so a killed run loses at most its last stage's usage (the ledger loses none)."""
    manifest = ctx.store.manifest()
    priced = bool(ctx.cfg.llm.prices)
    usage = {stage: dict(row) for stage, row in ctx.usage_base.items()}
    for stage, now in ctx.meter.by_stage().items():
        before = usage.get(stage, {})
        usage[stage] = {k: _rounded(k, before.get(k, 0) + v) for k, v in now.model_dump().items()
                        if priced or "cost" not in k or k in before}
    manifest["usage"] = usage
    total = ctx.meter.total().model_dump()
    manifest["last_invocation"] = {"seconds": round(time.monotonic() - ctx.started, 2),
                                   **{k: _rounded(k, v) for k, v in total.items() if priced or "cost" not in k}}
    if priced:
        manifest["cost"] = cost_section(usage, manifest.get("counts", {}).get("kept", 0), ctx.cfg.llm.prices)
    if ctx.ledger is not None and (ctx.cfg.llm.budget or "budget" in manifest):
        spent = ctx.ledger.spent()
        budget = manifest.setdefault("budget", {})
        budget.update(limits=ctx.ledger.budget.limits(), spent={"tokens": spent.tokens,
                                                                "cost": round(spent.cost, COST_DIGITS)},
                      stopped_by=ctx.stopped.which if ctx.stopped else None)
    ctx.store.write_manifest(manifest)


def _rounded(key: str, value: float) -> float:
    return round(value, COST_DIGITS if "cost" in key else 3)


def _spent(usage: dict[str, dict]) -> Spent:
    """What a run dir's manifest says it spent: the ledger of a run dir that has none starts there."""
    rows = [row for row in usage.values() if isinstance(row, dict)]
    return Spent(tokens=int(sum(row.get("prompt_tokens", 0) + row.get("completion_tokens", 0) for row in rows)),
                 cost=float(sum(row.get("cost", 0.0) for row in rows)))


def summary_table(ctx: Context) -> Table:
    priced = bool(ctx.cfg.llm.prices)
    table = Table(title=f"synth run {ctx.cfg.name}: {ctx.store.root}")
    table.add_column("stage", no_wrap=True)
    for column in ("units", "skip", "done", "fail", "recs", "reqs", "hits", "tokens", *(["cost"] if priced else []),
                   "secs"):
        table.add_column(column, justify="right", no_wrap=True)
    by_stage = ctx.meter.by_stage()
    stages = ctx.store.manifest().get("stages", {})
    for name, stats in ctx.stats.items():
        usage = by_stage.get(name)
        tokens = (usage.prompt_tokens + usage.completion_tokens) if usage else 0
        label = f"{name} (stopped)" if stages.get(name, {}).get("status") == "stopped" else name
        table.add_row(label, str(stats.units), str(stats.skipped), str(stats.done), str(stats.failed),
                      str(stats.records), str(usage.requests if usage else 0), str(usage.cached if usage else 0),
                      str(tokens), *([money(usage.cost if usage else 0.0)] if priced else []), f"{stats.seconds:.1f}")
    total = ctx.meter.total()
    counts = funnel_report(ctx.store)["counts"]
    verdicts = ctx.store.read("verdicts")
    reasons = Counter(r for v in verdicts for r in v.reasons)
    on_state = state_check_report(verdicts)["kept_on_state_check"]
    lines = ["skip: units finished by an earlier run (resumed); reqs: LLM requests sent; hits: answered from cache",
             f"LLM requests sent: {total.requests} (cache hits {total.cached}); "
             f"kept {counts['kept']} of {counts['verdicts']} judged trajectories, "
             f"{on_state} of them on a state check (final-state assertions or the gold final state)",
             f"sandbox: {export.isolation_statement(ctx.cfg)}"]
    lines += [f"  dropped {n}x: {reason}" for reason, n in reasons.most_common(5)]
    if priced:
        cost = ctx.store.manifest().get("cost", {})
        per_kept = cost.get("per_kept_trajectory")
        lines.append(f"cost: {money(total.cost)} this invocation; the run so far {money(cost.get('total', 0.0))}"
                     + (f", {money(per_kept)} per kept trajectory" if per_kept is not None else ""))
    if ctx.stopped is not None:
        where = next((name for name in ctx.stats if stages.get(name, {}).get("status") == "stopped"), "?")
        lines.append(f"STOPPED in the {where} stage: {ctx.stopped}. Everything finished is on disk; rerun with a higher "
                     f"llm.budget.{ctx.stopped.which} to resume (answered requests come from the cache)")
    table.caption = "\n".join(lines)
    return table
