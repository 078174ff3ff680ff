"""A rollout worker process (`python -m synth.rollout_worker`), started by synth/workers.py.

It reads its job (config, endpoint, units) as one JSON line on stdin, starts its pool and tool
hosts, says `ready`, waits for `go`, runs the rollout stage on its units (appending to the shared
run dir through a `shared` store) and reports each unit and then its counts and usage as JSON
lines on stdout, with the budget that stopped it if the run's ledger reached one (its episodes in
flight are then abandoned: not done, redone on resume). It exits at once when its stdin closes:
the parent is gone.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from dataclasses import asdict
from typing import Any, Callable

from pathlib import Path

from synth.config import RunConfig
from synth.core.budget import LEDGER_FILE, BudgetReached, Ledger
from synth.context import Context
from synth.core.llm import LLM
from synth.core.llm_cache import ResponseCache
from synth.core.store import RunStore
from synth.core.units import StageStats
from synth.core.usage import UsageMeter
from synth.stages.rollout import make_rollouts
from synth.workers import COUNTS, Job


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
    cfg = RunConfig.model_validate(job.config)
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    threading.Thread(target=_watch_stdin, args=(lines, lambda: loop.call_soon_threadsafe(started.set)),
                     daemon=True).start()
    store = RunStore(cfg.run_dir, shared=True)
    meter = UsageMeter()
    ledger = Ledger(store.root / LEDGER_FILE, cfg.llm.budget, cfg.llm.prices)  # the parent made it
    stop: BudgetReached | None = None
    async with LLM(cfg.llm, base_url=job.base_url, meter=meter, cache=ResponseCache(Path(job.cache)),
                   ledger=ledger) as llm:
        ctx = Context(cfg=cfg, store=store, llm=llm, meter=meter, quiet=True, ledger=ledger,
                      on_unit=lambda ok: _emit({"event": "unit", "ok": ok}))

        async def ready() -> None:
            _emit({"event": "ready"})
            await started.wait()

        try:
            stats = await make_rollouts(ctx, only=set(job.units), ready=ready)
        except BudgetReached as reached:
            stop, stats = reached, ctx.stats.get("rollout") or StageStats("rollout")
    ledger.close()
    budget = stop and {"which": stop.which, "limit": stop.limit, "tokens": stop.spent.tokens, "cost": stop.spent.cost}
    _emit({"event": "done", "stats": {k: v for k, v in asdict(stats).items() if k in COUNTS},
           "usage": {stage: usage.model_dump() for stage, usage in meter.by_stage().items()}, "budget": budget})


def main() -> None:
    lines = _stdin_lines()
    job = Job.model_validate_json(next(lines, b"{}"))
    asyncio.run(_work(job, lines))


if __name__ == "__main__":
    main()
