"""Rollout worker processes (`rollout.workers: N`).

One event loop saturates one core at a few hundred LLM calls per second, so the rollout stage can
spread its episodes over N processes (`python -m synth.rollout_worker`), each with its own event loop,
LLM client, response-cache segment and sandbox pool, all appending to the same run directory.

The parent keeps the run dir's lock and decides which units are left. It splits them round-robin and
hands each worker its share as one JSON line on stdin. Then:
- it waits until every worker reports `ready` (its pool and tool hosts started) and tells them all
  `go` at once: the stage's clock and its progress bar start there;
- it advances the progress bar on each worker's `unit` line;
- it adds each worker's counts and usage (its `done` line) to its own.
A worker whose stdin closes (its parent died, even by kill -9) exits at once (synth/rollout_worker.py
is the worker's side). The run's budget is shared through its ledger file (synth/core/budget.py),
which every worker charges: when it is reached, each worker abandons its episodes in flight at
their next request and says so in its `done` line, and the parent raises BudgetReached once all
have finished. A failed worker fails
the stage with the end of its log (`workers/rollout-<i>.log` in the run dir) after the others finish:
their episodes are kept and a rerun does the rest.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import BaseModel

from synth.config import RunConfig
from synth.context import Context
from synth.core.budget import BudgetReached, Spent
from synth.core.errors import WorkerError
from synth.core.units import StageStats, Unit, pending, progress
from synth.core.usage import Usage

COUNTS = ("done", "failed", "records")


class Job(BaseModel):
    """What a worker gets on stdin."""

    config: dict[str, Any]
    base_url: str
    units: list[str]
    index: int
    cache: str
    """The response cache directory (the run dir's, or the real run's for an --estimate pilot)."""


def worker_config(cfg: RunConfig, index: int, workers: int) -> dict[str, Any]:
    """The worker's share of concurrency, LLM concurrency and pool size (the first ones get the rest)."""

    def share(total: int) -> int:
        return max(1, total // workers + (index < total % workers))

    rollout, sandbox = cfg.rollout, cfg.rollout.sandbox
    if sandbox.pool_size:
        sandbox = sandbox.model_copy(update={"pool_size": share(sandbox.pool_size)})
    rollout = rollout.model_copy(update={"workers": 1, "concurrency": share(rollout.concurrency), "sandbox": sandbox})
    roles = {role: own.model_copy(update={"concurrency": share(own.concurrency)}) if own.concurrency else own
             for role, own in cfg.llm.roles.items()}  # a role's own endpoint is shared out too
    llm = cfg.llm.model_copy(update={"concurrency": share(cfg.llm.concurrency), "roles": roles})
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
                job_cfg = ctx.cfg.model_copy(update={"llm": ctx.llm.cfg})  # with the model name the run sends
                job = Job(config=worker_config(job_cfg, worker.index, count), base_url=base_url,
                          units=[u.id for u in todo[worker.index::count]], index=worker.index,
                          cache=str(ctx.llm.cache.root if ctx.llm.cache else ctx.store.root / "cache"))
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
            for name in COUNTS:
                setattr(stats, name, getattr(stats, name) + result["stats"][name])
            for stage_name, usage in result["usage"].items():
                ctx.meter.record(stage=stage_name, **Usage.model_validate(usage).model_dump())
    if failed := [r for r in results if isinstance(r, BaseException)]:
        raise failed[0]
    if stops := [r["budget"] for r in results if r.get("budget")]:
        stop = stops[0]
        raise BudgetReached(stop["which"], stop["limit"], Spent(stop["tokens"], stop["cost"]))
    return stats


class _Worker:
    """One `python -m synth.rollout_worker` process, seen from the parent."""

    def __init__(self, index: int, log: Path):
        self.index, self.log = index, log
        self.proc: asyncio.subprocess.Process | None = None
        self.result: dict[str, Any] | None = None

    async def start(self, job: Job) -> None:
        with open(self.log, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "synth.rollout_worker", stdin=asyncio.subprocess.PIPE,
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
