"""The LLM tool simulator: plays tools that have no implementation (Kimi K2's "tool simulator").

What the harness can decide, it decides without the LLM (tools/sim_state.py): arguments are
validated against the inputSchema (a bad call gets the error a real server would give); on a
seeded world (a task's non-empty initial state) an id argument naming no record of the state gets
"not found"; a creating call is handed a fresh id and cannot overwrite an existing record.

The LLM sees the tool, the state, the episode's earlier calls and the call, and returns
`{ok, result, updates}`; updates set or delete values at dot paths. Its instructions are a short
system message apart from the data, and a result that repeats them is asked again once, then fails
the episode (ToolError): a tool answer made of the simulator's own words is no tool answer.

The state lives in memory and is mirrored to a JSON file in the episode's sandbox workspace (it
dies with the episode and is snapshotted at the end). Calls are applied one after another: parallel
tool calls of one message take the lock in message order, and each sees the state the previous one
left (two parallel creates get different ids).
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from sandboxes.base import Sandbox
from synth.core.errors import ToolError
from synth.core.llm import LLM
from synth.core.prompts import render
from synth.core.records import ToolSpec
from synth.core.text import word_runs
from tools.runtime import STATE_FILE, ToolOutcome, injected_fault, tool_error, unknown_tool
from tools.sim_state import applied, claim_new_ids, creates_in, missing_entity, new_id, parse_value
from tools.spec import validate_arguments

INSTRUCTIONS = (Path(__file__).parent / "prompts" / "simulator.md").read_text(encoding="utf-8").strip()
HISTORY_CALLS = 10  # earlier calls of the episode shown to the simulator (the latest ones)
ECHO_WORDS = 5  # a result sharing this many consecutive words with the instructions repeats them


class StateUpdate(BaseModel):
    op: Literal["set", "delete"]
    path: Annotated[str, Field(min_length=1, max_length=120)]
    value: Annotated[str, Field(max_length=400)] = ""


class SimulatedReply(BaseModel):
    ok: bool
    result: Annotated[str, Field(min_length=1, max_length=600)]
    updates: list[StateUpdate] = Field(max_length=8)


_INSTRUCTION_RUNS = word_runs(INSTRUCTIONS, ECHO_WORDS)


def echoes_instructions(text: str) -> bool:
    """Whether a tool result repeats the simulator's instructions (ECHO_WORDS words in a row)."""
    return bool(word_runs(text, ECHO_WORDS) & _INSTRUCTION_RUNS)


class SimulatedToolset:
    """Tool runtime for one episode, backed by an LLM: reset, call, snapshot, finish."""

    runtime = "simulated"

    def __init__(self, llm: LLM, specs: list[ToolSpec], sandbox: Sandbox, *, seed: int, fault_rate: float = 0.0):
        self.llm = llm
        self.specs = {s.name: s for s in specs}
        self.sandbox = sandbox
        self.seed = seed
        self.fault_rate = fault_rate
        self.calls = 0
        self.anchored = False  # a seeded world: what the state does not hold does not exist
        self.history: list[str] = []
        self._state: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def reset(self, initial_state: dict[str, Any]) -> None:
        async with self._lock:
            self._state, self.history = copy.deepcopy(initial_state), []
            self.anchored = bool(initial_state)
            await self._save()

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        self.calls += 1
        index = self.calls  # taken before any await: concurrent calls keep their own index
        spec = self.specs.get(name)
        if spec is None:
            return unknown_tool(name, self.specs)
        problem = validate_arguments(spec.input_schema, arguments)
        if problem:
            return tool_error(problem)
        if fault := injected_fault(self.seed, index, self.fault_rate):
            return fault
        async with self._lock:  # one call at a time, in the order they came: each sees the last one's state
            outcome = await self._answer(spec, arguments, index)
            self.history.append(f"{name} {json.dumps(arguments, sort_keys=True)} -> "
                                f"{'ERROR ' if outcome.is_error else ''}{outcome.text[:300]}")
        return outcome

    async def _answer(self, spec: ToolSpec, arguments: dict[str, Any], index: int) -> ToolOutcome:
        state = self._state
        if self.anchored and (missing := missing_entity(spec, arguments, state)):
            return tool_error(missing)
        collection = creates_in(spec, state)
        fresh = new_id(state, collection) if collection else None
        reply = await self._ask(spec, arguments, fresh, seed=self.seed + index)
        if echoes_instructions(reply.result):
            reply = await self._ask(spec, arguments, fresh, seed=self.seed + index + 7919)
            if echoes_instructions(reply.result):
                raise ToolError(f"the tool simulator answered {spec.name!r} with its own instructions: "
                                f"{reply.result[:120]!r}")
        if not reply.ok:
            return tool_error(reply.result)
        updates = [(u.op, u.path, parse_value(u.value) if u.op == "set" else None) for u in reply.updates]
        result = reply.result
        if fresh is not None:
            updates, result = claim_new_ids(state, collection, fresh, updates, result)
        self._state = applied(state, updates)
        if updates:
            await asyncio.shield(self._save())  # a tool timeout must not leave a half-written file
        return ToolOutcome(text=result)

    async def _ask(self, spec: ToolSpec, arguments: dict[str, Any], fresh: str | None, *, seed: int) -> SimulatedReply:
        data = render(__file__, "simulator_call", name=spec.name, domain=spec.domain or "-",
                      description=spec.description, schema=json.dumps(spec.input_schema),
                      state=json.dumps(self._state, indent=1, sort_keys=True) if self._state else "{}",
                      history="\n".join(f"{n}. {h}" for n, h in enumerate(self.history[-HISTORY_CALLS:], 1))
                      or "(none)", arguments=json.dumps(arguments),
                      new_id=f"A record this call creates gets the id {fresh}." if fresh else "")
        return await self.llm.structured([{"role": "system", "content": INSTRUCTIONS},
                                          {"role": "user", "content": data}], SimulatedReply,
                                         seed=seed, temperature=0.0)

    async def finish(self) -> dict[str, Any]:
        """The final state (the file dies with the sandbox)."""
        return await self.snapshot()

    async def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self._state)

    async def _save(self) -> None:
        await self.sandbox.write_file(STATE_FILE, json.dumps(self._state, sort_keys=True).encode())
