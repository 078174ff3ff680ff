"""Prices turn token usage into cost (`llm.prices`).

A price is per million input (prompt) and output (completion) tokens, keyed by the model name a
request sends: a role whose client sends a model of its own is priced by that model's entry. The
money unit is whatever the table is written in; the pipeline prints amounts without a symbol.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from synth.core.errors import ConfigError

COST_DIGITS = 6  # a cheap model costs well under a cent per request: keep the sums honest


class Price(BaseModel, extra="forbid"):
    input: float = Field(ge=0, description="Price per million input (prompt) tokens.")
    output: float = Field(ge=0, description="Price per million output (completion) tokens.")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


def price_of(prices: dict[str, Price], model: str) -> Price | None:
    """The price of `model`; None when nothing is priced. A table that prices other models but not
    this one is a config error: a run whose cost is silently partial would be worse than none."""
    if not prices:
        return None
    price = prices.get(model)
    if price is None:
        listed = ", ".join(sorted(prices))
        raise ConfigError(f"llm.prices has no entry for model {model!r} (the model name requests send; priced: "
                          f"{listed}); add `{model}: {{input: ..., output: ...}}` (per million tokens) under "
                          "llm.prices, or remove llm.prices to run unpriced")
    return price


def cost_section(usage: dict[str, dict[str, Any]], kept: int, prices: dict[str, Price]) -> dict[str, Any]:
    """The manifest's `cost` section from its cumulative `usage`: per stage, in total and per kept trajectory."""
    by_stage = {stage: round(row.get("cost", 0.0), COST_DIGITS) for stage, row in usage.items()}
    total = round(sum(by_stage.values()), COST_DIGITS)
    return {
        "total": total,
        "by_stage": by_stage,
        "kept_trajectories": kept,
        "per_kept_trajectory": round(total / kept, COST_DIGITS) if kept else None,
        "prices": {model: price.model_dump() for model, price in prices.items()},
    }


def money(amount: float) -> str:
    """An amount for people: four significant digits, no exponent for the usual sizes."""
    return f"{amount:.4f}" if amount < 1 else f"{amount:,.2f}"
