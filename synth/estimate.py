"""`synth run --estimate`: a small pilot, projected to the full config's requests, tokens, cost and
wall time.

The pilot is the pipeline itself with at most `units` units per stage (`Context.unit_limit`), in a
scratch run dir but through the real run dir's response cache. A unit's requests depend only on the
unit and what it reads, so the pilot's requests are ones the real run makes too, and the real run
gets their answers from the cache. (Not quite all: a `mixed` or `distractors` agent draws its partner
toolset from the toolsets there are, fewer in the pilot.) Imported tools (kind `real`) of the run
dir are copied into the pilot, as they are input, not output.

Projection, stage by stage in pipeline order (synth/run.py `STAGES`: what each stage reads and
writes). The tools stage plans its units in full, so its count is exact; any later stage's unit
count is the pilot's scaled by how much more of what it reads the full run will have:

    units(stage)   = pilot units(stage) x full records(reads) / pilot records(reads)
    records(writes) = records there before + units(stage) x records per unit in the pilot
    usage(stage)    = usage before its units started (planning) + units(stage) x usage per pilot unit

Requests count calls (requests sent plus cache hits: each is a request in a fresh run), tokens
include those of cache hits, cost is by llm.prices. Wall time scales each stage's unit time by
units over parallelism (min of the stage's concurrency, llm.concurrency and its units), except that
the embedded server answers one request at a time, so there it scales with units alone; it is rough.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from synth.config import RunConfig
from synth.context import Context
from synth.core.cost import money
from synth.core.errors import ConfigError
from synth.core.usage import Usage
from synth.run import STAGES, open_run, pipeline_stages, run_stages

@dataclass
class StageSample:
    """What the pilot measured of one stage."""

    stage: str
    planned: int  # units the stage had in the pilot
    ran: int  # of them run (done or failed)
    before: int  # records of the kind it writes present before it ran (imported tools)
    wrote: int  # records it wrote
    fixed: Usage  # usage before its units started (planning calls)
    units_usage: Usage  # usage of the units it ran
    fixed_seconds: float
    unit_seconds: float


@dataclass
class StageProjection:
    stage: str
    pilot_units: int
    units: float
    requests: float
    tokens: float
    cost: float
    seconds: float
    note: str = ""


@dataclass
class Estimate:
    units: int  # the pilot's units per stage, at most
    samples: list[StageSample]
    stages: list[StageProjection]
    pilot: Usage  # what the pilot used (its requests are in the real run's cache now)
    pilot_seconds: float
    priced: bool
    serial_endpoint: bool

    def total(self, field: str) -> float:
        return sum(getattr(s, field) for s in self.stages)


async def estimate(cfg: RunConfig, units: int = 2, *, quiet: bool = False,
                   console: Console | None = None, shard: tuple[int, int] | None = None) -> Estimate:
    """Run the pilot (at most `units` units per stage) and project the full run."""
    if units < 1:
        raise ConfigError(f"--pilot-units {units}: the pilot needs at least 1 unit per stage")
    _check_run_dir(cfg)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="synth-pilot-") as scratch:
        pilot_cfg = cfg.model_copy(update={"runs_dir": scratch})
        _copy_imported_tools(cfg.run_dir, pilot_cfg.run_dir)
        (cfg.run_dir / "cache").mkdir(parents=True, exist_ok=True)
        async with open_run(pilot_cfg, quiet=quiet, console=console, shard=shard,
                            cache_dir=cfg.run_dir / "cache") as ctx:
            ctx.unit_limit = units
            samples = [await _sample(ctx, name) for name in pipeline_stages(cfg, shard) if STAGES[name].writes]
            pilot = ctx.meter.total()
    serial = not (cfg.llm.base_url or os.environ.get("OPENAI_BASE_URL"))
    return Estimate(units=units, samples=samples, stages=project(cfg, samples, serial_endpoint=serial), pilot=pilot,
                    pilot_seconds=time.monotonic() - started, priced=bool(cfg.llm.prices), serial_endpoint=serial)


async def _sample(ctx: Context, name: str) -> StageSample:
    stage = STAGES[name]
    marks: list[tuple[Usage, float]] = []
    ctx.on_start = lambda: marks.append((_usage_of(ctx, name), time.monotonic()))
    before = _count(ctx, stage.writes)
    begun = time.monotonic()
    try:
        await run_stages(ctx, [name])
    finally:
        ctx.on_start = None
    ended, after = time.monotonic(), _usage_of(ctx, name)
    at_start, started = marks[0] if marks else (after, ended)
    stats = ctx.stats[name]
    return StageSample(stage=name, planned=stats.units, ran=stats.done + stats.failed, before=before,
                       wrote=_count(ctx, stage.writes) - before, fixed=at_start, units_usage=_minus(after, at_start),
                       fixed_seconds=started - begun, unit_seconds=ended - started)


def project(cfg: RunConfig, samples: list[StageSample], *, serial_endpoint: bool = False) -> list[StageProjection]:
    """The full run's stages from the pilot's (see the module docstring)."""
    full: dict[str, float] = {}  # record kind -> records in the full run
    pilot: dict[str, int] = {}  # record kind -> records in the pilot
    out = []
    for s in samples:
        stage, note = STAGES[s.stage], ""
        scale = 1.0
        if stage.reads and stage.reads in pilot:
            scale = full[stage.reads] / pilot[stage.reads] if pilot[stage.reads] else 0.0
        units = s.planned * scale
        if s.ran:
            per_unit = units / s.ran
        else:
            per_unit = 0.0
            note = "no unit ran in the pilot" if s.planned else "the pilot had no unit for it"
        if stage.writes:
            pilot[stage.writes] = s.before + s.wrote
            full[stage.writes] = s.before + (s.wrote / s.ran * units if s.ran else 0.0)
        concurrency = min(cfg.rollout.concurrency if s.stage == "rollout" else cfg.concurrency, cfg.llm.concurrency)
        if serial_endpoint:
            speedup = 1.0
        else:
            speedup = min(concurrency, max(units, 1)) / min(concurrency, max(s.ran, 1))
        out.append(StageProjection(
            stage=s.stage, pilot_units=s.ran, units=units,
            requests=_calls(s.fixed) + _calls(s.units_usage) * per_unit,
            tokens=_tokens(s.fixed) + _tokens(s.units_usage) * per_unit,
            cost=_cost(s.fixed) + _cost(s.units_usage) * per_unit,
            seconds=s.fixed_seconds + s.unit_seconds * per_unit / speedup, note=note))
    return out


def estimate_table(cfg: RunConfig, est: Estimate) -> Table:
    table = Table(title=f"synth run --estimate {cfg.name}: projected for the full config")
    table.add_column("stage", no_wrap=True)
    for column in ("pilot units", "units", "requests", "tokens", *(["cost"] if est.priced else []), "wall"):
        table.add_column(column, justify="right", no_wrap=True)
    for s in est.stages:
        table.add_row(s.stage + (f" ({s.note})" if s.note else ""), str(s.pilot_units), f"{s.units:,.0f}",
                      f"{s.requests:,.0f}", f"{s.tokens:,.0f}", *([money(s.cost)] if est.priced else []),
                      _duration(s.seconds))
    table.add_row("total", "", "", f"{est.total('requests'):,.0f}", f"{est.total('tokens'):,.0f}",
                  *([money(est.total('cost'))] if est.priced else []), _duration(est.total("seconds")), style="bold")
    pilot = est.pilot
    lines = [
        f"pilot: at most {est.units} units per stage; {pilot.requests} "
        f"requests sent, {pilot.cached} answered from the cache, "
        f"{pilot.prompt_tokens + pilot.completion_tokens:,} tokens sent"
        + (f", cost {money(pilot.cost)}" if est.priced else "") + f", {_duration(est.pilot_seconds)}",
        f"its answers are in {cfg.run_dir / 'cache'}: the real run does not send those requests again",
        "wall time: the embedded server answers one request at a time" if est.serial_endpoint else
        "wall time assumes the endpoint serves min(concurrency, llm.concurrency) requests at once",
    ]
    if not est.priced:
        lines.append("no cost: set llm.prices (per million input and output tokens, per model)")
    if pilot.cached:
        lines.append("requests the cache answered took no time in the pilot: the wall time is a lower bound")
    table.caption = "\n".join(lines)
    return table


def _check_run_dir(cfg: RunConfig) -> None:
    """Estimating for a run dir made with another config would fill its cache with answers it never uses."""
    manifest = cfg.run_dir / "manifest.json"
    if manifest.exists():
        previous = json.loads(manifest.read_text()).get("config_hash")
        if previous and previous != cfg.content_hash():
            raise ConfigError(f"{cfg.run_dir} was made with a different config (hash {previous}, now "
                              f"{cfg.content_hash()}); estimate it with its own config.yaml, or give this run a new "
                              "name (--name)")


def _copy_imported_tools(real: Path, pilot: Path) -> None:
    source = real / "tools.jsonl"
    if not source.exists():
        return
    lines = [line for line in source.read_text().splitlines(keepends=True)
             if line.endswith("\n") and json.loads(line).get("kind") == "real"]
    if lines:
        pilot.mkdir(parents=True, exist_ok=True)
        (pilot / "tools.jsonl").write_text("".join(lines))


def _count(ctx: Context, kind: str | None) -> int:
    if kind is None:
        return 0
    path = ctx.store.path(kind)
    return sum(1 for _ in path.open("rb")) if path.exists() else 0


def _usage_of(ctx: Context, stage: str) -> Usage:
    return ctx.meter.by_stage().get(stage) or Usage()


def _minus(a: Usage, b: Usage) -> Usage:
    return Usage(**{name: getattr(a, name) - getattr(b, name) for name in Usage.model_fields})


def _calls(u: Usage) -> float:
    return u.requests + u.cached


def _tokens(u: Usage) -> float:
    return u.prompt_tokens + u.completion_tokens + u.cached_tokens


def _cost(u: Usage) -> float:
    return u.cost + u.cached_cost


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else (
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s")
