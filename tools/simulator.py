"""The LLM tool simulator: plays tools that have no implementation (Kimi K2's "tool simulator").

Arguments are validated against the inputSchema first, so a bad call gets the error a real server
would give without asking the LLM. The state ledger (key -> value) lives in a file in the episode's
sandbox workspace, so it survives calls, dies with the episode and is snapshotted at the end.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from pydantic import BaseModel, Field

from sandboxes.base import Sandbox
from synth.core.llm import LLM
from synth.core.prompts import render
from synth.core.records import ToolSpec
from tools.runtime import STATE_FILE, ToolOutcome, injected_fault, tool_error, unknown_tool
from tools.spec import validate_arguments


class StateUpdate(BaseModel):
    key: Annotated[str, Field(min_length=1, max_length=60)]
    value: Annotated[str, Field(max_length=160)]


class SimulatedReply(BaseModel):
    result: Annotated[str, Field(min_length=1, max_length=400)]
    updates: list[StateUpdate] = Field(max_length=8)


class SimulatedToolset:
    """Tool runtime for one episode: call(name, arguments) and snapshot(), backed by an LLM.

    Calls may run concurrently (parallel tool calls): each sees the state as it was when it
    started, and its updates are merged into the ledger under a lock, so none is lost.
    """

    runtime = "simulated"

    def __init__(self, llm: LLM, specs: list[ToolSpec], sandbox: Sandbox, *, seed: int, fault_rate: float = 0.0):
        self.llm = llm
        self.specs = {s.name: s for s in specs}
        self.sandbox = sandbox
        self.seed = seed
        self.fault_rate = fault_rate
        self.calls = 0
        self._lock = asyncio.Lock()

    async def reset(self, initial_state: dict[str, Any]) -> None:
        async with self._lock:
            await self._save({k: _as_text(v) for k, v in initial_state.items()})

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
        state = await self.snapshot()
        prompt = render(__file__, "simulator", name=name, domain=spec.domain, state_model=spec.state_model or "-",
                        description=spec.description, schema=json.dumps(spec.input_schema),
                        state=json.dumps(state, indent=1) if state else "(empty)",
                        arguments=json.dumps(arguments))
        reply = await self.llm.structured([{"role": "user", "content": prompt}], SimulatedReply,
                                          seed=self.seed + index, temperature=0.0)
        if reply.updates:
            # Shielded: a tool timeout must not leave a half-written ledger behind.
            await asyncio.shield(self._merge({u.key: u.value for u in reply.updates}))
        return ToolOutcome(text=reply.result)

    async def finish(self) -> dict[str, Any]:
        """The final state (the ledger file dies with the sandbox)."""
        return await self.snapshot()

    async def snapshot(self) -> dict[str, Any]:
        async with self._lock:  # a concurrent write truncates the file first: never read it half-written
            return await self._read()

    async def _read(self) -> dict[str, Any]:
        return json.loads(await self.sandbox.read_file(STATE_FILE))

    async def _merge(self, updates: dict[str, str]) -> None:
        async with self._lock:
            state = await self._read()
            state.update(updates)
            await self._save(state)

    async def _save(self, state: dict[str, Any]) -> None:
        await self.sandbox.write_file(STATE_FILE, json.dumps(state, sort_keys=True).encode())


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
