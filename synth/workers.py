"""Rollout worker processes (`rollout.workers: N`).

One event loop saturates one core at a few hundred LLM calls per second, so the rollout stage can
spread its episodes over N processes (`python -m synth.workers`), each with its own event loop,
LLM client, response-cache segment and sandbox pool, all appending to the same run directory.

The parent keeps the run dir's lock and decides which units are left. It splits them round-robin and
hands each worker its share as one JSON line on stdin. Then:
- it waits until every worker reports `ready` (its pool and tool hosts started) and tells them all
  `go` at once: the stage's clock and its progress bar start there;
- it advances the progress bar on each worker's `unit` line;
- it adds each worker's counts and usage (its `done` line) to its own.
A worker whose stdin closes (its parent died, even by kill -9) exits at once. A failed worker fails
the stage with the end of its log (`workers/rollout-<i>.log` in the run dir) after the others finish:
their episodes are kept and a rerun does the rest.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import BaseModel

from synth.config import RunConfig
from synth.context import Context
from synth.core.errors import WorkerError
from synth.core.units import StageStats, Unit, pending, progress
from synth.core.usage import Usage

_COUNTS = ("done", "failed", "records")


class Job(BaseModel):
    """What a worker gets on stdin."""

    config: dict[str, Any]
    base_url: str
    units: list[str]
    index: int


def worker_config(cfg: RunConfig, index: int, workers: int) -> dict[str, Any]:
    """The worker's share of concurrency, LLM concurrency and pool size (the first ones get the rest)."""

    def share(total: int) -> int:
        return max(1, total // workers + (index < total % workers))

    rollout, sandbox = cfg.rollout, cfg.rollout.sandbox
    if sandbox.pool_size:
        sandbox = sandbox.model_copy(update={"pool_size": share(sandbox.pool_size)})
    rollout = rollout.model_copy(update={"workers": 1, "concurrency": share(rollout.concurrency), "sandbox": sandbox})
    llm = cfg.llm.model_copy(update={"concurrency": share(cfg.llm.concurrency)})
    return cfg.model_copy(update={"rollout": rollout, "llm": llm}).model_dump(mode="json")


async def run_in_workers(ctx: Context, stage: str, out_kind: str, units: Sequence[Unit]) -> StageStats:
    """Run the units not done yet in rollout.workers processes (each runs the stage on its share)."""
    stats, todo = pending(ctx, stage, out_kind, units)
    count = min(ctx.cfg.rollout.workers, len(todo), ctx.cfg.rollout.concurrency)  # each runs one episode at least
    if count == 0:
        return stats
    base_url = await ctx.llm.endpoint()  # started once here, not once per worker
    logs = ctx.store.root / "workers"
    logs.mkdir(exist_ok=True)
    workers = [_Worker(i, logs / f"{stage}-{i}.log") for i in range(count)]
    with progress(ctx, stage, len(units), len(units) - len(todo)) as unit_done:
        try:
            for worker in workers:
                job = Job(config=worker_config(ctx.cfg, worker.index, count), base_url=base_url,
                          units=[u.id for u in todo[worker.index::count]], index=worker.index)
                await worker.start(job)
            await asyncio.gather(*(w.until_ready() for w in workers))
            started = time.monotonic()
            if ctx.on_start is not None:
                ctx.on_start()
            for worker in workers:
                worker.go()
            results = await asyncio.gather(*(w.finish(unit_done) for w in workers), return_exceptions=True)
            stats.seconds += time.monotonic() - started
        finally:
            await asyncio.gather(*(w.kill() for w in workers), return_exceptions=True)
    ctx.store.forget(out_kind)
    ctx.store.forget("errors")
    for result in results:
        if isinstance(result, dict):
            for name in _COUNTS:
                setattr(stats, name, getattr(stats, name) + result["stats"][name])
            for stage_name, usage in result["usage"].items():
                ctx.meter.record(stage=stage_name, **Usage.model_validate(usage).model_dump())
    if failed := [r for r in results if isinstance(r, BaseException)]:
        raise failed[0]
    return stats


class _Worker:
    """One `python -m synth.workers` process, seen from the parent."""

    def __init__(self, index: int, log: Path):
        self.index, self.log = index, log
        self.proc: asyncio.subprocess.Process | None = None
        self.result: dict[str, Any] | None = None

    async def start(self, job: Job) -> None:
        with open(self.log, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "synth.workers", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=log, limit=1 << 24)
        self.proc.stdin.write(job.model_dump_json().encode() + b"\n")
        await self.proc.stdin.drain()

    async def until_ready(self) -> None:
        while (event := await self._next()) != {"event": "ready"}:
            raise self._failure(f"said {event!r} before ready")

    def go(self) -> None:
        self.proc.stdin.write(b"go\n")  # small: the pipe buffer takes it without a drain

    async def finish(self, on_unit: Callable[[bool], None]) -> dict[str, Any]:
        while (event := await self._next()).get("event") == "unit":
            on_unit(event["ok"])
        if event.get("event") != "done":
            raise self._failure(f"said {event!r}")
        if await self.proc.wait() != 0:
            raise self._failure("exited after its last episode")
        return event

    async def _next(self) -> dict[str, Any]:
        line = await self.proc.stdout.readline()
        if not line:
            await self.proc.wait()
            raise self._failure("ended early")
        return json.loads(line)

    def _failure(self, what: str) -> WorkerError:
        tail = self.log.read_text(errors="replace")[-2000:].strip() if self.log.exists() else ""
        code = self.proc.returncode if self.proc else None
        return WorkerError(f"rollout worker {self.index} {what} (exit code {code}); finished episodes are kept, "
                           f"rerun to do the rest. The end of {self.log}:\n{tail}")

    async def kill(self) -> None:
        """Ends the process if it still runs (a failed stage, a cancellation); closes its stdin."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.proc.stdin.close()


# ---------------------------------------------------------------- the worker process


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.buffer.write(json.dumps(event).encode() + b"\n")
    sys.stdout.buffer.flush()


def _stdin_lines():
    """Lines of fd 0, read raw: a thread blocked in a buffered stdin would abort the interpreter's exit."""
    buffer = b""
    while chunk := os.read(0, 65536):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line


def _watch_stdin(lines, go: Callable[[], None]) -> None:
    """`go` on the parent's go line; exit at once when stdin closes: the parent is gone."""
    for line in lines:
        if line.strip() == b"go":
            go()
    os._exit(1)


async def _work(job: Job, lines) -> None:
    from synth.core.llm import LLM
    from synth.core.llm_cache import ResponseCache
    from synth.rollout import make_rollouts
    from synth.core.store import RunStore
    from synth.core.usage import UsageMeter

    cfg = RunConfig.model_validate(job.config)
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    threading.Thread(target=_watch_stdin, args=(lines, lambda: loop.call_soon_threadsafe(started.set)),
                     daemon=True).start()
    store = RunStore(cfg.run_dir, shared=True)
    meter = UsageMeter()
    async with LLM(cfg.llm, base_url=job.base_url, meter=meter, cache=ResponseCache(store.root / "cache")) as llm:
        ctx = Context(cfg=cfg, store=store, llm=llm, meter=meter, quiet=True,
                      on_unit=lambda ok: _emit({"event": "unit", "ok": ok}))

        async def ready() -> None:
            _emit({"event": "ready"})
            await started.wait()

        stats = await make_rollouts(ctx, only=set(job.units), ready=ready)
    _emit({"event": "done", "stats": {k: v for k, v in asdict(stats).items() if k in _COUNTS},
           "usage": {stage: usage.model_dump() for stage, usage in meter.by_stage().items()}})


def main() -> None:
    lines = _stdin_lines()
    job = Job.model_validate_json(next(lines, b"{}"))
    asyncio.run(_work(job, lines))


if __name__ == "__main__":
    main()
