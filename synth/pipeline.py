"""The one runner every stage uses: bounded concurrency, resume, progress, the error boundary."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Generic, Sequence, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from synth.config import RunConfig
from synth.errors import RECORDED_ERRORS, ParseError
from synth.llm import LLM
from synth.records import Record
from synth.store import RunStore
from synth.usage import UsageMeter, current_stage

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


@dataclass
class Context:
    """What every stage needs: config, run dir, LLM client, usage and the console."""

    cfg: RunConfig
    store: RunStore
    llm: LLM
    meter: UsageMeter
    console: Console = field(default_factory=lambda: Console(stderr=True))
    quiet: bool = False
    shard: tuple[int, int] | None = None  # (index, count) of `synth run --shard I/N`: rollouts split by unit id
    stats: dict[str, StageStats] = field(default_factory=dict)
    on_unit: Callable[[bool], None] | None = None  # told after each unit (done or failed): rollout workers report
    on_start: Callable[[], None] | None = None  # told when a stage's units start, after its warm-up (benchmarks)

    def seed_for(self, *parts: Any) -> int:
        from synth.hashing import content_hash

        return int(content_hash([self.cfg.seed, *parts], 8), 16)


async def run_units(
    ctx: Context,
    stage: str,
    out_kind: str,
    units: Sequence[Unit[U]],
    work: Callable[[Unit[U]], Awaitable[list[Record]]],
    concurrency: int,
) -> StageStats:
    """Run `work` on every unit not already done, appending its records to `out_kind`.

    Expected failures (provider, sandbox, tool, parse, timeout) are recorded in errors.jsonl with
    the unit and the run goes on; anything else is a bug and propagates.
    """
    stats = ctx.stats.setdefault(stage, StageStats(stage))
    done = ctx.store.done_units(out_kind)
    todo = [u for u in units if u.id not in done]
    stats.units += len(units)
    stats.skipped += len(units) - len(todo)
    started = time.monotonic()
    token = current_stage.set(stage)
    queue: asyncio.Queue[Unit[U]] = asyncio.Queue()
    for unit in todo:
        queue.put_nowait(unit)

    if ctx.on_start is not None:
        ctx.on_start()
    with _progress(ctx, stage, len(units), len(units) - len(todo)) as advance:

        async def worker() -> None:
            while not queue.empty():
                unit = queue.get_nowait()
                failed_before = stats.failed
                try:
                    records = await work(unit)
                except (*RECORDED_ERRORS, TimeoutError) as exc:
                    ctx.store.error(stage, unit.id, exc, raw=exc.raw if isinstance(exc, ParseError) else "")
                    stats.failed += 1
                else:
                    stats.records += ctx.store.append(out_kind, records)
                    stats.done += 1
                advance()
                if ctx.on_unit is not None:
                    ctx.on_unit(stats.failed == failed_before)

        try:
            await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(todo))))))
        finally:
            current_stage.reset(token)
            stats.seconds += time.monotonic() - started
    return stats


class _progress:
    """A rich progress bar for one stage, or nothing in --quiet mode."""

    def __init__(self, ctx: Context, stage: str, total: int, completed: int):
        self.ctx, self.stage, self.total, self.completed = ctx, stage, total, completed
        self.progress: Progress | None = None

    def __enter__(self) -> Callable[[], None]:
        if self.ctx.quiet:
            return lambda: None
        self.progress = Progress(
            TextColumn(f"[bold]{self.stage:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.ctx.console, transient=False,
        )
        self.progress.start()
        task = self.progress.add_task(self.stage, total=self.total, completed=self.completed)
        return lambda: self.progress.advance(task)  # type: ignore[union-attr]

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
