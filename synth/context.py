"""What every stage gets: the config, the run dir, the LLM client, usage and spend, the console."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from rich.console import Console

from synth.config import RunConfig
from synth.core.budget import BudgetReached, Ledger
from synth.core.hashing import content_hash, derive_seed
from synth.core.llm import LLM
from synth.core.store import RunStore
from synth.core.units import StageStats
from synth.core.usage import UsageMeter


@dataclass
class Context:
    """One invocation's view of a run; a `Runner` for synth.core.units.run_units."""

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
    ledger: Ledger | None = None  # the run's spend and budget, shared by every client and worker process
    unit_limit: int | None = None  # at most this many units per stage: the pilot of `synth run --estimate`
    stopped: BudgetReached | None = None  # the budget that stopped this invocation, if one did
    usage_base: dict[str, dict] = field(default_factory=dict)  # manifest usage when the run opened (cumulative)
    started: float = field(default_factory=time.monotonic)

    def sandbox_labels(self, **extra: str) -> dict[str, str]:
        """Labels of this run's sandboxes: its name (for `synth sandboxes gc --run NAME`) and the id of
        its run directory, by which the run's next invocation finds what a killed one left behind
        (two runs of one name in different runs_dir must not remove each other's sandboxes)."""
        return {"synth.run": self.cfg.name, "synth.run_id": run_id(self.cfg), **extra}

    def seed_for(self, *parts: Any) -> int:
        """A seed for one request or choice: the run's seed and what the request is for."""
        return derive_seed(self.cfg.seed, *parts)


def run_id(cfg: RunConfig) -> str:
    """A short id of the run directory (its resolved path): what sandbox labels use to tell runs apart."""
    return content_hash(str(cfg.run_dir.resolve()), 12)
