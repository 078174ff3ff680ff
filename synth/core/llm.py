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
import copy
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
from pydantic import BaseModel, Field, ValidationError

from synth.core.budget import Ledger
from synth.core.errors import ConfigError, ParseError, ProviderError
from synth.core.llm_cache import ResponseCache, digest, request_bytes
from synth.core.llm_config import ROLES, LLMConfig, Role
from synth.core.usage import UsageMeter

log = logging.getLogger(__name__)
T = TypeVar("T", bound=BaseModel)

StructuredMode = Literal["json_schema", "json_object", "prompt"]
RETRY_AFTER_CAP_S = 60.0
_FENCED = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


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


class _Endpoint:
    """The connection side of a client: URL (started on first use when lazy), key, session, request limit.
    A client's role views share it, so every role on one server counts against one `concurrency`."""

    def __init__(self, cfg: LLMConfig, url: str | None, start: Callable[[], Awaitable[str]] | None):
        self.cfg = cfg  # timeout_s, max_retries, concurrency of this connection
        self.api_key = os.environ.get(cfg.api_key_env) or "sk-no-key"
        self.sem = asyncio.Semaphore(cfg.concurrency)
        self.start, self.starting = start, asyncio.Lock()
        self.url: str | None = None
        self.proxy: str | None = None
        self.session: aiohttp.ClientSession | None = None  # opened on first use, in the running loop
        if url:
            self.use(url)

    def use(self, url: str) -> None:
        self.url = url.rstrip("/") + "/chat/completions"
        self.proxy = _env_proxy(url)


class LLM:
    backoff_base_s = 0.5  # first retry waits 0.25-0.5 s, doubling per retry; tests shrink it
    backoff_max_s = 30.0

    def __init__(self, cfg: LLMConfig, *, base_url: str | None = None, meter: UsageMeter | None = None,
                 cache: ResponseCache | None = None, start_endpoint: Callable[[], Awaitable[str]] | None = None,
                 ledger: Ledger | None = None):
        """`start_endpoint` starts a server on the first request that the cache cannot answer and
        returns its URL: a rerun of a finished run then never starts the embedded model. `ledger`:
        the run's spend, charged per answered request and checked against the budget before each
        request is sent (synth/core/budget.py); shared by every client of the run and its role views."""
        self.cfg, self.meter, self.cache, self.ledger = cfg, meter or UsageMeter(), cache, ledger
        if ledger is not None:
            ledger.price(cfg.model)  # an unpriced model in a price table fails here, before any request
        self._mode: StructuredMode | None = None if cfg.structured_mode == "auto" else cfg.structured_mode
        url = base_url or cfg.base_url or (None if start_endpoint else os.environ.get("OPENAI_BASE_URL"))
        if not url and start_endpoint is None:
            raise ConfigError("no LLM endpoint: set `llm.base_url` in the config or env OPENAI_BASE_URL")
        self._ep = _Endpoint(cfg, url, start_endpoint)
        self._root: LLM | None = None  # set on role views: the client whose endpoint they share
        self._roles: dict[Role, LLM] = {}

    def role(self, role: Role) -> "LLM":
        """The client of one role (llm.roles): a view on this client's endpoint with the role's model,
        sampling and max_tokens, or a client of its own when the role names its own endpoint settings."""
        root = self._root or self
        if role not in root._roles:
            cfg = root.cfg.for_role(role)
            if root.cfg.has_own_endpoint(role):
                own = root.cfg.roles[role].base_url
                root._roles[role] = LLM(cfg.model_copy(update={"base_url": own}), meter=root.meter, cache=root.cache,
                                        start_endpoint=None if own else root.endpoint, ledger=root.ledger)
            else:
                if root.ledger is not None:
                    root.ledger.price(cfg.model)  # the role's model must be priced too
                view = copy.copy(root)
                view.cfg, view._root, view._roles = cfg, root, {}
                view._mode = None if cfg.structured_mode == "auto" else cfg.structured_mode
                root._roles[role] = view
        return root._roles[role]

    def models(self) -> dict[str, str]:
        """The model name each role's requests send ("default": tools, agents and tasks), for provenance."""
        root = self._root or self
        return {"default": root.cfg.model, **{role: root.role(role).cfg.model for role in ROLES}}

    async def __aenter__(self) -> "LLM":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (a role view closes nothing: its client does) and roles' own clients."""
        if self._root is not None:
            return
        for client in self._roles.values():
            if client._root is None:
                await client.aclose()
        if self._ep.session is not None:
            await self._ep.session.close()
            self._ep.session = None
        if self.cache is not None:
            self.cache.close()  # reopened on the next use: an LLM may be used again after aclose

    async def chat(self, messages: list[dict], *, tools: list[dict] | None = None, seed: int | None = None,
                   max_tokens: int | None = None, temperature: float | None = None,
                   call: str | None = None) -> ChatResult:
        """One chat completion. `call` names a call type (llm.call_max_tokens) when max_tokens is not given."""
        body = self._body(messages, seed, self._limit(max_tokens, call), temperature)
        if tools:
            body["tools"], body["tool_choice"] = tools, "auto"
        return await self._complete(body)

    async def structured(self, messages: list[dict], schema: type[T], *, seed: int | None = None,
                         max_tokens: int | None = None, temperature: float | None = None,
                         call: str | None = None) -> T:
        """Ask for JSON matching `schema`; one repair round on a bad reply, then ParseError."""
        convo, max_tokens = list(messages), self._limit(max_tokens, call)
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

    def _limit(self, max_tokens: int | None, call: str | None) -> int | None:
        if max_tokens is None and call is not None:
            return self.cfg.tokens_for(call)
        return max_tokens

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
        retries = self._ep.cfg.max_retries
        for attempt in range(retries + 1):
            if self.ledger is not None:
                self.ledger.check()  # BudgetReached: not sent, and never recorded as the unit's failure
            try:
                return await self._post(data)
            except _HTTPFailure as failure:
                if probe and failure.status and failure.rejects_format():
                    raise _FormatRejected(str(failure)) from None
                if not failure.retryable() or attempt == retries:
                    self.meter.record(failures=1)
                    tries = f" after {attempt + 1} attempts" if failure.retryable() else ""
                    raise ProviderError(f"LLM request failed{tries}: {failure}") from None
                self.meter.record(retries=1)
                await asyncio.sleep(self._backoff(attempt, failure.retry_after))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def endpoint(self) -> str:
        """The base URL requests go to, starting the lazy endpoint if it has not started yet."""
        if self._ep.url is None:
            await self._endpoint_ready()
        return self._ep.url.removesuffix("/chat/completions")  # type: ignore[union-attr]

    async def _endpoint_ready(self) -> None:
        ep = self._ep
        async with ep.starting:  # concurrent first requests wait for one start
            if ep.url is None:
                ep.use(await ep.start())  # type: ignore[misc]

    async def _post(self, data: bytes) -> dict:
        ep = self._ep
        if ep.url is None:
            await self._endpoint_ready()
        async with ep.sem:
            start = time.perf_counter()
            try:
                async with self._open_session().post(ep.url, data=data, proxy=ep.proxy) as response:
                    raw = await response.read()
                    if response.status >= 300:  # redirects were followed: what is left is a failure
                        text = self._redact(raw[:1000].decode(errors="replace"))
                        raise _HTTPFailure(response.status, text, _retry_after(response.headers))
                return json.loads(raw)
            except TimeoutError:  # aiohttp's timeouts subclass it
                raise _HTTPFailure(None, f"TimeoutError: no complete response within {ep.cfg.timeout_s:g} s") from None
            except aiohttp.ClientError as err:  # connection refused/reset, server disconnected, bad payload
                raise _HTTPFailure(None, self._redact(f"{type(err).__name__}: {err}")) from None
            except ValueError as err:  # json.JSONDecodeError, UnicodeDecodeError
                raise _HTTPFailure(None, f"response is not JSON: {err}") from None
            finally:
                self.meter.record(requests=1, seconds=time.perf_counter() - start)

    def _open_session(self) -> aiohttp.ClientSession:
        ep = self._ep
        if ep.session is None or ep.session.closed:
            ep.session = aiohttp.ClientSession(
                # `concurrency` bounds the requests in flight; the pool never needs more connections.
                connector=aiohttp.TCPConnector(limit=ep.cfg.concurrency),
                timeout=aiohttp.ClientTimeout(total=ep.cfg.timeout_s),
                headers={"Authorization": f"Bearer {ep.api_key}", "Content-Type": "application/json",
                         "Accept": "application/json"},
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return ep.session

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_CAP_S)
        delay = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
        return delay * (0.5 + random.random() / 2)  # jitter spreads out synchronized retries

    def _redact(self, text: str) -> str:
        # Servers may quote a bad key back in their error text; too short a key cannot be told from text.
        key = self._ep.api_key
        return text.replace(key, "<api-key>") if len(key) >= 8 else text


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
    content = raw.get("content")
    reasoning = raw.get("reasoning_content") or raw.get("reasoning")  # vLLM/SGLang name it either way
    reasoning = reasoning if isinstance(reasoning, str) else ""
    if isinstance(content, str) and (inline := split_thinking(content)) is not None:
        # No reasoning parser on the server: the thinking came inside the content.
        thought, content = inline
        reasoning = f"{reasoning}\n{thought}".strip() if reasoning else thought
    message = {"role": "assistant", "content": content}
    if reasoning:
        message["reasoning_content"] = reasoning
    if raw.get("tool_calls"):
        message["tool_calls"] = raw["tool_calls"]
    return ChatResult.model_construct(message=message, finish_reason=finish_reason, prompt_tokens=prompt_tokens,
                                      completion_tokens=completion_tokens, cached=cached)


_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
# The keys a chat message may carry in a request; others (reasoning_content, the episode's own marks
# such as `truncated`) stay in the record: strict endpoints reject unknown message keys.
_SENT_KEYS = frozenset({"role", "content", "tool_calls", "tool_call_id", "name"})


def split_thinking(text: str) -> tuple[str, str] | None:
    """(thinking, answer) of a reply that thinks inline, or None when it does not: a leading
    `<think>...</think>` block, a reply cut inside one (all thinking, no answer), or one that only
    closes a block its chat template opened in the prompt (`...</think>answer`, as Qwen3's and
    DeepSeek-R1's templates do)."""
    head = text.lstrip()
    if head.startswith(_THINK_OPEN):
        body = head[len(_THINK_OPEN):]
        if _THINK_CLOSE not in body:
            return body.strip(), ""
        thought, answer = body.split(_THINK_CLOSE, 1)
    elif _THINK_CLOSE in text and _THINK_OPEN not in text.split(_THINK_CLOSE, 1)[0]:
        thought, answer = text.split(_THINK_CLOSE, 1)
    else:
        return None
    return thought.strip(), answer.strip()


def _outgoing(message: dict) -> dict:
    # Reasoning is kept for the dataset, not sent back; so are the episode's own marks on a message.
    if message.keys() - _SENT_KEYS:
        message = {k: v for k, v in message.items() if k in _SENT_KEYS}
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
