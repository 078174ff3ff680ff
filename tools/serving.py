"""Which runtime serves an agent's tools, and opening it on an episode's sandbox.

One rule for rollouts (run the tools for real), gold tasks (written only for those) and the RL
environment spec: an agent's tools run for real when passing implementations cover them all
(its own toolset's, or a composite of several: tools/compose.py), else the LLM tool simulator
plays them. Real MCP servers (imported tools) will plug in here as a third runtime.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from sandboxes.base import Sandbox
from synth.core.llm import LLM
from synth.core.records import Agent, Implementation, ToolSpec
from synth.core.store import RunStore
from tools.compose import compose
from tools.executable import ExecutableToolset
from tools.server.wire import MAX_RESULT_CHARS
from tools.runtime import ToolRuntime
from tools.simulator import SimulatedToolset

log = logging.getLogger(__name__)


def passed_implementations(store: RunStore) -> dict[str, Implementation]:
    """toolset_id -> the passing implementation of a run (implementations.jsonl)."""
    return {i.toolset_id: i for i in store.read("implementations") if i.passed}


class Serving:
    """The runtime choice for one stage's agents, with the composites it derived (made once per set
    of parts: ids are content hashes, so equal keys mean equal compositions; never stored)."""

    def __init__(self, tools: dict[str, ToolSpec], implementations: dict[str, Implementation]):
        """`tools`: ToolSpec id -> spec (to know which toolset each tool of a mixed or distractor
        agent comes from); `implementations`: toolset_id -> passing implementation."""
        self.tools, self.implementations = tools, implementations
        self._composed: dict[tuple[Any, ...], Implementation | str] = {}  # parts -> composite, or why not
        self._explained: set[str] = set()  # agents whose fallback to the simulator was logged

    @classmethod
    def of(cls, store: RunStore) -> Serving:
        return cls({t.id: t for t in store.read("tools")}, passed_implementations(store))

    def implementation(self, agent: Agent) -> Implementation | None:
        """The passing implementation that serves every tool of the agent, if any. An agent served by
        its own toolset's implementation gets that very record. An agent whose tools span several
        toolsets gets a composite when every toolset involved has a passing implementation covering
        the agent's tools of it, decoys included (they run for real too); else None, and the LLM
        simulator serves it."""
        impl = self.implementations.get(agent.toolset_id)
        if impl is not None and set(agent.tool_ids) <= set(impl.tool_ids):
            return impl
        parts = self._parts(agent)
        if parts is None:
            return None
        composed = self._compose(parts, agent.tool_ids)
        if isinstance(composed, str):
            if agent.id not in self._explained:
                self._explained.add(agent.id)
                log.info("agent %s (%s) runs on the tool simulator: its implementations cannot be composed: %s",
                         agent.id, agent.toolset, composed)
            return None
        return composed

    def _compose(self, parts: list[tuple[Implementation, list[ToolSpec]]], order: list[str]) -> Implementation | str:
        key = (tuple((impl.id, tuple(s.id for s in specs)) for impl, specs in parts), tuple(order))
        if key not in self._composed:
            try:
                self._composed[key] = compose(parts, order=order)
            except ValueError as e:
                self._composed[key] = str(e)
        return self._composed[key]

    def _parts(self, agent: Agent) -> list[tuple[Implementation, list[ToolSpec]]] | None:
        """(implementation, the agent's tools of its toolset) per toolset, the agent's own first, then in
        the order the tools list them; None unless every toolset has a passing implementation of them."""
        if not agent.tool_ids or any(i not in self.tools for i in agent.tool_ids):
            return None  # a tool whose toolset is unknown cannot be served for real
        groups: dict[str, list[ToolSpec]] = {}
        for spec in sorted((self.tools[i] for i in agent.tool_ids), key=lambda s: s.toolset_id != agent.toolset_id):
            groups.setdefault(spec.toolset_id, []).append(spec)
        if len(groups) < 2:
            return None
        parts = []
        for toolset_id, specs in groups.items():
            impl = self.implementations.get(toolset_id)
            if impl is None or not impl.passed or not {s.id for s in specs} <= set(impl.tool_ids):
                return None
            parts.append((impl, specs))
        return parts


@asynccontextmanager
async def tool_runtime(specs: list[ToolSpec], sandbox: Sandbox, *, impl: Implementation | None, llm: LLM | None,
                       seed: int, fault_rate: float = 0.0, process: str = "per_episode",
                       max_result_chars: int = MAX_RESULT_CHARS) -> AsyncIterator[ToolRuntime]:
    """The runtime of one episode on `sandbox`: `impl` (a passing implementation) served over MCP by
    the sandbox's tool host, else the LLM simulator (`llm`). `process`: rollout.tool_process;
    `max_result_chars`: rollout.tool_result_max_chars."""
    if impl is not None:
        async with ExecutableToolset(specs, sandbox, module=impl.module, seed=seed, fault_rate=fault_rate,
                                     process=process, max_result_chars=max_result_chars) as runtime:
            yield runtime
    else:
        if llm is None:
            raise ValueError("a simulated toolset needs an LLM")  # a bug: callers without one pass an impl
        yield SimulatedToolset(llm, specs, sandbox, seed=seed, fault_rate=fault_rate)
