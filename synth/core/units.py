"""The one runner every stage uses: units of work with resume, bounded concurrency, progress and the
error boundary. Rollout worker processes (synth/workers.py) share its bookkeeping (`pending`) and
its progress bar (`progress`)."""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Generic, Iterator, Protocol, Sequence, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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


def pending(runner: Runner, stage: str, out_kind: str, units: Sequence[Unit[U]]) -> tuple[StageStats, list[Unit[U]]]:
    """The stage's counters with `units` counted in, and those of them not done yet (resume: a unit
    with records in `out_kind` is done)."""
    stats = runner.stats.setdefault(stage, StageStats(stage))
    done = runner.store.done_units(out_kind)
    todo = [u for u in units if u.id not in done]
    stats.units += len(units)
    stats.skipped += len(units) - len(todo)
    return stats, todo


async def run_units(
    runner: Runner,
    stage: str,
    out_kind: str,
    units: Sequence[Unit[U]],
    work: Callable[[Unit[U]], Awaitable[list[Record]]],
    concurrency: int,
) -> StageStats:
    """Run `work` on every unit not already done, appending its records to `out_kind`.

    What escapes `work` goes through the error boundary: an expected failure (provider, sandbox,
    tool, parse, timeout) is recorded in errors.jsonl with the unit and the run goes on; anything
    else is a bug and propagates.
    """
    stats, todo = pending(runner, stage, out_kind, units)
    started = time.monotonic()
    token = current_stage.set(stage)
    queue: asyncio.Queue[Unit[U]] = asyncio.Queue()
    for unit in todo:
        queue.put_nowait(unit)

    if runner.on_start is not None:
        runner.on_start()
    with progress(runner, stage, len(units), len(units) - len(todo)) as unit_done:

        async def worker() -> None:
            while not queue.empty():
                unit = queue.get_nowait()
                try:
                    records = await work(unit)
                except Exception as exc:
                    runner.store.failure(stage, unit.id, boundary(exc))
                    stats.failed += 1
                    unit_done(False)
                else:
                    stats.records += runner.store.append(out_kind, records)
                    stats.done += 1
                    unit_done(True)

        try:
            await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(todo))))))
        finally:
            current_stage.reset(token)
            stats.seconds += time.monotonic() - started
    return stats


@contextmanager
def progress(runner: Runner, stage: str, total: int, completed: int) -> Iterator[Callable[[bool], None]]:
    """A rich progress bar for one stage (none in --quiet mode). Yields `unit_done(ok)`, which
    advances it and tells the runner's `on_unit`."""
    bar: Progress | None = None
    if not runner.quiet:
        bar = Progress(TextColumn(f"[bold]{stage:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=runner.console, transient=False)
        bar.start()
    task = bar.add_task(stage, total=total, completed=completed) if bar else None

    def unit_done(ok: bool) -> None:
        if bar is not None:
            bar.advance(task)  # type: ignore[arg-type]
        if runner.on_unit is not None:
            runner.on_unit(ok)

    try:
        yield unit_done
    finally:
        if bar is not None:
            bar.stop()
