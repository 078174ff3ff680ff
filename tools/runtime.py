"""What a tool runtime is, and what the model sees of a tool call.

A runtime serves one episode's tools (tools/simulator.py: an LLM plays them; tools/executable.py:
a generated module runs in the sandbox; tools/real.py: a real MCP server runs in the sandbox;
tools/routed.py: several of them for an agent whose toolsets differ; tools/serving.py picks) with
the same shape, so the episode loop cannot tell them apart. Each names itself in `runtime`
(real / executable / simulated), which every outcome carries into the trace.

Every failure the model sees as a tool's answer is made by `tool_error`, here: an unknown tool,
arguments that are not JSON or break the schema, an injected fault, a call that ran out of time,
an error the tool itself raised. The episode goes on. A server that fails itself (its process
died, its pipe broke) raises ToolError instead (synth/core/errors.py), which fails the episode.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any, Iterable, Literal, Protocol

from pydantic import BaseModel, Field

from tools.server.wire import MAX_RESULT_CHARS, truncate

STATE_FILE = "state.json"  # the episode's state, in the sandbox workspace (snapshotted at the end)

# Injected faults: what flaky real services answer (`rollout.fault_rate`).
FAULTS = {
    "unavailable": "service temporarily unavailable (503), retry later",
    "rate_limited": "rate limit exceeded (429), retry in a few seconds",
    "timeout": "upstream timed out (504) before completing the request",
}


RuntimeKind = Literal["real", "executable", "simulated"]


class ToolOutcome(BaseModel):
    text: str
    is_error: bool = False
    fault: str | None = Field(None, description="The injected fault, when one was injected.")
    truncated: int | None = Field(None, description="The result's length before it was cut to the limit, if it was.")
    runtime: RuntimeKind | None = Field(None, description="Which runtime answered (call_tool fills it in).")


class ToolRuntime(Protocol):
    """What the episode loop needs from a tool runtime: SimulatedToolset, ExecutableToolset, RealToolset
    and RoutedToolset fit. `runtime` names the kind (a routed one: the kind of its first part)."""

    runtime: RuntimeKind

    async def reset(self, initial_state: dict[str, Any]) -> None: ...

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolOutcome: ...

    async def snapshot(self) -> dict[str, Any]: ...

    async def finish(self) -> dict[str, Any]:
        """End the episode and return its final state (no call may follow)."""
        ...


def tool_error(message: str, *, fault: str | None = None, runtime: RuntimeKind | None = None) -> ToolOutcome:
    """A failed call as the model sees it: the one place that writes "Error: ..."."""
    return ToolOutcome(text=f"Error: {message}", is_error=True, fault=fault, runtime=runtime)


def unknown_tool(name: str, available: Iterable[str]) -> ToolOutcome:
    return tool_error(f"unknown tool {name!r}; available: {sorted(available)}")


def injected_fault(seed: int, index: int, rate: float) -> ToolOutcome | None:
    """The fault injected into call number `index` of an episode, if any. Drawn from (episode seed,
    index) alone, so a rerun fails the same calls the same way whatever order concurrent calls
    finish in, and every runtime draws alike."""
    if rate <= 0:
        return None
    rng = random.Random(f"{seed}:{index}")
    if rng.random() >= rate:
        return None
    fault = rng.choice(sorted(FAULTS))
    return tool_error(FAULTS[fault], fault=fault)


async def call_tool(runtime: ToolRuntime, name: str, raw_arguments: str, timeout_s: float,
                    max_chars: int = MAX_RESULT_CHARS) -> ToolOutcome:
    """One call as the model made it (arguments as the JSON text it wrote), limited to `timeout_s`:
    arguments that are not JSON and a call that runs out of time are error results, not failures.
    A result over `max_chars` is cut with a note (executable runtimes cut their own; the outcome's
    `truncated` keeps the length before). A ToolError (the server failed) propagates: the episode
    cannot go on."""
    kind = getattr(runtime, "runtime", None)
    try:
        arguments = json.loads(raw_arguments or "{}")
    except json.JSONDecodeError as exc:
        return tool_error(f"arguments are not valid JSON ({exc.msg})", runtime=kind)
    try:
        async with asyncio.timeout(timeout_s):  # the episode's own timeout still cancels from outside
            outcome = await runtime.call(name, arguments)
    except TimeoutError:
        return tool_error(f"tool {name!r} did not answer within {timeout_s:g} s", runtime=kind)
    if outcome.truncated is None and (cut := truncate(outcome.text, max_chars))[1] is not None:
        outcome = outcome.model_copy(update={"text": cut[0], "truncated": cut[1]})
    return outcome if outcome.runtime or kind is None else outcome.model_copy(update={"runtime": kind})
