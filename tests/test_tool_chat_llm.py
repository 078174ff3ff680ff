"""The `synth-tools` chat format on the real embedded server: the model's own template, real tool calls.

`llm`: SmolLM2-135M (the fastest preset, installed everywhere). `bigmodel`: Qwen2.5-Coder-0.5B,
which needs `synth models install Qwen2.5-Coder-0.5B` (~490 MB) and SYNTH_BIG_MODELS=1; CI does
not run it by default.
"""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
import pytest_asyncio

from synth.core.local_llm import EmbeddedConfig, embedded_server

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}}, "required": ["city"]}}}
SYSTEM = {"role": "system", "content": "You are an assistant with tools. Call a tool when the request needs one; "
                                       "otherwise answer in plain text."}
TAGS = ("functions.", "<tool_call>", "</tool_call>")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def smol(tmp_path_factory):
    cfg = EmbeddedConfig(model="SmolLM2-135M", chat_format="synth-tools", n_threads=2)
    async with embedded_server(cfg, tmp_path_factory.mktemp("llm") / "server.log") as url:
        async with openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300) as client:
            yield client


def _no_tags(content: str | None) -> bool:
    return not any(tag in (content or "") for tag in TAGS)


@pytest.mark.llm
@pytest.mark.asyncio(loop_scope="module")
async def test_a_forced_call_is_a_real_schema_valid_tool_call(smol):
    r = await smol.chat.completions.create(
        model="smollm2", messages=[SYSTEM, {"role": "user", "content": "What is the weather in Rome?"}], tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=48, temperature=0)
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and r.choices[0].finish_reason == "tool_calls"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


@pytest.mark.llm
@pytest.mark.asyncio(loop_scope="module")
async def test_auto_replies_are_text_or_calls_never_call_syntax_as_text(smol):
    history = [SYSTEM, {"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {
                   "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
               {"role": "tool", "tool_call_id": "c1", "content": '{"temp_c": 18, "sky": "cloudy"}'}]
    for messages in ([SYSTEM, {"role": "user", "content": "Tell me a one-line joke about cats."}], history):
        r = await smol.chat.completions.create(model="smollm2", messages=messages, tools=[WEATHER], tool_choice="auto",
                                               max_tokens=64, temperature=0)
        msg = r.choices[0].message
        print(f"\n{messages[-1]['role']} -> tool_calls={msg.tool_calls} content={msg.content!r}")
        assert msg.tool_calls or (msg.content or "").strip(), "an answer of some kind"
        assert _no_tags(msg.content), "call syntax never reaches the content"
        for call in msg.tool_calls or []:
            assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments), dict)


@pytest.mark.llm
@pytest.mark.asyncio(loop_scope="module")
async def test_json_object_with_schema_under_synth_tools(smol):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "country": {"type": "string", "maxLength": 20}},
              "required": ["city", "country"]}
    r = await smol.chat.completions.create(
        model="smollm2", max_tokens=80, temperature=0, response_format={"type": "json_object", "schema": schema},
        messages=[{"role": "user", "content": "Name a city and its country as JSON."}])
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def qwen(tmp_path_factory):
    cfg = EmbeddedConfig(model="Qwen2.5-Coder-0.5B", n_threads=2, startup_timeout_s=300)
    async with embedded_server(cfg, tmp_path_factory.mktemp("llm") / "server.log") as url:
        async with openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600) as client:
            yield client


@pytest.mark.bigmodel
@pytest.mark.asyncio(loop_scope="module")
async def test_qwen_calls_a_tool_when_needed_and_answers_in_text_otherwise(qwen):
    r = await qwen.chat.completions.create(
        model="qwen2.5-coder-0.5b", messages=[SYSTEM, {"role": "user", "content": "What is the weather in Paris right now?"}],
        tools=[WEATHER], tool_choice="auto", max_tokens=64, temperature=0)
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    r = await qwen.chat.completions.create(
        model="qwen2.5-coder-0.5b", messages=[SYSTEM, {"role": "user", "content": "Tell me a one-line joke about cats."}],
        tools=[WEATHER], tool_choice="auto", max_tokens=64, temperature=0)
    msg = r.choices[0].message
    assert not msg.tool_calls and (msg.content or "").strip() and _no_tags(msg.content)
