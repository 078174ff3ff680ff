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

    def add(self, other: "Usage") -> None:
        for name in Usage.model_fields:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class UsageMeter:
    """Sums usage per stage. Used from one event loop, so it needs no lock."""

    def __init__(self) -> None:
        self._stages: dict[str, Usage] = {}

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
        stage: str | None = None,
    ) -> None:
        usage = self._stages.setdefault(stage or current_stage.get(), Usage())
        usage.requests += requests
        usage.cached += cached
        usage.retries += retries
        usage.failures += failures
        usage.prompt_tokens += prompt_tokens
        usage.completion_tokens += completion_tokens
        usage.seconds += seconds

    def by_stage(self) -> dict[str, Usage]:
        return {stage: usage.model_copy() for stage, usage in self._stages.items()}

    def total(self) -> Usage:
        total = Usage()
        for usage in self._stages.values():
            total.add(usage)
        return total
