"""The LLM tool simulator: plays tools that have no implementation (Kimi K2's "tool simulator").

Arguments are validated against the inputSchema first, so a bad call gets the error a real server
would give without asking the LLM. The state ledger (key -> value) lives in a file in the episode's
sandbox workspace, so it survives calls, dies with the episode and is snapshotted at the end.
"""

from __future__ import annotations

import json
import random
from typing import Annotated, Any

from pydantic import BaseModel, Field

from sandboxes.base import Sandbox
from synth.llm import LLM
from synth.prompts import render
from tools.spec import ToolSpec, validate_arguments

STATE_FILE = "state.json"


class StateUpdate(BaseModel):
    key: Annotated[str, Field(min_length=1, max_length=60)]
    value: Annotated[str, Field(max_length=160)]


class SimulatedReply(BaseModel):
    result: Annotated[str, Field(min_length=1, max_length=400)]
    updates: list[StateUpdate] = Field(max_length=8)


class ToolOutcome(BaseModel):
    text: str
    is_error: bool = False
    fault: str | None = Field(None, description="The injected fault, when one was injected.")


class SimulatedToolset:
    """Tool runtime for one episode: call(name, arguments) and snapshot(), backed by an LLM."""

    def __init__(self, llm: LLM, specs: list[ToolSpec], sandbox: Sandbox, *, seed: int, fault_rate: float = 0.0):
        self.llm = llm
        self.specs = {s.name: s for s in specs}
        self.sandbox = sandbox
        self.rng = random.Random(seed)
        self.seed = seed
        self.fault_rate = fault_rate
        self.calls = 0

    async def reset(self, initial_state: dict[str, Any]) -> None:
        await self._save({k: _as_text(v) for k, v in initial_state.items()})

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        self.calls += 1
        spec = self.specs.get(name)
        if spec is None:
            return ToolOutcome(text=f"Error: unknown tool {name!r}; available: {sorted(self.specs)}", is_error=True)
        problem = validate_arguments(spec.input_schema, arguments)
        if problem:
            return ToolOutcome(text=f"Error: {problem}", is_error=True)
        fault = "transient" if self.rng.random() < self.fault_rate else None
        if fault:  # seeded, so the same episode fails the same way on a rerun
            return ToolOutcome(text="Error: service temporarily unavailable, retry later", is_error=True, fault=fault)
        state = await self.snapshot()
        prompt = render(__file__, "simulator", name=name, domain=spec.domain, state_model=spec.state_model or "-",
                        description=spec.description, schema=json.dumps(spec.input_schema),
                        state=json.dumps(state, indent=1) if state else "(empty)",
                        arguments=json.dumps(arguments))
        reply = await self.llm.structured([{"role": "user", "content": prompt}], SimulatedReply,
                                          seed=self.seed + self.calls, temperature=0.0)
        state.update({u.key: u.value for u in reply.updates})
        await self._save(state)
        return ToolOutcome(text=reply.result)

    async def snapshot(self) -> dict[str, Any]:
        return json.loads(await self.sandbox.read_file(STATE_FILE))

    async def _save(self, state: dict[str, Any]) -> None:
        await self.sandbox.write_file(STATE_FILE, json.dumps(state, sort_keys=True).encode())


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
