"""The fake OpenAI server itself: schema-valid instances, tool calls, scripts, failures, CLI."""

import asyncio
import json
import random
import re
import subprocess
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Literal

import aiohttp
import jsonschema
import pytest
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field

from tests.fake_openai import FakeOpenAI, fake_instance, fake_openai_in_thread


class Color(str, Enum):
    red = "red"
    green = "green"


class Criterion(BaseModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=24)
    weight: float = Field(gt=0, le=1)
    color: Color
    kind: Literal["state", "rubric"]


class Node(BaseModel):
    label: str = Field(min_length=2, max_length=12)
    children: list["Node"] = []
    parent: "Node | None" = None


class Everything(BaseModel):
    criteria: list[Criterion] = Field(min_length=2, max_length=4)
    tree: Node
    scores: dict[str, int]
    pair: tuple[int, str]
    count: int = Field(ge=-5, lt=0)
    code: str = Field(pattern=r"^[A-Z]{3}-\d{4}$")
    day: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    note: str | None = None
    flag: bool


@pytest.mark.parametrize("make_schema", [lambda m: m.model_json_schema(), to_strict_json_schema])
@pytest.mark.parametrize("seed", range(25))
def test_instances_validate(make_schema, seed):
    schema = make_schema(Everything)
    value = fake_instance(schema, random.Random(seed))
    jsonschema.validate(value, schema)
    Everything.model_validate(value)


def test_instances_are_readable_words_and_deterministic():
    schema = Criterion.model_json_schema()
    a, b = (fake_instance(schema, random.Random(7)) for _ in range(2))
    assert a == b
    assert re.fullmatch(r"[a-z]+(_[a-z]+)?", a["name"])


async def _post(base_url: str, body: dict) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/chat/completions", json=body) as response:
            return response.status, await response.json(), dict(response.headers)


USER = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "add", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}


async def test_default_replies_by_request_shape():
    async with FakeOpenAI() as fake:
        fmt = {"type": "json_object", "schema": Criterion.model_json_schema()}
        _, structured, _ = await _post(fake.base_url, {"messages": USER, "response_format": fmt})
        Criterion.model_validate_json(structured["choices"][0]["message"]["content"])

        _, called, _ = await _post(fake.base_url, {"messages": USER, "tools": [TOOL]})
        choice = called["choices"][0]
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == ""
        assert set(json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])) == {"a", "b"}

        after_tool = [*USER, choice["message"], {"role": "tool", "tool_call_id": "x", "content": "3"}]
        _, text, _ = await _post(fake.base_url, {"messages": after_tool, "tools": [TOOL]})
        assert text["choices"][0]["message"]["content"] and text["usage"]["completion_tokens"] > 0
        assert len(fake.requests) == 3


async def test_stop_marker_after_n_user_turns():
    system = {"role": "system", "content": "Say ###STOP### when done."}
    async with FakeOpenAI(stop_marker="###STOP###", stop_after=2) as fake:
        _, one, _ = await _post(fake.base_url, {"messages": [system, *USER]})
        _, two, _ = await _post(fake.base_url, {"messages": [system, *USER, {"role": "assistant", "content": "?"}, *USER]})
    assert "###STOP###" not in one["choices"][0]["message"]["content"]
    assert two["choices"][0]["message"]["content"].endswith("###STOP###")


async def test_failures_rejection_script_and_handler_in_order():
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    async with FakeOpenAI(fail_first=1, reject_json_schema=True, script=["canned"],
                          handler=lambda body: {"content": "handled", "finish_reason": "length"}) as fake:
        status, _, headers = await _post(fake.base_url, {"messages": USER})
        assert status == 429 and headers["Retry-After"] == "0"
        status, error, _ = await _post(fake.base_url, {"messages": USER, "response_format": fmt})
        assert status == 400 and "response_format" in error["error"]["message"]
        _, canned, _ = await _post(fake.base_url, {"messages": USER})
        _, handled, _ = await _post(fake.base_url, {"messages": USER})
    assert canned["choices"][0]["message"]["content"] == "canned"
    assert handled["choices"][0]["finish_reason"] == "length"


def test_thread_mode_serves_models():
    async def get_models(url: str) -> dict:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/models") as response:
            return await response.json()

    with fake_openai_in_thread() as fake:
        assert asyncio.run(get_models(fake.base_url))["data"][0]["id"] == "fake"


def test_cli_serves_and_logs_requests(tmp_path: Path):
    log = tmp_path / "requests.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "tests.fake_openai", "--port", "0", "--log", str(log)],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    try:
        url = proc.stdout.readline().split()[-1]
        status, _, _ = asyncio.run(_post(url, {"messages": USER, "seed": 3}))
        assert status == 200
        deadline = time.monotonic() + 5
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert json.loads(log.read_text().splitlines()[0])["seed"] == 3
    finally:
        proc.terminate()
        proc.wait(timeout=10)
