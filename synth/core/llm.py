"""The LLM client: one OpenAI-compatible endpoint with retries, a concurrency limit, a response
cache, usage accounting and structured output.

This is the pipeline's hot path (DESIGN.md, "Facts measured"; `python -m bench.llm_client`
measures it). Each request is serialized once (the same bytes are hashed for the cache key and
sent) and POSTed on an aiohttp session this client owns. Why not the `openai` SDK for the request:
`chat.completions.create` over httpx2 costs ~20x more CPU per call, and even a prebuilt body through
`client.post(...)` on the SDK's aiohttp transport pays its request options, httpx2 Request/URL/
header models and response wrapping, ~3x a bare aiohttp POST; at 256 requests in flight that is
the difference between an event loop that keeps up and one that is the bottleneck. We do not need
any of it: one endpoint, one method, our own retries and error mapping (status, Retry-After,
timeouts, connection errors; tests/test_llm.py). The SDK still provides the strict JSON Schema
conversion for structured output.
"""

import asyncio
import functools
import json
import logging
import os
import random
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Awaitable, Callable, Literal, TypeVar

import aiohttp
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field, ValidationError, model_validator

from synth.core.budget import BudgetConfig, Ledger
from synth.core.cost import Price
from synth.core.errors import ConfigError, ParseError, ProviderError
from synth.core.llm_cache import ResponseCache, digest, request_bytes
from synth.core.usage import UsageMeter

log = logging.getLogger(__name__)
T = TypeVar("T", bound=BaseModel)

StructuredMode = Literal["json_schema", "json_object", "prompt"]
RETRY_AFTER_CAP_S = 60.0
_FENCED = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


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
    max_tokens: int = Field(512, description="Default completion token limit per request.")
    timeout_s: float = Field(120.0, description="Timeout of one HTTP request, in seconds.")
    max_retries: int = Field(4, description="Retries on 429, 408, 5xx, timeouts and connection errors.")
    concurrency: int = Field(8, ge=1, description="Maximum requests in flight for this client.")
    structured_mode: Literal["auto", "json_schema", "json_object", "prompt"] = Field(
        "auto",
        description="How structured() asks for JSON. auto: try response_format json_schema, then "
        "llama.cpp's json_object+schema, then a schema in the prompt; remember what works.",
    )
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


class ChatResult(BaseModel):
    message: dict
    """The assistant message as an OpenAI dict; `tool_calls` only when there are some."""
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


class _HTTPFailure(Exception):
    """One failed attempt: an HTTP error status (status set) or a timeout/connection error."""

    def __init__(self, status: int | None, text: str, retry_after: float | None = None):
        super().__init__(f"HTTP {status}: {text}" if status else text)
        self.status, self.text, self.retry_after = status, text, retry_after

    def retryable(self) -> bool:
        return self.status is None or self.status in (408, 429) or self.status >= 500

    def rejects_format(self) -> bool:
        """Whether a structured-output probe failed because the server refuses that format."""
        text = self.text.lower()
        return self.status in (400, 422, 500) or "response_format" in text or "json_schema" in text


class _FormatRejected(Exception):
    """The server refused a response_format while structured() was probing for one that works."""


class _BadReply(Exception):
    """A structured reply that is not valid JSON for the schema (or was cut off)."""


class LLM:
    backoff_base_s = 0.5  # first retry waits 0.25-0.5 s, doubling per retry; tests shrink it
    backoff_max_s = 30.0

    def __init__(self, cfg: LLMConfig, *, base_url: str | None = None, meter: UsageMeter | None = None,
                 cache: ResponseCache | None = None, start_endpoint: Callable[[], Awaitable[str]] | None = None,
                 ledger: Ledger | None = None):
        """`start_endpoint` starts a server on the first request that the cache cannot answer and
        returns its URL: a rerun of a finished run then never starts the embedded model. `ledger`:
        the run's spend, charged per answered request and checked against the budget before each
        request is sent (synth/core/budget.py); shared by every client of the run."""
        self.cfg, self.meter, self.cache, self.ledger = cfg, meter or UsageMeter(), cache, ledger
        if ledger is not None:
            ledger.price(cfg.model)  # an unpriced model in a price table fails here, before any request
        self._api_key = os.environ.get(cfg.api_key_env) or "sk-no-key"
        self._sem = asyncio.Semaphore(cfg.concurrency)
        self._mode: StructuredMode | None = None if cfg.structured_mode == "auto" else cfg.structured_mode
        self._start_endpoint, self._starting = start_endpoint, asyncio.Lock()
        self._url = self._proxy = None
        url = base_url or cfg.base_url or os.environ.get("OPENAI_BASE_URL")
        if url:
            self._use_endpoint(url)
        elif start_endpoint is None:
            raise ConfigError("no LLM endpoint: set `llm.base_url` in the config or env OPENAI_BASE_URL")
        self._session: aiohttp.ClientSession | None = None  # opened on first use, in the running loop

    async def __aenter__(self) -> "LLM":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.cache is not None:
            self.cache.close()  # reopened on the next use: an LLM may be used again after aclose

    async def chat(self, messages: list[dict], *, tools: list[dict] | None = None, seed: int | None = None,
                   max_tokens: int | None = None, temperature: float | None = None) -> ChatResult:
        body = self._body(messages, seed, max_tokens, temperature)
        if tools:
            body["tools"], body["tool_choice"] = tools, "auto"
        return await self._complete(body)

    async def structured(self, messages: list[dict], schema: type[T], *, seed: int | None = None,
                         max_tokens: int | None = None, temperature: float | None = None) -> T:
        """Ask for JSON matching `schema`; one repair round on a bad reply, then ParseError."""
        convo = list(messages)
        for _ in range(2):
            result = await self._structured_call(convo, schema, seed, max_tokens, temperature)
            raw = result.message.get("content") or ""
            try:
                return _parse(raw, result.finish_reason, schema)
            except _BadReply as err:
                error = str(err)
            convo = [*convo, {"role": "assistant", "content": raw}, _repair_request(error)]
        raise ParseError(f"{schema.__name__}: no valid reply after a repair round: {error}", raw=raw)

    async def _structured_call(self, convo: list[dict], schema: type[BaseModel], *params) -> ChatResult:
        """One structured request in the working mode; while that is unknown, probe modes in order."""
        modes: list[StructuredMode] = [self._mode] if self._mode else ["json_schema", "json_object", "prompt"]
        bodies = {mode: self._structured_body(convo, schema, mode, *params) for mode in modes}
        if len(modes) > 1 and self.cache:
            # A rerun learns the mode from its cache instead of re-sending a rejected probe.
            cached = [m for m in modes if self.cache.has(self.cache.key(bodies[m]))]
            modes = cached[:1] or modes
        for mode in modes:
            try:
                result = await self._complete(bodies[mode], probe=mode != modes[-1])
            except _FormatRejected as err:
                log.info("structured mode %s rejected by the server, falling back: %s", mode, err)
                continue
            self._mode = mode
            return result
        raise AssertionError("unreachable: the last mode is never probed")

    def _structured_body(self, convo: list[dict], schema: type[BaseModel], mode: StructuredMode, *params) -> dict:
        if mode == "prompt":
            return self._body(_with_schema_prompt(convo, schema), *params)
        return {**self._body(convo, *params), "response_format": _response_format(schema, mode)}

    def _body(self, messages: list[dict], seed: int | None, max_tokens: int | None,
              temperature: float | None) -> dict:
        body = {
            "model": self.cfg.model,
            "messages": [_outgoing(m) for m in messages],
            "temperature": self.cfg.temperature if temperature is None else temperature,
            "max_tokens": self.cfg.max_tokens if max_tokens is None else max_tokens,
        }
        if seed is not None:
            body["seed"] = seed
        return body

    async def _complete(self, body: dict, *, probe: bool = False) -> ChatResult:
        """Cached POST /chat/completions. Only valid 200 responses reach the cache."""
        data = request_bytes(body)
        key = digest(data) if self.cache else None
        if key and (hit := self.cache.get(key)) is not None:
            result = _result(hit, cached=True)
            cost = self.ledger.cost(self.cfg.model, result.prompt_tokens, result.completion_tokens) if self.ledger else 0.0
            self.meter.record(cached=1, cached_tokens=result.prompt_tokens + result.completion_tokens, cached_cost=cost)
            return result
        payload = await self._post_with_retries(data, probe)
        try:
            result = _result(payload, cached=False)
        except ValueError as err:
            self.meter.record(failures=1)
            raise ProviderError(f"malformed chat completion response: {err}") from None
        cost = self.ledger.charge(self.cfg.model, result.prompt_tokens, result.completion_tokens) if self.ledger else 0.0
        self.meter.record(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens, cost=cost)
        if key:
            self.cache.put(key, payload)  # one append: cheaper here than a thread hop
        return result

    async def _post_with_retries(self, data: bytes, probe: bool) -> dict:
        for attempt in range(self.cfg.max_retries + 1):
            if self.ledger is not None:
                self.ledger.check()  # BudgetReached: not sent, and never recorded as the unit's failure
            try:
                return await self._post(data)
            except _HTTPFailure as failure:
                if probe and failure.status and failure.rejects_format():
                    raise _FormatRejected(str(failure)) from None
                if not failure.retryable() or attempt == self.cfg.max_retries:
                    self.meter.record(failures=1)
                    tries = f" after {attempt + 1} attempts" if failure.retryable() else ""
                    raise ProviderError(f"LLM request failed{tries}: {failure}") from None
                self.meter.record(retries=1)
                await asyncio.sleep(self._backoff(attempt, failure.retry_after))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def endpoint(self) -> str:
        """The base URL requests go to, starting the lazy endpoint if it has not started yet."""
        if self._url is None:
            await self._endpoint_ready()
        return self._url.removesuffix("/chat/completions")  # type: ignore[union-attr]

    def _use_endpoint(self, url: str) -> None:
        self._url = url.rstrip("/") + "/chat/completions"
        self._proxy = _env_proxy(url)

    async def _endpoint_ready(self) -> None:
        async with self._starting:  # concurrent first requests wait for one start
            if self._url is None:
                self._use_endpoint(await self._start_endpoint())  # type: ignore[misc]

    async def _post(self, data: bytes) -> dict:
        if self._url is None:
            await self._endpoint_ready()
        async with self._sem:
            start = time.perf_counter()
            try:
                async with self._open_session().post(self._url, data=data, proxy=self._proxy) as response:
                    raw = await response.read()
                    if response.status >= 300:  # redirects were followed: what is left is a failure
                        text = self._redact(raw[:1000].decode(errors="replace"))
                        raise _HTTPFailure(response.status, text, _retry_after(response.headers))
                return json.loads(raw)
            except TimeoutError:  # aiohttp's timeouts subclass it
                raise _HTTPFailure(None, f"TimeoutError: no complete response within {self.cfg.timeout_s:g} s") from None
            except aiohttp.ClientError as err:  # connection refused/reset, server disconnected, bad payload
                raise _HTTPFailure(None, self._redact(f"{type(err).__name__}: {err}")) from None
            except ValueError as err:  # json.JSONDecodeError, UnicodeDecodeError
                raise _HTTPFailure(None, f"response is not JSON: {err}") from None
            finally:
                self.meter.record(requests=1, seconds=time.perf_counter() - start)

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # `concurrency` bounds the requests in flight; the pool never needs more connections.
                connector=aiohttp.TCPConnector(limit=self.cfg.concurrency),
                timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s),
                headers={"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json",
                         "Accept": "application/json"},
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_CAP_S)
        delay = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
        return delay * (0.5 + random.random() / 2)  # jitter spreads out synchronized retries

    def _redact(self, text: str) -> str:
        # Servers may quote a bad key back in their error text; too short a key cannot be told from text.
        return text.replace(self._api_key, "<api-key>") if len(self._api_key) >= 8 else text


def _env_proxy(url: str) -> str | None:
    """The proxy HTTP(S)_PROXY / NO_PROXY choose for the endpoint (as the SDK's httpx2 honored them),
    resolved once: aiohttp's own trust_env would parse the environment again for every request."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        if ms := headers.get("retry-after-ms"):
            return max(0.0, float(ms) / 1000)
        if seconds := headers.get("retry-after"):
            return max(0.0, float(seconds))
    except ValueError:
        pass  # the HTTP-date form, which LLM servers do not use: back off exponentially
    return None


def _result(payload: dict, cached: bool) -> ChatResult:
    """The part of a chat completion we rely on, checked by hand: pydantic models here cost more than
    the check (this runs once per call)."""
    try:
        choice = payload["choices"][0]
        raw, finish_reason = choice["message"], choice.get("finish_reason")
        usage = payload.get("usage") or {}
        prompt_tokens, completion_tokens = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as err:
        raise ValueError(f"{type(err).__name__}: {err}") from None
    if not isinstance(raw, dict) or not (finish_reason is None or isinstance(finish_reason, str)):
        raise ValueError("choices[0] needs a message object and a string or null finish_reason")
    message = {"role": "assistant", "content": raw.get("content")}
    reasoning = raw.get("reasoning_content") or raw.get("reasoning")  # vLLM/SGLang name it either way
    if isinstance(reasoning, str) and reasoning:
        message["reasoning_content"] = reasoning
    if raw.get("tool_calls"):
        message["tool_calls"] = raw["tool_calls"]
    return ChatResult.model_construct(message=message, finish_reason=finish_reason, prompt_tokens=prompt_tokens,
                                      completion_tokens=completion_tokens, cached=cached)


def _outgoing(message: dict) -> dict:
    # Reasoning is kept for the dataset, not sent back: strict endpoints reject unknown message keys.
    if "reasoning_content" in message:
        message = {k: v for k, v in message.items() if k != "reasoning_content"}
    # llama-cpp's chatml-function-calling template answers 500 when content is missing here.
    if message.get("role") == "assistant" and message.get("tool_calls") and message.get("content") is None:
        return {**message, "content": ""}
    return message


@functools.cache  # schema generation costs more than the rest of a request
def _response_format(schema: type[BaseModel], mode: StructuredMode) -> dict:
    if mode == "json_object":  # llama.cpp's form: JSON mode constrained by a schema grammar
        return {"type": "json_object", "schema": schema.model_json_schema()}
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", schema.__name__)[:64]
    # OpenAI's strict mode needs every property required and additionalProperties false.
    strict = to_strict_json_schema(schema)
    return {"type": "json_schema", "json_schema": {"name": name, "schema": strict, "strict": True}}


@functools.cache
def _schema_instruction(schema: type[BaseModel]) -> str:
    return (
        "Reply with one JSON object only, no prose and no code fence, valid against this JSON Schema:\n"
        + json.dumps(schema.model_json_schema())
    )


def _with_schema_prompt(convo: list[dict], schema: type[BaseModel]) -> list[dict]:
    """The schema described in the system message: merged into the first one, as some chat templates
    accept only one system message, in first place."""
    instruction = _schema_instruction(schema)
    if convo and convo[0].get("role") == "system":
        return [{**convo[0], "content": f"{convo[0].get('content') or ''}\n\n{instruction}"}, *convo[1:]]
    return [{"role": "system", "content": instruction}, *convo]


def _parse(raw: str, finish_reason: str | None, schema: type[T]) -> T:
    if finish_reason == "length":
        raise _BadReply("the reply was cut off at max_tokens (finish_reason 'length'): the JSON is incomplete")
    try:
        # strict=False: small models put raw newlines inside strings; the content is still usable.
        data = json.loads(_json_text(raw), strict=False)
    except json.JSONDecodeError as err:
        raise _BadReply(f"invalid JSON: {err}") from None
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise _BadReply(_describe(err)) from None


def _json_text(raw: str) -> str:
    """The JSON inside a reply: a ```json fenced block, else from the first { to the last }."""
    if fenced := _FENCED.search(raw):
        return fenced.group(1)
    start, end = raw.find("{"), raw.rfind("}")
    return raw[start : end + 1] if 0 <= start < end else raw


def _describe(err: ValidationError) -> str:
    problems = [f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}"
                for e in err.errors(include_url=False)]
    more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
    return "; ".join(problems[:10]) + more


def _repair_request(error: str) -> dict:
    return {
        "role": "user",
        "content": f"Your reply could not be used: {error}\n"
        "Reply again with the corrected, complete JSON object only.",
    }
