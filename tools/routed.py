"""One episode's tools served by several runtimes: an agent that mixes a real server's toolset with a
synthetic one (executable or simulated), or two real servers. Calls go to the runtime that owns
the tool; the state is one object with each part's state under its key (the toolset's name), the
way composite executable toolsets keep theirs (tools/compose.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from tools.runtime import ToolOutcome, ToolRuntime, unknown_tool


class RoutedToolset:
    """`parts`: (state key, runtime, the tool names it serves), in the agent's order."""

    def __init__(self, parts: list[tuple[str, ToolRuntime, list[str]]]):
        keys = [key for key, _, _ in parts]
        if len(set(keys)) != len(keys):
            raise ValueError(f"routed parts need distinct state keys, got {keys}")
        self.parts = parts
        self.runtime = parts[0][1].runtime  # what call_tool stamps when a part leaves it unset (never: see call)
        self.route = {name: runtime for _, runtime, names in parts for name in names}

    async def reset(self, initial_state: dict[str, Any]) -> None:
        await asyncio.gather(*(runtime.reset(initial_state.get(key) or {}) for key, runtime, _ in self.parts))

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        runtime = self.route.get(name)
        if runtime is None:
            return unknown_tool(name, self.route)
        outcome = await runtime.call(name, arguments)
        return outcome if outcome.runtime else outcome.model_copy(update={"runtime": runtime.runtime})

    async def snapshot(self) -> dict[str, Any]:
        states = await asyncio.gather(*(runtime.snapshot() for _, runtime, _ in self.parts))
        return {key: state for (key, _, _), state in zip(self.parts, states)}

    async def finish(self) -> dict[str, Any]:
        """Every part ends (a failure of one is raised after the others ended)."""
        states = await asyncio.gather(*(runtime.finish() for _, runtime, _ in self.parts), return_exceptions=True)
        for state in states:
            if isinstance(state, BaseException):
                raise state
        return {key: state for (key, _, _), state in zip(self.parts, states)}
