"""Per-role models and endpoints, completion limits per call type, and reasoning kept apart from what
is said: the LLM client and the `llm` config against the scripted fake endpoint."""

from __future__ import annotations

import asyncio

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from synth.config import RunConfig, load_config
from synth.core.llm import LLM, split_thinking
from synth.core.llm_config import DEFAULT_CALL_MAX_TOKENS, LLMConfig
from synth.core.records import TRUNCATED
from synth.core.usage import UsageMeter
from tests.fake_openai import FakeOpenAI

USER = [{"role": "user", "content": "hi"}]


class Answer(BaseModel):
    answer: str


def test_a_role_takes_what_it_sets_and_llm_for_the_rest():
    cfg = LLMConfig(model="small", temperature=0.4, roles={"judge": {"model": "big", "temperature": 0.0}})
    judge, agent = cfg.for_role("judge"), cfg.for_role("agent")
    assert (judge.model, judge.temperature, judge.max_tokens) == ("big", 0.0, DEFAULT_CALL_MAX_TOKENS["judge"])
    assert (agent.model, agent.temperature, agent.max_tokens) == ("small", 0.4, DEFAULT_CALL_MAX_TOKENS["agent"])
    assert judge.roles == {} and not cfg.has_own_endpoint("judge")
    own = LLMConfig(roles={"judge": {"base_url": "http://judge:8000/v1", "max_tokens": 99}})
    assert own.has_own_endpoint("judge") and own.for_role("judge").max_tokens == 99


def test_call_max_tokens_given_replace_only_themselves():
    cfg = LLMConfig(max_tokens=300, call_max_tokens={"judge": 9000})
    assert cfg.tokens_for("judge") == 9000 and cfg.tokens_for("tasks") == DEFAULT_CALL_MAX_TOKENS["tasks"]
    assert cfg.tokens_for("agents") == 300  # a call type of no size of its own: llm.max_tokens
    with pytest.raises(ValidationError):
        LLMConfig(call_max_tokens={"judje": 10})
    with pytest.raises(ValidationError):
        LLMConfig(roles={"critic": {"model": "x"}})


def test_old_configs_hash_as_before_and_endpoints_stay_out_of_the_hash(tmp_path):
    plain = RunConfig()
    assert RunConfig(llm={"call_max_tokens": dict(DEFAULT_CALL_MAX_TOKENS), "roles": {}}).content_hash() == plain.content_hash()
    # A hash computed before roles existed (the resume fixture's config hashes as its manifest says: test_resume_fixture).
    here = RunConfig(llm={"roles": {"judge": {"base_url": "http://a:1/v1", "concurrency": 3, "api_key_env": "K"}}})
    there = RunConfig(llm={"roles": {"judge": {"base_url": "http://b:2/v1", "timeout_s": 9}}})
    assert here.content_hash() == there.content_hash() == plain.content_hash()
    assert RunConfig(llm={"roles": {"judge": {"model": "big"}}}).content_hash() != plain.content_hash()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"llm": {"roles": {"judge": {"modle": "big"}}}}))
    with pytest.raises(Exception, match=r"llm\.roles\.judge\.modle: unknown key"):
        load_config(path)


async def test_role_views_share_one_endpoint_and_its_limit():
    async with FakeOpenAI(latency_ms=50) as fake:
        cfg = LLMConfig(model="small", concurrency=2, max_retries=0,
                        roles={"judge": {"model": "big"}, "user": {"temperature": 0.1}})
        async with LLM(cfg, base_url=fake.base_url, meter=UsageMeter()) as llm:
            judge, user, agent = llm.role("judge"), llm.role("user"), llm.role("agent")
            assert llm.role("judge") is judge and judge.role("user") is user  # one client per role, from any view
            await asyncio.gather(*(client.chat(USER, seed=i) for i, client in enumerate([judge, user, agent] * 2)))
            assert llm.models() == {"default": "small", "agent": "small", "user": "small",
                                    "tool_simulator": "small", "judge": "big"}
    assert fake.max_in_flight == 2  # three roles, one limit: llm.concurrency
    assert sorted({b["model"] for b in fake.requests}) == ["big", "small"]
    assert {b["max_tokens"] for b in fake.requests if b["model"] == "big"} == {DEFAULT_CALL_MAX_TOKENS["judge"]}
    assert {b["temperature"] for b in fake.requests} == {0.1, 0.7}


async def test_a_role_with_its_own_endpoint_talks_to_it():
    async with FakeOpenAI() as main, FakeOpenAI() as other:
        cfg = LLMConfig(model="small", max_retries=0, roles={"judge": {"base_url": other.base_url, "model": "big"}})
        async with LLM(cfg, base_url=main.base_url) as llm:
            await llm.role("agent").chat(USER)
            await llm.role("judge").structured(USER, Answer)
            await llm.chat(USER)
    assert [b["model"] for b in main.requests] == ["small", "small"]
    assert [b["model"] for b in other.requests] == ["big"]


async def test_a_role_with_own_settings_but_no_url_uses_the_lazy_endpoint():
    async with FakeOpenAI() as fake:
        started = []

        async def start() -> str:
            started.append(1)
            return fake.base_url

        cfg = LLMConfig(max_retries=0, roles={"judge": {"timeout_s": 5, "concurrency": 1}})
        async with LLM(cfg, start_endpoint=start) as llm:
            judge = llm.role("judge")
            assert judge._root is None  # a client of its own (its own limit), on the run's endpoint
            await judge.chat(USER)
            await llm.chat(USER)
    assert started == [1] and len(fake.requests) == 2


async def test_call_types_pick_their_limit():
    async with FakeOpenAI() as fake:
        async with LLM(LLMConfig(max_tokens=111, max_retries=0), base_url=fake.base_url) as llm:
            await llm.structured(USER, Answer, call="tasks")
            await llm.chat(USER, call="user")
            await llm.chat(USER)
            await llm.chat(USER, call="tasks", max_tokens=5)  # an explicit limit wins
    assert [b["max_tokens"] for b in fake.requests] == [DEFAULT_CALL_MAX_TOKENS["tasks"], DEFAULT_CALL_MAX_TOKENS["user"],
                                                        111, 5]


# -- reasoning -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("<think>2+2 is 4.</think>\n\n4", ("2+2 is 4.", "4")),
    ("  <think>\nstill thinking", ("still thinking", "")),  # cut inside the block: all thinking
    ("the template opened it</think>4", ("the template opened it", "4")),
    ("plain answer", None),
    ("I write <think> tags in HTML</think> sometimes", None),  # not a leading block
])
def test_split_thinking(text, expected):
    assert split_thinking(text) == expected


async def test_think_blocks_become_reasoning_and_never_go_back():
    replies = [{"content": "<think>The user greets me.</think>Hello!"},
               {"content": "<think>plan</think>{\"answer\": \"x\"}", "reasoning_content": "server said"},
               "ok"]
    async with FakeOpenAI(script=replies) as fake:
        async with LLM(LLMConfig(max_retries=0, structured_mode="json_object"), base_url=fake.base_url) as llm:
            first = await llm.chat(USER)
            assert first.message == {"role": "assistant", "content": "Hello!", "reasoning_content": "The user greets me."}
            assert (await llm.structured(USER, Answer)).answer == "x"  # the JSON parses once the thinking is out
            marked = {**first.message, TRUNCATED: True}
            await llm.chat([*USER, marked, {"role": "user", "content": "again"}])
    assert fake.requests[2]["messages"][1] == {"role": "assistant", "content": "Hello!"}
