"""LLM usage accounting per pipeline stage.

The pipeline sets `current_stage` around each stage; every LLM call records under it, so the
manifest can report requests, cache hits, retries, tokens and time per stage without threading a
stage name through every call.
"""

from contextvars import ContextVar

from pydantic import BaseModel

current_stage: ContextVar[str] = ContextVar("current_stage", default="other")


class Usage(BaseModel):
    requests: int = 0
    """HTTP requests sent (each retry attempt counts)."""
    cached: int = 0
    """Calls answered from the response cache, with no request."""
    retries: int = 0
    failures: int = 0
    """Calls that ended in a ProviderError."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    """Wall time spent in HTTP requests."""
    cost: float = 0.0
    """Cost of the tokens sent and answered, by llm.prices (0 when unpriced)."""
    cached_tokens: int = 0
    """Tokens of the calls the cache answered: what they cost the run that first sent them."""
    cached_cost: float = 0.0
    """What the cached calls would have cost at today's prices (`synth run --estimate` projects with it)."""

    def add(self, other: "Usage") -> None:
        for name in Usage.model_fields:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class UsageMeter:
    """Sums usage per stage. Used from one event loop, so it needs no lock. Counts are kept in plain
    lists (a pydantic model's __setattr__ cost ~0.1 ms per recorded call, a tenth of a call's CPU)."""

    _FIELDS = tuple(Usage.model_fields)

    def __init__(self) -> None:
        self._stages: dict[str, list[float]] = {}

    def record(
        self,
        *,
        requests: int = 0,
        cached: int = 0,
        retries: int = 0,
        failures: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        seconds: float = 0.0,
        cost: float = 0.0,
        cached_tokens: int = 0,
        cached_cost: float = 0.0,
        stage: str | None = None,
    ) -> None:
        stage = stage or current_stage.get()
        counts = self._stages.get(stage)
        if counts is None:
            counts = self._stages[stage] = [0] * len(self._FIELDS)
        for i, value in enumerate((requests, cached, retries, failures, prompt_tokens, completion_tokens, seconds,
                                        cost, cached_tokens, cached_cost)):
            counts[i] += value

    def by_stage(self) -> dict[str, Usage]:
        return {stage: Usage(**dict(zip(self._FIELDS, counts))) for stage, counts in self._stages.items()}

    def total(self) -> Usage:
        total = Usage()
        for usage in self.by_stage().values():
            total.add(usage)
        return total
