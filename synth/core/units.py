"""The one runner every stage uses: units of work with resume, bounded concurrency, progress and the
error boundary. Rollout worker processes (synth/workers.py) share its bookkeeping (`pending`) and
its progress bar (`progress`).

When the run's budget is reached (synth/core/budget.py), the unit that met it is abandoned (no
record, no error: it is simply not done), no new unit starts, the units in flight finish or are
abandoned the same way at their next request, and `BudgetReached` propagates to the caller."""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Generic, Iterator, Protocol, Sequence, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from synth.core.budget import BudgetReached, Ledger
from synth.core.cost import money
from synth.core.errors import boundary
from synth.core.records import Record
from synth.core.store import RunStore
from synth.core.usage import current_stage

U = TypeVar("U")


@dataclass
class Unit(Generic[U]):
    """One unit of work: its id (what resume keys on) and its payload."""

    id: str
    payload: U


@dataclass
class StageStats:
    stage: str
    units: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    records: int = 0
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    """Extra keys of the stage's entry in manifest.json `stages` (export: its row counts)."""
    manifest: dict[str, Any] = field(default_factory=dict)
    """Top-level manifest.json sections the stage computed (rollout: user_flags; judge: pass_k, ...)."""


class Runner(Protocol):
    """What run_units needs of its caller (synth.context.Context is one): the run dir, the stages'
    counters, where progress goes, and who to tell about units."""

    store: RunStore
    stats: dict[str, StageStats]
    console: Console
    quiet: bool
    on_unit: Callable[[bool], None] | None  # told after each unit (done or failed): rollout workers report
    on_start: Callable[[], None] | None  # told when a stage's units start, after its warm-up (benchmarks)
    ledger: Ledger | None  # the run's spend: the progress line shows the stage's tokens and cost
    unit_limit: int | None  # run at most this many units per stage (the pilot of `synth run --estimate`)


def pending(runner: Runner, stage: str, out_kind: str, units: Sequence[Unit[U]]) -> tuple[StageStats, list[Unit[U]]]:
    """The stage's counters with `units` counted in, and those of them not done yet (resume: a unit
    with records in `out_kind` is done)."""
    stats = runner.stats.setdefault(stage, StageStats(stage))
    done = runner.store.done_units(out_kind)
    todo = [u for u in units if u.id not in done]
    stats.units += len(units)
    stats.skipped += len(units) - len(todo)
    if runner.unit_limit is not None:
        todo = todo[: runner.unit_limit]
    return stats, todo


async def run_units(
    runner: Runner,
    stage: str,
    out_kind: str,
    units: Sequence[Unit[U]],
    work: Callable[[Unit[U]], Awaitable[list[Record]]],
    concurrency: int,
    kept: Callable[[list[Record]], bool] | None = None,
) -> StageStats:
    """Run `work` on every unit not already done, appending its records to `out_kind`.

    What escapes `work` goes through the error boundary: an expected failure (provider, sandbox,
    tool, parse, timeout) is recorded in errors.jsonl with the unit and the run goes on; anything
    else is a bug and propagates. `kept` says whether a unit's records were kept (the judge's
    verdicts): the progress line then counts kept and dropped ones.
    """
    stats, todo = pending(runner, stage, out_kind, units)
    started = time.monotonic()
    token = current_stage.set(stage)
    queue: asyncio.Queue[Unit[U]] = asyncio.Queue()
    for unit in todo:
        queue.put_nowait(unit)

    if runner.on_start is not None:
        runner.on_start()
    reached: list[BudgetReached] = []
    with progress(runner, stage, len(units), len(units) - len(todo)) as unit_done:

        async def worker() -> None:
            while not queue.empty() and not reached:
                unit = queue.get_nowait()
                try:
                    records = await work(unit)
                except BudgetReached as stop:
                    reached.append(stop)  # abandoned: not done, redone on resume
                except Exception as exc:
                    runner.store.failure(stage, unit.id, boundary(exc))
                    stats.failed += 1
                    unit_done(False)
                else:
                    stats.records += runner.store.append(out_kind, records)
                    stats.done += 1
                    unit_done(True, kept(records) if kept else None)

        try:
            await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(todo))))))
        finally:
            current_stage.reset(token)
            stats.seconds += time.monotonic() - started
    if reached:
        raise reached[0]
    return stats


class Tally:
    """The running numbers of a stage's progress line: failed units, kept and dropped ones (when the
    stage keeps or drops: the judge), and the stage's tokens and cost so far, read from the run's
    ledger, which rollout worker processes charge too."""

    def __init__(self, ledger: Ledger | None):
        self.ledger = ledger
        self.start = ledger.spent() if ledger else None
        self.done = self.failed = self.kept = self.dropped = 0

    def count(self, ok: bool, kept: bool | None = None) -> None:
        self.done += ok
        self.failed += not ok
        if kept is not None:
            self.kept += kept
            self.dropped += not kept

    def line(self) -> str:
        parts = []
        if self.kept or self.dropped:
            parts += [f"kept {self.kept}", f"dropped {self.dropped} ({self.dropped / (self.kept + self.dropped):.0%})"]
        if self.failed:
            parts.append(f"failed {self.failed} ({self.failed / (self.done + self.failed):.0%})")
        if self.ledger is not None and self.start is not None:
            now = self.ledger.spent()
            parts.append(f"{_short(now.tokens - self.start.tokens)} tokens")
            if self.ledger.priced:
                parts.append(f"cost {money(now.cost - self.start.cost)}")
        return " · ".join(parts)


def _short(count: int) -> str:
    return f"{count / 1e6:.2f}M" if count >= 1e6 else f"{count / 1e3:.1f}k" if count >= 1e4 else str(count)


@contextmanager
def progress(runner: Runner, stage: str, total: int, completed: int) -> Iterator[Callable[..., None]]:
    """A rich progress bar for one stage (none in --quiet mode) with the stage's running numbers
    (`Tally`). Yields `unit_done(ok, kept=None)`, which advances it and tells the runner's `on_unit`."""
    bar: Progress | None = None
    tally = Tally(runner.ledger)
    if not runner.quiet:
        bar = Progress(TextColumn(f"[bold]{stage:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("{task.fields[line]}"), console=runner.console, transient=False)
        bar.start()
    task = bar.add_task(stage, total=total, completed=completed, line="") if bar else None

    def unit_done(ok: bool, kept: bool | None = None) -> None:
        tally.count(ok, kept)
        if bar is not None:
            bar.update(task, advance=1, line=tally.line())  # type: ignore[arg-type]
        if runner.on_unit is not None:
            runner.on_unit(ok)

    try:
        yield unit_done
    finally:
        if bar is not None:
            bar.stop()
