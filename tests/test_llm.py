"""The LLM client against the fake OpenAI server, over real HTTP on 127.0.0.1."""

import asyncio
import json
import time
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from synth.core.errors import ConfigError, ParseError, ProviderError
from synth.core.llm import LLM, LLMConfig
from synth.core.llm_cache import ResponseCache
from synth.core.usage import UsageMeter, current_stage
from tests.fake_openai import FakeOpenAI


class Answer(BaseModel):
    name: str = Field(max_length=20)
    n: int


GOOD = '{"name": "ok", "n": 1}'
USER = [{"role": "user", "content": "hi"}]
ADD = {"type": "function", "function": {"name": "add", "description": "Add two numbers.", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(LLM, "backoff_base_s", 0.001)


def make_llm(fake: FakeOpenAI, cache_dir: Path | None = None, **cfg) -> LLM:
    cache = ResponseCache(cache_dir) if cache_dir else None
    return LLM(LLMConfig(model="fake", **cfg), base_url=fake.base_url, meter=UsageMeter(), cache=cache)


def formats(fake: FakeOpenAI) -> list[str | None]:
    return [(body.get("response_format") or {}).get("type") for body in fake.requests]


# ---------------------------------------------------------------- chat


async def test_reasoning_is_kept_from_replies_and_not_sent_back():
    async with FakeOpenAI(script=[{"content": "4", "reasoning": "2+2 is 4."},
                                  {"content": "ok", "reasoning_content": "fine"}]) as fake:
        async with make_llm(fake) as llm:
            first = await llm.chat([{"role": "user", "content": "2+2?"}])
            assert first.message == {"role": "assistant", "content": "4", "reasoning_content": "2+2 is 4."}
            second = await llm.chat([{"role": "user", "content": "2+2?"}, first.message])
            assert second.message["reasoning_content"] == "fine"
    # Strict endpoints reject unknown message keys: the thinking stays in the record, not in the request.
    assert fake.requests[1]["messages"][1] == {"role": "assistant", "content": "4"}


async def test_chat_round_trips_tool_calls():
    async with FakeOpenAI() as fake, make_llm(fake) as llm:
        first = await llm.chat(USER, tools=[ADD], seed=1)
        assert first.finish_reason == "tool_calls"
        (call,) = first.message["tool_calls"]
        assert call["function"]["name"] == "add"
        assert set(json.loads(call["function"]["arguments"])) == {"a", "b"}
        assert fake.requests[0]["tools"] == [ADD] and fake.requests[0]["tool_choice"] == "auto"

        result = {"role": "tool", "tool_call_id": call["id"], "content": "3"}
        second = await llm.chat([*USER, first.message, result], tools=[ADD], seed=1)
        assert second.finish_reason == "stop" and "tool_calls" not in second.message
        assert second.message["content"]
        assert fake.requests[1]["messages"][1]["tool_calls"] == [call]


async def test_assistant_tool_call_messages_are_sent_with_empty_content():
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    without_key = {"role": "assistant", "tool_calls": [call]}
    with_none = {"role": "assistant", "content": None, "tool_calls": [call]}
    tool = {"role": "tool", "tool_call_id": "c1", "content": "3"}
    async with FakeOpenAI() as fake, make_llm(fake) as llm:
        await llm.chat([*USER, without_key, tool, with_none, tool])
    sent = fake.requests[0]["messages"]
    assert sent[1]["content"] == "" and sent[3]["content"] == ""
    assert "content" not in without_key and with_none["content"] is None  # callers' dicts untouched


async def test_usage_is_recorded_under_the_current_stage():
    async with FakeOpenAI() as fake, make_llm(fake) as llm:
        token = current_stage.set("tasks")
        try:
            await llm.chat(USER)
        finally:
            current_stage.reset(token)
        await llm.chat(USER, seed=2)
    stages = llm.meter.by_stage()
    assert stages["tasks"].requests == 1 and stages["other"].requests == 1
    assert stages["tasks"].prompt_tokens > 0 and stages["tasks"].completion_tokens > 0
    assert stages["tasks"].seconds > 0
    assert llm.meter.total().requests == 2


# ---------------------------------------------------------------- retries and errors


async def test_429_is_retried_and_retry_after_honored(monkeypatch):
    monkeypatch.setattr(LLM, "backoff_base_s", 10.0)  # so only Retry-After can make this fast
    async with FakeOpenAI(fail_first=2, fail_status=429, retry_after="0") as fake, make_llm(fake) as llm:
        start = time.monotonic()
        result = await llm.chat(USER)
    assert time.monotonic() - start < 2
    assert result.message["content"]
    usage = llm.meter.total()
    assert (usage.requests, usage.retries, usage.failures) == (3, 2, 0)


async def test_retry_after_delay_is_waited():
    async with FakeOpenAI(fail_first=1, fail_status=429, retry_after="0.3") as fake, make_llm(fake) as llm:
        start = time.monotonic()
        await llm.chat(USER)
    assert time.monotonic() - start >= 0.3


async def test_500_is_retried_with_backoff():
    async with FakeOpenAI(fail_first=1, fail_status=500, retry_after=None) as fake, make_llm(fake) as llm:
        await llm.chat(USER)
    assert len(fake.requests) == 2 and llm.meter.total().retries == 1


async def test_400_fails_at_once_with_the_server_text():
    async with FakeOpenAI(script=[{"status": 400, "error": "messages too long"}]) as fake, make_llm(fake) as llm:
        with pytest.raises(ProviderError, match="400.*messages too long"):
            await llm.chat(USER)
    assert len(fake.requests) == 1
    usage = llm.meter.total()
    assert (usage.retries, usage.failures) == (0, 1)


async def test_exhausted_retries_raise_provider_error():
    async with FakeOpenAI(fail_first=10, fail_status=503) as fake, make_llm(fake, max_retries=2) as llm:
        with pytest.raises(ProviderError, match="after 3 attempts.*503"):
            await llm.chat(USER)
    assert len(fake.requests) == 3
    usage = llm.meter.total()
    assert (usage.requests, usage.retries, usage.failures) == (3, 2, 1)


async def test_timeouts_are_retried_then_fail():
    async with FakeOpenAI(latency_ms=500) as fake, make_llm(fake, timeout_s=0.1, max_retries=1) as llm:
        with pytest.raises(ProviderError, match="after 2 attempts.*Timeout"):
            await llm.chat(USER)
    assert len(fake.requests) == 2


async def test_connection_errors_are_retried_then_fail():
    fake = FakeOpenAI()
    await fake.start()
    await fake.stop()  # nothing listens on its port any more
    async with make_llm(fake, max_retries=2) as llm:
        with pytest.raises(ProviderError, match="after 3 attempts.*Cannot connect"):
            await llm.chat(USER)
    assert llm.meter.total().retries == 2


def test_missing_endpoint_is_a_config_error(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="llm.base_url.*OPENAI_BASE_URL"):
        LLM(LLMConfig())


async def test_endpoint_from_env(monkeypatch):
    async with FakeOpenAI() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        async with LLM(LLMConfig()) as llm:
            await llm.chat(USER)
    assert len(fake.requests) == 1


# ---------------------------------------------------------------- concurrency


async def test_concurrency_limit_is_respected():
    async with FakeOpenAI(latency_ms=50) as fake, make_llm(fake, concurrency=3) as llm:
        await asyncio.gather(*(llm.chat(USER, seed=i) for i in range(12)))
    assert fake.max_in_flight == 3


# ---------------------------------------------------------------- structured output


@pytest.mark.parametrize("status", [400, 422, 500])
async def test_json_schema_rejected_falls_back_to_json_object_and_remembers(status):
    async with FakeOpenAI(reject_json_schema=True, reject_status=status) as fake, make_llm(fake) as llm:
        first = await llm.structured(USER, Answer, seed=1)
        second = await llm.structured(USER, Answer, seed=2)
    assert isinstance(first, Answer) and isinstance(second, Answer)
    assert formats(fake) == ["json_schema", "json_object", "json_object"]  # a rejection is not retried
    assert fake.requests[1]["response_format"]["schema"] == Answer.model_json_schema()
    assert llm.meter.total().failures == 0


async def test_json_schema_accepted_is_strict():
    async with FakeOpenAI() as fake, make_llm(fake) as llm:
        await llm.structured(USER, Answer)
        await llm.structured(USER, Answer, seed=3)
    assert formats(fake) == ["json_schema", "json_schema"]
    spec = fake.requests[0]["response_format"]["json_schema"]
    assert spec["name"] == "Answer" and spec["strict"] is True
    assert spec["schema"]["additionalProperties"] is False


async def test_every_format_rejected_falls_back_to_the_schema_in_the_prompt():
    def reject_formats(body: dict) -> str | dict:
        return {"status": 400, "error": "unknown field response_format"} if "response_format" in body else GOOD

    system = {"role": "system", "content": "You are terse."}
    async with FakeOpenAI(handler=reject_formats) as fake, make_llm(fake) as llm:
        assert await llm.structured([system, *USER], Answer) == Answer(name="ok", n=1)
        await llm.structured(USER, Answer, seed=5)
    assert formats(fake) == ["json_schema", "json_object", None, None]
    prompt_system = fake.requests[2]["messages"][0]
    assert prompt_system["content"].startswith("You are terse.") and '"Answer"' in prompt_system["content"]
    assert fake.requests[3]["messages"][0]["role"] == "system"  # added when the caller had none


async def test_fenced_json_is_accepted():
    async with FakeOpenAI(script=[f"Here you go:\n```json\n{GOOD}\n```"]) as fake, make_llm(fake) as llm:
        assert await llm.structured(USER, Answer) == Answer(name="ok", n=1)
    assert len(fake.requests) == 1


async def test_repair_round_fixes_a_malformed_reply():
    async with FakeOpenAI(script=['{"name": "ok", "n": ', GOOD]) as fake, make_llm(fake) as llm:
        assert await llm.structured(USER, Answer) == Answer(name="ok", n=1)
    repair = fake.requests[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": '{"name": "ok", "n": '}
    assert repair[-1]["role"] == "user" and "invalid JSON" in repair[-1]["content"]


async def test_repair_message_names_the_invalid_field():
    async with FakeOpenAI(script=['{"name": "ok"}', GOOD]) as fake, make_llm(fake) as llm:
        await llm.structured(USER, Answer)
    assert "n: Field required" in fake.requests[1]["messages"][-1]["content"]


async def test_length_cut_off_is_a_parse_failure():
    cut = {"content": '{"name": "ok", "n": 1}', "finish_reason": "length"}  # valid JSON, but cut off
    async with FakeOpenAI(script=[cut, GOOD]) as fake, make_llm(fake) as llm:
        await llm.structured(USER, Answer)
    assert len(fake.requests) == 2 and "cut off" in fake.requests[1]["messages"][-1]["content"]


async def test_parse_error_after_repair_keeps_the_raw_reply():
    async with FakeOpenAI(script=["nope", "still nope"]) as fake, make_llm(fake) as llm:
        with pytest.raises(ParseError, match="Answer") as info:
            await llm.structured(USER, Answer)
    assert info.value.raw == "still nope"
    assert len(fake.requests) == 2


# ---------------------------------------------------------------- cache


async def test_cache_answers_identical_calls_without_requests(tmp_path):
    async with FakeOpenAI() as fake, make_llm(fake, tmp_path) as llm:
        first = await llm.chat(USER, tools=[ADD], seed=1)
        again = await llm.chat(USER, tools=[ADD], seed=1)
        assert len(fake.requests) == 1
        assert again.cached and not first.cached and again.message == first.message
        assert llm.meter.total().cached == 1

        await llm.chat(USER, tools=[ADD], seed=2)
        assert len(fake.requests) == 2 and fake.requests[1]["seed"] == 2


def test_cache_segments_survive_a_torn_line_a_restart_and_the_old_layout(tmp_path):
    first, second = ResponseCache(tmp_path), ResponseCache(tmp_path)  # two processes, one run dir
    first.put("a" * 64, {"n": 1})
    second.put("b" * 64, {"n": 2, "text": "tab\there, newline\nthere, é"})
    first.close()
    second.close()
    segments = sorted(tmp_path.glob("*.jsonl"))
    assert len(segments) == 2
    with open(segments[0], "ab") as fh:
        fh.write(b"c" * 64 + b'\t{"n": 3')  # a kill -9 mid-write: no newline
    old = tmp_path / "dd" / f"{'d' * 64}.json"  # a response cached by the one-file-per-response layout
    old.parent.mkdir()
    old.write_text('{"n": 4}')
    again = ResponseCache(tmp_path)
    assert again.get("a" * 64) == {"n": 1} and again.get("b" * 64)["text"] == "tab\there, newline\nthere, é"
    assert again.get("c" * 64) is None and again.get("d" * 64) == {"n": 4}
    assert again.keys() == {"a" * 64, "b" * 64, "d" * 64}
    again.put("c" * 64, {"n": 3})  # the torn one, answered again, goes to a segment of its own
    assert ResponseCache(tmp_path).get("c" * 64) == {"n": 3}


async def test_rerun_of_a_finished_run_sends_nothing(tmp_path):
    async def run() -> list:
        async with make_llm(fake, tmp_path) as llm:
            return [await llm.structured(USER, Answer, seed=s) for s in range(3)] + [(await llm.chat(USER)).message]

    async with FakeOpenAI(reject_json_schema=True) as fake:
        first = await run()
        sent = len(fake.requests)
        assert await run() == first
    assert len(fake.requests) == sent  # not even the json_schema probe is sent again


async def test_failed_responses_are_not_cached(tmp_path):
    async with FakeOpenAI(script=[{"status": 400, "error": "no"}]) as fake, make_llm(fake, tmp_path) as llm:
        with pytest.raises(ProviderError):
            await llm.chat(USER)
        await llm.chat(USER)
    assert len(fake.requests) == 2


async def test_api_key_never_reaches_cache_or_errors(tmp_path, monkeypatch):
    secret = "sk-test-SECRET-5f3c9a"
    monkeypatch.setenv("SYNTH_TEST_KEY", secret)

    def echo_key(body: dict) -> dict | None:  # a server that quotes the key back in its error
        return {"status": 401, "error": f"bad key {fake.headers[-1]['Authorization']}"} if body.get("seed") else None

    async with FakeOpenAI(handler=echo_key) as fake, make_llm(fake, tmp_path, api_key_env="SYNTH_TEST_KEY") as llm:
        await llm.chat(USER, tools=[ADD])
        await llm.structured(USER, Answer)
        with pytest.raises(ProviderError) as info:
            await llm.chat(USER, seed=1)
    assert fake.headers[0]["Authorization"] == f"Bearer {secret}"  # the key is used ...
    assert secret not in str(info.value) and "401" in str(info.value)  # ... and never shown
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(ResponseCache(tmp_path).keys()) == 2 and files and all(secret not in p.read_text() for p in files)


# ---------------------------------------------------------------- the HTTP layer (our own aiohttp session)


async def test_retry_after_ms_is_honored(monkeypatch):
    monkeypatch.setattr(LLM, "backoff_base_s", 10.0)
    busy = {"status": 429, "error": "slow down", "headers": {"retry-after-ms": "300"}}
    async with FakeOpenAI(script=[busy]) as fake, make_llm(fake) as llm:
        start = time.monotonic()
        await llm.chat(USER)
    assert 0.3 <= time.monotonic() - start < 2 and llm.meter.total().retries == 1


@pytest.fixture
async def raw_server():
    """An endpoint answering each request with the next (status, body) of `replies`, or dropping the
    connection for None."""
    from aiohttp import web

    replies: list = []

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        reply = replies.pop(0)
        if reply is None:
            request.transport.close()  # no response at all
            return web.Response()
        status, body = reply
        return web.Response(status=status, text=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield replies, f"http://127.0.0.1:{port}/v1"
    await runner.cleanup()


OK_BODY = json.dumps({"choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]})


async def test_non_json_and_dropped_responses_are_retried(raw_server):
    replies, url = raw_server
    replies += [(200, "<html>proxy error</html>"), None, (200, OK_BODY)]
    async with LLM(LLMConfig(model="fake", max_retries=2), base_url=url) as llm:
        result = await llm.chat(USER)
    assert result.message == {"role": "assistant", "content": "hi"} and result.prompt_tokens == 0
    assert llm.meter.total().retries == 2 and not replies


async def test_non_json_failure_names_the_cause(raw_server):
    replies, url = raw_server
    replies += [(200, "not json")]
    async with LLM(LLMConfig(model="fake", max_retries=0), base_url=url) as llm:
        with pytest.raises(ProviderError, match="not JSON"):
            await llm.chat(USER)


@pytest.mark.parametrize("body", ['{"choices": []}', '{"choices": [{"message": "text"}]}', '[1]'])
async def test_malformed_completions_fail_without_retry_or_cache(raw_server, tmp_path, body):
    replies, url = raw_server
    replies += [(200, body)]
    async with LLM(LLMConfig(model="fake"), base_url=url, cache=ResponseCache(tmp_path)) as llm:
        with pytest.raises(ProviderError, match="malformed chat completion"):
            await llm.chat(USER)
    assert llm.meter.total().failures == 1 and llm.meter.total().retries == 0
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_proxy_from_the_environment_is_resolved_once(monkeypatch):
    from synth.core.llm import _env_proxy

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    assert _env_proxy("https://api.example/v1") == "http://proxy.example:3128"
    assert _env_proxy("https://internal.example/v1") is None
    assert _env_proxy("http://localhost:8000/v1") is None  # HTTP_PROXY unset
