"""The LLM tool simulator over a seeded world: not-found decided without the LLM, parallel calls
applied one after another with distinct new ids, deletes, the episode's earlier calls in the
prompt, instructions kept apart from the data, and a result that echoes them refused."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from sandboxes import provision
from sandboxes.local import LocalConfig
from synth.core.errors import ToolError
from synth.core.llm import LLM, LLMConfig
from synth.core.records import ToolSpec
from tests.fake_openai import FakeOpenAI
from tools.runtime import STATE_FILE
from tools.sim_state import new_id
from tools.simulator import INSTRUCTIONS, SimulatedToolset, echoes_instructions

ID = {"type": "string"}
SPECS = [
    ToolSpec(name="get_booking", description="Get a booking by id.", domain="travel",
             inputSchema={"type": "object", "properties": {"booking_id": ID}, "required": ["booking_id"]}),
    ToolSpec(name="create_booking", description="Book a room for a customer.", domain="travel",
             inputSchema={"type": "object", "properties": {"customer_id": ID, "room": ID},
                          "required": ["customer_id", "room"]}),
    ToolSpec(name="cancel_booking", description="Cancel a booking.", domain="travel",
             inputSchema={"type": "object", "properties": {"booking_id": ID}, "required": ["booking_id"]}),
]
WORLD = {"bookings": {"B-1001": {"customer_id": "C-7", "room": "12", "status": "confirmed"},
                      "B-1002": {"customer_id": "C-8", "room": "14", "status": "confirmed"}},
         "customers": {"C-7": {"name": "Ada"}, "C-8": {"name": "Bo"}}}


def simulator_requests(fake: FakeOpenAI) -> list[dict]:
    return [b for b in fake.requests if b["messages"][0]["content"] == INSTRUCTIONS]


def reply(ok: bool = True, result: str = "{}", updates: list[dict] | None = None) -> str:
    return json.dumps({"ok": ok, "result": result, "updates": updates or []})


def new_id_of(body: dict) -> str | None:
    found = re.search(r"gets the id (\S+)\.", body["messages"][-1]["content"])
    return found.group(1) if found else None


async def toolset(fake: FakeOpenAI, sandbox, world: dict | None = None) -> SimulatedToolset:
    llm = LLM(LLMConfig(model="fake", max_retries=0), base_url=fake.base_url)
    runtime = SimulatedToolset(llm, SPECS, sandbox, seed=3)
    await runtime.reset(WORLD if world is None else world)
    return runtime


@pytest.fixture
async def sandbox():
    async with provision(LocalConfig(isolation="none")) as sb:
        yield sb


async def test_a_lookup_of_an_absent_id_answers_not_found_without_the_llm(sandbox):
    async with FakeOpenAI(handler=lambda body: reply(result='{"booking": "B-1001"}')) as fake:
        runtime = await toolset(fake, sandbox)
        missing = await runtime.call("get_booking", {"booking_id": "B-9999"})
        assert missing.is_error and missing.text == "Error: booking 'B-9999' not found"
        unknown_customer = await runtime.call("create_booking", {"customer_id": "C-404", "room": "3"})
        assert unknown_customer.is_error and "customer 'C-404' not found" in unknown_customer.text
        assert simulator_requests(fake) == []  # decided by the harness
        found = await runtime.call("get_booking", {"booking_id": "B-1001"})
        assert not found.is_error and len(simulator_requests(fake)) == 1
        await runtime.llm.aclose()


async def test_without_a_seeded_world_every_id_goes_to_the_llm(sandbox):
    async with FakeOpenAI(handler=lambda body: reply(result='{"status": "confirmed"}')) as fake:
        runtime = await toolset(fake, sandbox, world={})
        outcome = await runtime.call("get_booking", {"booking_id": "B-9999"})
        assert not outcome.is_error and len(simulator_requests(fake)) == 1
        await runtime.llm.aclose()


async def test_two_parallel_creates_get_different_ids(sandbox):
    """Both replies write the same record id (a model that ignores the id it is given): the calls run
    one after another, the second sees the first's record, and the harness moves it to a fresh id."""
    same = reply(result='{"booking_id": "B-1003", "status": "confirmed"}',
                 updates=[{"op": "set", "path": "bookings.B-1003",
                           "value": json.dumps({"id": "B-1003", "customer_id": "C-7", "room": "5"})}])
    async with FakeOpenAI(handler=lambda body: same) as fake:
        runtime = await toolset(fake, sandbox)
        first, second = await asyncio.gather(runtime.call("create_booking", {"customer_id": "C-7", "room": "5"}),
                                             runtime.call("create_booking", {"customer_id": "C-8", "room": "6"}))
        state = await runtime.snapshot()
        requests = simulator_requests(fake)
        await runtime.llm.aclose()
    assert first.text == '{"booking_id": "B-1003", "status": "confirmed"}'
    assert second.text == '{"booking_id": "B-1004", "status": "confirmed"}'
    assert state["bookings"]["B-1003"]["id"] == "B-1003" and state["bookings"]["B-1004"]["id"] == "B-1004"
    assert set(state["bookings"]) == {"B-1001", "B-1002", "B-1003", "B-1004"}
    # The second call was asked after the first was applied: it saw B-1003 and its earlier call.
    assert [new_id_of(b) for b in requests] == ["B-1003", "B-1004"]
    assert '"B-1003"' in requests[1]["messages"][-1]["content"]
    assert "1. create_booking" in requests[1]["messages"][-1]["content"]
    # The ledger in the sandbox mirrors the state.
    assert json.loads(await sandbox.read_file(STATE_FILE)) == state


async def test_a_model_that_follows_the_given_id_and_deletes(sandbox):
    def handler(body: dict) -> str:
        content = body["messages"][-1]["content"]
        if "CALL cancel_booking" in content:
            return reply(result='{"cancelled": "B-1001"}', updates=[{"op": "delete", "path": "bookings.B-1001"}])
        fresh = new_id_of(body)
        return reply(result=json.dumps({"booking_id": fresh}), updates=[
            {"op": "set", "path": f"bookings.{fresh}", "value": '{"customer_id": "C-7", "room": "9"}'}])

    async with FakeOpenAI(handler=handler) as fake:
        runtime = await toolset(fake, sandbox)
        created = await runtime.call("create_booking", {"customer_id": "C-7", "room": "9"})
        cancelled = await runtime.call("cancel_booking", {"booking_id": "B-1001"})
        again = await runtime.call("cancel_booking", {"booking_id": "B-1001"})  # gone: not found, no LLM call
        state = await runtime.finish()
        assert len(simulator_requests(fake)) == 2
        await runtime.llm.aclose()
    assert json.loads(created.text) == {"booking_id": "B-1003"} and not cancelled.is_error
    assert again.is_error and "not found" in again.text
    assert set(state["bookings"]) == {"B-1002", "B-1003"} and state["bookings"]["B-1003"]["room"] == "9"


async def test_instructions_are_a_system_message_apart_from_the_data(sandbox):
    async with FakeOpenAI(handler=lambda body: reply(ok=False, result="room 12 is not free")) as fake:
        runtime = await toolset(fake, sandbox)
        refused = await runtime.call("create_booking", {"customer_id": "C-7", "room": "12"})
        (request,) = simulator_requests(fake)
        await runtime.llm.aclose()
    assert refused.is_error and refused.text == "Error: room 12 is not free"
    assert (await runtime.snapshot()) == WORLD  # a refused call changes nothing
    system, data = request["messages"]
    assert system["role"] == "system" and data["role"] == "user"
    assert not echoes_instructions(data["content"])  # the data message holds none of the instructions
    assert '"B-1001"' in data["content"] and "CALL create_booking" in data["content"]


async def test_a_result_that_echoes_the_instructions_is_asked_again_then_fails_the_episode(sandbox):
    echo = reply(result="what the tool returns, as JSON text with values from the state or the call")
    answers = iter([echo, reply(result='{"status": "confirmed"}'), echo, echo])
    async with FakeOpenAI(handler=lambda body: next(answers)) as fake:
        runtime = await toolset(fake, sandbox)
        retried = await runtime.call("get_booking", {"booking_id": "B-1001"})
        assert retried.text == '{"status": "confirmed"}' and len(simulator_requests(fake)) == 2
        with pytest.raises(ToolError, match="its own instructions"):
            await runtime.call("get_booking", {"booking_id": "B-1002"})
        await runtime.llm.aclose()


def test_new_ids_follow_the_collection_pattern_and_never_repeat():
    assert new_id(WORLD, "bookings") == "B-1003"
    assert new_id({"notes": {"7": {}}}, "notes") == "8"
    assert new_id({}, "notes") == "NOT-1"
    assert new_id({"tickets": {"T-01": {}}, "other": {"T-02": {}}}, "tickets") == "T-03"
