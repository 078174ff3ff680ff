"""A scripted OpenAI-compatible server over real HTTP, for tests and benchmarks.

    async with FakeOpenAI(latency_ms=50) as fake:
        llm = LLM(cfg, base_url=fake.base_url)      # "http://127.0.0.1:PORT/v1"
        ...
        fake.requests                                # every request body received, in order

    with fake_openai_in_thread() as fake: ...        # for synchronous tests (e.g. a CLI runner)
    python -m tests.fake_openai --port N [--latency-ms X] [--log FILE]   # serves until killed

Each reply is decided in this order:
1. `fail_first`: the first N requests answer `fail_status`, with `Retry-After: retry_after` unless None.
2. `reject_json_schema`: a request with response_format type json_schema answers `reject_status`
   with an error naming response_format, as llama-cpp-python's server does.
3. `script`: canned replies consumed in order, one per request that got this far.
4. `handler(body)`: a callable returning a reply, or None to fall through.
5. The default, deterministic per request body (seeded by its hash):
   - a JSON schema in response_format (json_schema.schema, or json_object's "schema"): a
     schema-valid instance made of short readable words;
   - else `tools` and the last message is not a tool result: one call to one of the tools with
     schema-valid arguments, finish_reason "tool_calls", content "";
   - else a short text. With `stop_marker` set, a request whose system prompt contains that marker
     and that holds at least `stop_after` user messages gets a text ending with the marker (this
     plays a user simulator that ends the conversation).

A reply (script item or handler result) is a string (the assistant text) or a dict: either
{"status": 500, "error": "...", "headers": {...}} for an HTTP error, or any of "content",
"tool_calls", "finish_reason", "reasoning_content"/"reasoning" for the assistant message
(tool-call arguments may be dicts).
"""

import argparse
import asyncio
import hashlib
import json
import math
import random
import re
import socket
import string
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from re import _constants as sre
from re import _parser as sre_parse
from typing import Any

from aiohttp import web

Reply = str | dict
WORDS = (
    "alpha amber apple atlas berry blue cedar cloud coral delta echo ember fern forest garden harbor "
    "indigo island jade lemon lunar maple meadow nova ocean olive orbit pearl pine river robin sage "
    "silver solar spruce stone summit tiger topaz velvet willow zephyr"
).split()
MAX_DEPTH = 4  # below this, optional parts of recursive schemas are left out


# ---------------------------------------------------------------- schema-valid instances


def fake_instance(schema: dict, rng: random.Random) -> Any:
    """A value valid against `schema` (the JSON Schema subset pydantic and MCP tools use)."""
    return _Faker(schema, rng).make(schema, 0)


class _Faker:
    def __init__(self, root: dict, rng: random.Random):
        self.root, self.rng = root, rng

    def resolve(self, schema: dict) -> dict:
        while "$ref" in schema:
            target: Any = self.root
            for part in schema["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        for part in schema.get("allOf", []):
            schema = {**{k: v for k, v in schema.items() if k != "allOf"}, **self.resolve(part)}
        return schema

    def make(self, schema: dict | bool, depth: int) -> Any:
        if not isinstance(schema, dict):
            return self.word()
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self.rng.choice(schema["enum"])
        if options := schema.get("anyOf") or schema.get("oneOf"):
            return self.make(self.pick(options, depth), depth)
        kind = self.kind(schema, depth)
        return getattr(self, f"make_{kind}")(schema, depth)

    def pick(self, options: list[dict], depth: int) -> dict:
        """The first option; deep inside a recursive schema, a null option if there is one."""
        if depth >= MAX_DEPTH:
            nulls = [o for o in options if self.resolve(o).get("type") == "null"]
            return nulls[0] if nulls else options[0]
        return next((o for o in options if self.resolve(o).get("type") != "null"), options[0])

    def kind(self, schema: dict, depth: int) -> str:
        kind = schema.get("type")
        if isinstance(kind, list):
            concrete = [k for k in kind if k != "null"]
            kind = "null" if not concrete or (depth >= MAX_DEPTH and "null" in kind) else concrete[0]
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        if schema.get("nullable") and depth >= MAX_DEPTH:
            kind = "null"
        return kind

    def word(self) -> str:
        return self.rng.choice(WORDS)

    def make_null(self, schema: dict, depth: int) -> None:
        return None

    def make_boolean(self, schema: dict, depth: int) -> bool:
        return self.rng.random() < 0.5

    def make_integer(self, schema: dict, depth: int) -> int:
        lo, hi = _bounds(schema, 1)
        return self.rng.randint(math.ceil(lo), math.floor(hi))

    def make_number(self, schema: dict, depth: int) -> float:
        lo, hi = _bounds(schema, 0.01)
        value = round(self.rng.uniform(lo, hi), 2)
        return value if lo <= value <= hi else (lo + hi) / 2

    def make_array(self, schema: dict, depth: int) -> list:
        if prefix := schema.get("prefixItems"):
            return [self.make(item, depth + 1) for item in prefix]
        lo = schema.get("minItems", 0)
        hi = lo if depth >= MAX_DEPTH else min(schema.get("maxItems", lo + 2), lo + 2)
        count = self.rng.randint(max(lo, min(1, hi)), hi)  # not empty when it may hold items
        return [self.make(schema.get("items", {}), depth + 1) for _ in range(count)]

    def make_object(self, schema: dict, depth: int) -> dict:
        props, required = schema.get("properties", {}), set(schema.get("required", []))
        if depth >= MAX_DEPTH:
            props = {k: v for k, v in props.items() if k in required}
        obj = {name: self.make(sub, depth + 1) for name, sub in props.items()}
        if not props and isinstance(extra := schema.get("additionalProperties"), dict):
            obj[self.word()] = self.make(extra, depth + 1)
        return obj

    def make_string(self, schema: dict, depth: int) -> str:
        lo, hi = schema.get("minLength", 0), schema.get("maxLength", 10_000)
        if fmt := _FORMATS.get(schema.get("format", "")):
            return fmt(self)
        if pattern := schema.get("pattern"):
            return self.matching(pattern, lo, hi)
        text = " ".join(self.word() for _ in range(self.rng.randint(1, 3)))
        while len(text) < lo:
            text += " " + self.word()
        return text[:hi].strip() if len(text[:hi].strip()) >= lo else text[:hi]

    def matching(self, pattern: str, lo: int, hi: int) -> str:
        """A string matching `pattern`: a readable one if a few shapes fit, else one built from the regex."""
        a, b, n = self.word(), self.word(), self.rng.randint(1, 99)
        readable = [a, f"{a}_{b}", f"{a}-{b}", a.capitalize(), f"{a}{n}", str(n)]
        built = [_from_regex(pattern, self.rng) for _ in range(20)]
        for candidate in readable + built:
            if lo <= len(candidate) <= hi and re.search(pattern, candidate):
                return candidate
        raise ValueError(f"the fake cannot make a string of length {lo}..{hi} matching {pattern!r}")


def _bounds(schema: dict, step: float) -> tuple[float, float]:
    """The inclusive range allowed by minimum/maximum/exclusive*, about 100 wide when open."""
    lo = schema.get("minimum", schema.get("exclusiveMinimum", -math.inf) + step)
    hi = schema.get("maximum", schema.get("exclusiveMaximum", math.inf) - step)
    if lo == -math.inf:
        lo = min(0, hi - 100)
    return lo, lo + 100 if hi == math.inf else hi


_FORMATS: dict[str, Callable[[_Faker], str]] = {
    "date-time": lambda f: f"2024-0{f.rng.randint(1, 9)}-1{f.rng.randint(0, 9)}T12:00:00Z",
    "date": lambda f: f"2024-0{f.rng.randint(1, 9)}-1{f.rng.randint(0, 9)}",
    "time": lambda f: f"1{f.rng.randint(0, 9)}:30:00",
    "email": lambda f: f"{f.word()}@example.com",
    "uri": lambda f: f"https://example.com/{f.word()}",
    "uuid": lambda f: str(uuid.UUID(int=f.rng.getrandbits(128))),
}


def _from_regex(pattern: str, rng: random.Random) -> str:
    return "".join(_emit(sre_parse.parse(pattern), rng))


def _emit(tokens, rng: random.Random) -> Iterator[str]:
    for op, av in tokens:
        if op is sre.LITERAL:
            yield chr(av)
        elif op is sre.ANY:
            yield rng.choice(string.ascii_lowercase)
        elif op is sre.IN:
            yield rng.choice(_class_chars(av))
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            lo, hi, sub = av
            for _ in range(rng.randint(lo, min(hi, lo + 4))):
                yield from _emit(sub, rng)
        elif op is sre.SUBPATTERN:
            yield from _emit(av[-1], rng)
        elif op is sre.ATOMIC_GROUP:
            yield from _emit(av, rng)
        elif op is sre.BRANCH:
            yield from _emit(rng.choice(av[1]), rng)
        elif op is not sre.AT:  # anchors produce nothing
            raise ValueError(f"the fake's regex generator does not support {op}")


_CATEGORIES = {
    sre.CATEGORY_DIGIT: string.digits,
    sre.CATEGORY_WORD: string.ascii_lowercase + string.digits + "_",
    sre.CATEGORY_SPACE: " ",
}


def _class_chars(items) -> str:
    chars, negate = "", False
    for op, av in items:
        if op is sre.NEGATE:
            negate = True
        elif op is sre.LITERAL:
            chars += chr(av)
        elif op is sre.RANGE:
            chars += "".join(chr(c) for c in range(av[0], min(av[1], av[0] + 25) + 1))
        elif op is sre.CATEGORY:
            chars += _CATEGORIES.get(av, "")
    return "".join(c for c in string.ascii_lowercase if c not in chars) if negate else chars


# ---------------------------------------------------------------- replies


def _rng_for(body: dict) -> random.Random:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _response_schema(body: dict) -> dict | None:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return fmt.get("json_schema", {}).get("schema", {})
    if fmt.get("type") == "json_object":
        return fmt.get("schema", {"type": "object", "properties": {"answer": {"type": "string"}}})
    return None


class FakeOpenAI:
    def __init__(
        self,
        *,
        latency_ms: float = 0,
        fail_first: int = 0,
        fail_status: int = 429,
        retry_after: str | None = "0",
        reject_json_schema: bool = False,
        reject_status: int = 400,
        script: Sequence[Reply] = (),
        handler: Callable[[dict], Reply | None] | None = None,
        stop_marker: str | None = None,
        stop_after: int = 2,
        log: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.latency_s = latency_ms / 1000
        self.fail_left, self.fail_status, self.retry_after = fail_first, fail_status, retry_after
        self.reject_json_schema, self.reject_status = reject_json_schema, reject_status
        self.script, self.handler = list(script), handler
        self.stop_marker, self.stop_after = stop_marker, stop_after
        self.log, self.host, self.port = log, host, port
        self.requests: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = self.max_in_flight = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeOpenAI":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def _models(self, request: web.Request) -> web.Response:
        models = [{"id": "fake", "object": "model", "owned_by": "fake"}]
        return web.json_response({"object": "list", "data": models})

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.log:
            with self.log.open("a") as f:
                f.write(json.dumps(body) + "\n")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            return self._respond(body, self.reply(body))
        finally:
            self.in_flight -= 1

    def reply(self, body: dict) -> Reply:
        """What to answer to `body`, in the order the module docstring gives."""
        if self.fail_left > 0:
            self.fail_left -= 1
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
            return {"status": self.fail_status, "error": "scripted failure", "headers": headers}
        if self.reject_json_schema and (body.get("response_format") or {}).get("type") == "json_schema":
            error = "response_format type 'json_schema' is not supported"
            return {"status": self.reject_status, "error": error}
        if self.script:
            return self.script.pop(0)
        if self.handler and (reply := self.handler(body)) is not None:
            return reply
        return self.default_reply(body)

    def default_reply(self, body: dict) -> Reply:
        rng = _rng_for(body)
        if (schema := _response_schema(body)) is not None:
            return json.dumps(fake_instance(schema, rng))
        messages, tools = body.get("messages", []), body.get("tools") or []
        if tools and body.get("tool_choice") != "none" and (not messages or messages[-1].get("role") != "tool"):
            function = rng.choice(tools)["function"]
            arguments = fake_instance(function.get("parameters") or {"type": "object"}, rng)
            call = {"id": f"call_{rng.getrandbits(48):012x}", "type": "function",
                    "function": {"name": function["name"], "arguments": arguments}}
            return {"content": "", "tool_calls": [call], "finish_reason": "tool_calls"}
        text = f"Sure, {' '.join(rng.choice(WORDS) for _ in range(rng.randint(4, 10)))}."
        return f"{text} {self.stop_marker}" if self._should_stop(messages) else text

    def _should_stop(self, messages: list[dict]) -> bool:
        if not self.stop_marker:
            return False
        system = " ".join(str(m.get("content")) for m in messages if m.get("role") == "system")
        user_turns = sum(m.get("role") == "user" for m in messages)
        return self.stop_marker in system and user_turns >= self.stop_after

    def _respond(self, body: dict, reply: Reply) -> web.Response:
        spec = {"content": reply} if isinstance(reply, str) else reply
        if spec.get("status", 200) != 200:
            status = spec["status"]
            error = {"message": spec.get("error", "scripted error"), "type": "fake_error", "code": status}
            return web.json_response({"error": error}, status=status, headers=spec.get("headers"))
        message = {"role": "assistant", "content": spec.get("content")}
        for key in ("reasoning_content", "reasoning"):  # reasoning servers (vLLM, SGLang) name it either way
            if key in spec:
                message[key] = spec[key]
        if calls := spec.get("tool_calls"):
            message["tool_calls"] = [_with_string_arguments(call) for call in calls]
        completion_text = (message["content"] or "") + json.dumps(message.get("tool_calls", ""))
        return web.json_response({
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": 0,  # the OpenAI SDK's ChatCompletion model requires it (verifiers parses with it)
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": message,
                         "finish_reason": spec.get("finish_reason", "tool_calls" if calls else "stop")}],
            "usage": _usage(1 + len(json.dumps(body.get("messages", []))) // 4, 1 + len(completion_text) // 4),
        })


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _with_string_arguments(call: dict) -> dict:
    arguments = call["function"]["arguments"]
    if isinstance(arguments, str):
        return call
    return {**call, "function": {**call["function"], "arguments": json.dumps(arguments)}}


@contextmanager
def fake_openai_in_thread(**options) -> Iterator[FakeOpenAI]:
    """The fake on its own event loop in a daemon thread, for synchronous callers."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake = FakeOpenAI(**options)
    try:
        asyncio.run_coroutine_threadsafe(fake.start(), loop).result()
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


async def _serve(fake: FakeOpenAI) -> None:
    async with fake:
        print(f"fake OpenAI server at {fake.base_url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the fake OpenAI-compatible API until killed.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--log", type=Path, help="append every request body here, one JSON line each")
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--fail-status", type=int, default=429)
    parser.add_argument("--reject-json-schema", action="store_true")
    parser.add_argument("--stop-marker")
    parser.add_argument("--stop-after", type=int, default=2)
    args = parser.parse_args(argv)
    fake = FakeOpenAI(**vars(args))
    try:
        asyncio.run(_serve(fake))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
