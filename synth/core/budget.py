"""The run's spend and its hard budget (`llm.budget: {tokens: N, cost: X}`).

Every LLM client of a run (every role, every rollout worker process) charges one `Ledger`: a
24-byte file in the run dir (`ledger.bin`: magic, tokens, cost), memory-mapped by each process and
updated under `flock`. So the budget is shared across processes without a coordinator, and the
spend survives a kill -9 (the manifest's usage is written after each stage, the ledger after each
response). It counts what the endpoint was sent and answered, across every invocation of the run
dir: cache hits are free, so a rerun with a higher budget pays only for what is new.

A client asks `check()` before it sends a request (each retry attempt too). Once the spend has
reached a limit, `check()` raises `BudgetReached` and nothing more is sent. Requests already in
flight still complete and are charged: the overshoot is at most the requests in flight across
every process (`llm.concurrency` in total, rollout workers share it) and their tokens.

`BudgetReached` is a BaseException, like a cancellation, on purpose: nothing between the client
and the unit runner may turn it into data (a tool result "Error: ...", an errors.jsonl record),
so a unit that meets it is abandoned whole (no record written) and is redone on resume, where the
response cache answers everything it had already asked.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from synth.core.cost import Price, money, price_of

LEDGER_FILE = "ledger.bin"
_LAYOUT = struct.Struct("<8sqd")  # magic, tokens, cost
_MAGIC = b"synthlg1"


class BudgetConfig(BaseModel, extra="forbid"):
    tokens: int | None = Field(None, ge=1, description="Stop sending requests once the run has spent this many "
                               "tokens (prompt + completion, every invocation of the run dir).")
    cost: float | None = Field(None, gt=0, description="Stop sending requests once the run's cost reaches this "
                               "(in the unit of llm.prices, which it needs).")

    def limits(self) -> dict[str, float]:
        return {name: value for name, value in (("tokens", self.tokens), ("cost", self.cost)) if value is not None}


@dataclass(frozen=True)
class Spent:
    tokens: int = 0
    cost: float = 0.0


class BudgetReached(BaseException):
    """The run's spend reached `llm.budget.<which>`: no new request is sent (see the module docstring)."""

    def __init__(self, which: str, limit: float, spent: Spent):
        self.which, self.limit, self.spent = which, limit, spent
        amount = f"{spent.tokens:,} tokens" if which == "tokens" else f"cost {money(spent.cost)}"
        shown = f"{int(limit):,}" if which == "tokens" else money(limit)
        super().__init__(f"the {'token' if which == 'tokens' else 'cost'} budget is reached: {amount} spent "
                         f"of llm.budget.{which} {shown}")


class Ledger:
    """One process's handle on the run's ledger file, with the limits and prices it charges by."""

    def __init__(self, path: Path, budget: BudgetConfig | None = None, prices: dict[str, Price] | None = None):
        self.path, self.budget, self.prices = Path(path), budget or BudgetConfig(), dict(prices or {})
        self._limits = self.budget.limits()
        self._prices: dict[str, Price | None] = {}
        self._fd = os.open(self.path, os.O_RDWR)
        try:
            self._map = mmap.mmap(self._fd, _LAYOUT.size)
            if _LAYOUT.unpack_from(self._map)[0] != _MAGIC:
                raise ValueError(f"{self.path} is not a synth ledger")
        except BaseException:
            os.close(self._fd)
            raise

    @classmethod
    def open(cls, path: Path, budget: BudgetConfig | None = None, prices: dict[str, Price] | None = None, *,
             start: Spent = Spent()) -> Ledger:
        """The ledger at `path`, created holding `start` when there is none (a run dir written before
        ledgers existed, or merged from shards: its manifest's usage is the spend so far)."""
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(_LAYOUT.pack(_MAGIC, start.tokens, start.cost))
            os.replace(tmp, path)
        return cls(path, budget, prices)

    @property
    def priced(self) -> bool:
        return bool(self.prices)

    def price(self, model: str) -> Price | None:
        """The price of requests naming `model` (None: unpriced); a ConfigError when the table lacks it."""
        if model not in self._prices:
            self._prices[model] = price_of(self.prices, model)
        return self._prices[model]

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        price = self.price(model)
        return price.cost(prompt_tokens, completion_tokens) if price else 0.0

    def spent(self) -> Spent:
        # Unlocked: a read racing a charge may see the one before it, which a progress line or the
        # check before a request can live with; charge() itself reads under the lock.
        _, tokens, cost = _LAYOUT.unpack_from(self._map)
        return Spent(tokens, cost)

    def check(self) -> None:
        """Raise BudgetReached when a limit is reached: called before every request is sent."""
        if not self._limits:
            return
        spent = self.spent()
        for which, limit in self._limits.items():
            if (spent.tokens if which == "tokens" else spent.cost) >= limit:
                raise BudgetReached(which, limit, spent)

    def charge(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """Add one answered request to the spend; returns its cost."""
        cost = self.cost(model, prompt_tokens, completion_tokens)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            _, tokens, total = _LAYOUT.unpack_from(self._map)
            _LAYOUT.pack_into(self._map, 0, _MAGIC, tokens + prompt_tokens + completion_tokens, total + cost)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return cost

    def close(self) -> None:
        if self._fd >= 0:
            self._map.close()
            os.close(self._fd)
            self._fd = -1
