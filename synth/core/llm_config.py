"""The `llm` section of the run config: the endpoint, per-call-type completion limits and per-role models.

Roles. The pipeline's LLM calls play four roles besides writing tools, agents and tasks: the `agent`
being recorded, the `user` simulator, the `tool_simulator` and the `judge`. Each may name its own
model, sampling and endpoint under `llm.roles.<role>`; what a role leaves unset comes from `llm`.
A judge that is the policy grading itself is half blind, so a stronger (or just different) judge
is one config line: `llm: {roles: {judge: {model: big-model, base_url: http://judge:8000/v1}}}`.

Completion limits. One `max_tokens` for every call was sized for the 135M default model: on a strong
model a 10-criterion judgment or a list of gold tasks is cut at 512 tokens and fails to parse, and
a reasoning model spends that much on thinking alone. `llm.call_max_tokens` sizes each call type
(defaults below; entries given in the config replace only themselves); calls of no listed type
(tool evolution, agents) use `llm.max_tokens`. A role's own `max_tokens` wins over its call type's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from synth.core.budget import BudgetConfig
from synth.core.cost import Price

Role = Literal["agent", "user", "tool_simulator", "judge"]
ROLES: tuple[Role, ...] = ("agent", "user", "tool_simulator", "judge")
CallType = Literal["agent", "user", "tool_simulator", "judge", "tasks", "rubric"]
# Measured needs, with room for a reasoning model's thinking: a judge reason is ~50-80 tokens per
# criterion (20 criteria ~1600), a gold task with its initial state ~1000-2000, an agent turn of a
# reasoning model 1-3k. llama.cpp clamps a limit above its context to what is left of it.
DEFAULT_CALL_MAX_TOKENS: dict[str, int] = {
    "agent": 4096, "user": 1024, "tool_simulator": 1024, "judge": 4096, "tasks": 8192, "rubric": 4096,
}
# What makes a role a client of its own rather than a view on the run's client (same connection pool).
ENDPOINT_KEYS = ("base_url", "api_key_env", "timeout_s", "max_retries", "concurrency")
# Operational keys: they do not decide the records, so the config hash leaves them out.
UNHASHED_KEYS = ENDPOINT_KEYS + ("prices", "budget")


class RoleConfig(BaseModel, extra="forbid"):
    """One role's overrides of `llm`; every key unset takes `llm`'s value."""

    base_url: str | None = Field(None, description="The role's own OpenAI-compatible endpoint (unset: llm's).")
    model: str | None = Field(None, description="Model name the role's requests send (unset: llm.model).")
    api_key_env: str | None = Field(None, description="Env var holding the role endpoint's key (unset: llm's).")
    temperature: float | None = Field(None, description="The role's default sampling temperature.")
    max_tokens: int | None = Field(None, ge=1, description="Completion limit of the role's calls (unset: llm.call_max_tokens[role]).")
    timeout_s: float | None = Field(None, gt=0)
    max_retries: int | None = Field(None, ge=0)
    concurrency: int | None = Field(None, ge=1, description="Requests in flight to the role's own endpoint.")
    structured_mode: Literal["auto", "json_schema", "json_object", "prompt"] | None = None


class LLMConfig(BaseModel, extra="forbid"):
    base_url: str | None = Field(
        None,
        description="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1. "
        "Unset: env OPENAI_BASE_URL, else the embedded local server.",
    )
    model: str = Field("smollm2", description="Model name sent in every request.")
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="Name of the environment variable holding the API key (the key itself is never "
        "stored or logged). Unset variable: a placeholder key, which local servers accept.",
    )
    temperature: float = Field(0.7, description="Default sampling temperature.")
    max_tokens: int = Field(512, description="Completion token limit of calls with no call type of their own "
                            "(tool evolution, agents); see call_max_tokens.")
    call_max_tokens: dict[CallType, int] = Field(
        default_factory=lambda: dict(DEFAULT_CALL_MAX_TOKENS),
        description="Completion token limit per call type (agent turns, user turns, tool simulation, the judge, "
        "task lists, rubrics); the entries given replace only themselves.")
    timeout_s: float = Field(120.0, description="Timeout of one HTTP request, in seconds.")
    max_retries: int = Field(4, description="Retries on 429, 408, 5xx, timeouts and connection errors.")
    concurrency: int = Field(8, ge=1, description="Maximum requests in flight for this client.")
    structured_mode: Literal["auto", "json_schema", "json_object", "prompt"] = Field(
        "auto",
        description="How structured() asks for JSON. auto: try response_format json_schema, then "
        "llama.cpp's json_object+schema, then a schema in the prompt; remember what works.",
    )
    roles: dict[Role, RoleConfig] = Field(
        default_factory=dict, description="Per-role overrides (agent, user, tool_simulator, judge): model, sampling, "
        "max_tokens, or an endpoint of their own. Unset: the role uses llm as it is.")
    prices: dict[str, Price] = Field(
        default_factory=dict,
        description="Price per million input and output tokens, per model name requests send, e.g. "
        "{gpt-4o-mini: {input: 0.15, output: 0.6}}: the summary, manifest, card and view show cost. "
        "Operational: not in the config hash.",
    )
    budget: BudgetConfig | None = Field(
        None, description="A hard budget for the run dir, {tokens: N, cost: X} (either or both): no new request "
        "is sent once the run's spend reaches it; the run stops cleanly and exits with code 3; rerun with a "
        "higher budget to resume. Operational: not in the config hash.",
    )

    @model_validator(mode="after")
    def _cost_budget_needs_prices(self) -> "LLMConfig":
        if self.budget and self.budget.cost is not None and not self.prices:
            raise ValueError("budget.cost needs llm.prices (price per million input/output tokens per model) "
                             "to know what a request costs; add llm.prices or use budget.tokens")
        return self

    @field_validator("call_max_tokens")
    @classmethod
    def _merge_defaults(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if v < 1}
        if bad:
            raise ValueError(f"token limits must be at least 1, got {bad}")
        return {**DEFAULT_CALL_MAX_TOKENS, **value}

    def tokens_for(self, call: str) -> int:
        """The completion limit of one call type (llm.max_tokens for a type that has none)."""
        return self.call_max_tokens.get(call, self.max_tokens)  # type: ignore[call-overload]

    def for_role(self, role: Role) -> "LLMConfig":
        """This config as the role sees it: its overrides applied, its call type's max_tokens, no roles."""
        own = self.roles.get(role) or RoleConfig()
        update: dict[str, Any] = {k: v for k, v in own.model_dump(exclude_none=True).items()}
        update.setdefault("max_tokens", self.tokens_for(role))
        return self.model_copy(update={**update, "roles": {}})

    def has_own_endpoint(self, role: Role) -> bool:
        """The role talks to another server (or with other connection settings) than the run's client."""
        own = self.roles.get(role)
        return own is not None and any(getattr(own, key) is not None for key in ENDPOINT_KEYS)


def hashed_llm_section(data: dict[str, Any]) -> dict[str, Any]:
    """The `llm` section as the config hash sees it (a dump with defaults excluded): without the
    endpoint and connection keys, of llm itself and of every role."""
    data = {k: v for k, v in data.items() if k not in UNHASHED_KEYS}
    roles = {role: {k: v for k, v in (cfg or {}).items() if k not in UNHASHED_KEYS}
             for role, cfg in (data.pop("roles", None) or {}).items()}
    roles = {role: cfg for role, cfg in roles.items() if cfg}
    if roles:
        data["roles"] = roles
    return data
