"""A hand-built run directory whose export covers what chat templates trip on: nested argument
objects, parallel calls, tool results with quotes and non-ASCII text, reasoning, a dropped sample."""

from __future__ import annotations

import json

from synth.config import RunConfig, dump_config
from synth.context import Context
from synth.core.records import (Agent, Criterion, GoldAction, StateAssertion, Task, ToolCallTrace, ToolSpec, Trajectory,
                                Verdict)
from synth.core.store import RunStore
from synth.core.usage import UsageMeter

SEARCH = ToolSpec(name="search_flights", description="Find flights.", toolset="travel", inputSchema={
    "type": "object", "properties": {"origin": {"type": "string"}, "date": {"type": "string"}}, "required": ["origin"]})
BOOK = ToolSpec(name="book_seat", description="Book a seat.", toolset="travel", inputSchema={
    "type": "object", "properties": {"flight": {"type": "integer"}, "meal": {"type": "object", "properties": {
        "vegan": {"type": "boolean"}, "note": {"type": "string"}}}}, "required": ["flight"]})


def call(call_id: str, name: str, arguments: dict) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def traces(messages: list[dict]) -> list[ToolCallTrace]:
    results = {m["tool_call_id"]: m["content"] for m in messages if m["role"] == "tool"}
    return [ToolCallTrace(call_id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"],
                          result=results[c["id"]])
            for m in messages if m["role"] == "assistant" for c in m.get("tool_calls") or []]


def build(tmp_path, **export) -> Context:
    cfg = RunConfig(runs_dir=str(tmp_path), name="render", llm={"model": "gen-model"}, export=export)
    store = RunStore(cfg.run_dir)
    store.open(dump_config(cfg), cfg.content_hash())
    agent = Agent(toolset_id="ts", toolset="travel", domain="airlines", tool_ids=[SEARCH.id, BOOK.id],
                  name="agent", system_prompt="You book flights.")
    task = Task(agent_id=agent.id, goal="Fly to Oslo", persona="student", user_facts=["Home airport: BGO"],
                initial_state={"flights": [{"id": 7}]}, rubric=[Criterion(text="books a seat", kind="essential")],
                gold_actions=[GoldAction(tool="book_seat", arguments='{"flight": 7}')],
                assertions=[StateAssertion(path="bookings.0.flight", op="equals", value="7")])
    tools = [SEARCH.to_openai(), BOOK.to_openai()]
    single = [
        {"role": "system", "content": "You book flights."},
        {"role": "user", "content": "Flights from Bergen?"},
        {"role": "assistant", "content": None, "reasoning_content": "The user wants flights; search first.",
         "tool_calls": [call("call_0", "search_flights", {"origin": "BGO", "date": "2025-01-03"})]},
        {"role": "tool", "tool_call_id": "call_0", "name": "search_flights",
         "content": '[{"id": 7, "note": "window \\"A\\" — Bergen→Oslo"}]'},
        {"role": "assistant", "content": "Flight 7 leaves at 9. Shall I book it?"},
        {"role": "user", "content": "Yes, vegan meal."},
        {"role": "assistant", "content": "",
         "tool_calls": [call("call_1", "book_seat", {"flight": 7, "meal": {"vegan": True, "note": "nøtter: no"}})]},
        {"role": "tool", "tool_call_id": "call_1", "name": "book_seat", "content": "Booking B-17 confirmed"},
        {"role": "assistant", "content": "Booked: B-17."},
    ]
    parallel = [
        {"role": "system", "content": "You book flights."},
        {"role": "user", "content": "Search BGO and OSL, then book flight 9."},
        {"role": "assistant", "content": "Searching both.",
         "tool_calls": [call("call_0", "search_flights", {"origin": "BGO"}), call("call_1", "search_flights", {"origin": "OSL"})]},
        {"role": "tool", "tool_call_id": "call_0", "name": "search_flights", "content": '[{"id": 9}]'},
        {"role": "tool", "tool_call_id": "call_1", "name": "search_flights", "content": "[]"},
        {"role": "assistant", "content": "", "tool_calls": [call("call_2", "book_seat", {"flight": 9})]},
        {"role": "tool", "tool_call_id": "call_2", "name": "book_seat", "content": "Booking B-9 confirmed"},
        {"role": "assistant", "content": "Booked flight 9: B-9."},
    ]
    dropped = [
        {"role": "system", "content": "You book flights."},
        {"role": "user", "content": "Book flight 7."},
        {"role": "assistant", "content": "I booked it."},
    ]
    trajectories = [Trajectory(task_id=task.id, agent_id=agent.id, sample=i, seed=i, tools=tools, messages=m,
                               tool_calls=traces(m), user_stopped=True)
                    for i, m in enumerate((single, parallel, dropped))]
    store.append("tools", [SEARCH, BOOK])
    store.append("agents", [agent])
    store.append("tasks", [task])
    store.append("trajectories", trajectories)
    a, b, c = trajectories
    store.append("verdicts", [
        Verdict(trajectory_id=a.id, task_id=task.id, score=1.0, keep=True),
        Verdict(trajectory_id=b.id, task_id=task.id, score=0.8, keep=True),
        Verdict(trajectory_id=c.id, task_id=task.id, score=0.0, keep=False,
                reasons=["check failed: claims_backed_by_tool_calls", "score 0.00 below threshold 0.50"]),
    ])
    return Context(cfg=cfg, store=store, llm=None, meter=UsageMeter(), quiet=True)
