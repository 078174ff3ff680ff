"""Which runtime serves an agent's tools, and opening it on an episode's sandbox.

One rule for rollouts (run the tools for real), gold tasks (written only for those) and the RL
environment spec:
- tools imported from a real MCP server (kind "real", with a launch: tools/launch.py) run on that
  server inside the sandbox (tools/real.py), unless it needs the network (fetch): then simulated;
- the agent's other tools run for real when passing implementations cover them all (its own
  toolset's, or a composite of several: tools/compose.py), else the LLM tool simulator plays them;
- an agent served by more than one runtime gets them routed by tool name (tools/routed.py), with
  each part's state under its toolset's name.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, AsyncIterator

from pydantic import BaseModel, ConfigDict, ValidationError

from sandboxes.base import Sandbox
from synth.core.llm import LLM
from synth.core.records import Agent, Implementation, ToolSpec
from synth.core.store import RunStore
from tools.catalog import CATALOG
from tools.compose import compose
from tools.executable import ExecutableToolset
from tools.launch import ServerLaunch
from tools.real import RealToolset
from tools.routed import RoutedToolset
from tools.runtime import ToolRuntime
from tools.server.wire import MAX_RESULT_CHARS
from tools.simulator import SimulatedToolset

log = logging.getLogger(__name__)


class RealPart(BaseModel):
    """The tools of one real server that an agent uses, and how to start the server."""

    model_config = ConfigDict(extra="forbid")

    key: str  # the toolset's name: its state's key when the agent has other parts
    launch: ServerLaunch
    specs: list[ToolSpec]


def launch_of(spec: ToolSpec) -> ServerLaunch | None:
    """How to start the real server a tool came from: its recorded launch, or for tools imported before
    launches were recorded, the catalog entry of its package. None: not a runnable real tool."""
    if spec.kind != "real" or not spec.provenance:
        return None
    recorded = spec.provenance.get("launch")
    if isinstance(recorded, dict):
        try:
            return ServerLaunch.model_validate(recorded)
        except ValidationError:
            log.warning("tool %s: its recorded launch is not readable; it stays simulated", spec.name)
            return None
    package = str(spec.provenance.get("package") or "")
    entry = next((c for c in CATALOG if package.startswith(f"{c.ecosystem}:{c.package}==")), None)
    return entry.launch() if entry else None


def real_parts(specs: list[ToolSpec]) -> tuple[list[RealPart], list[ToolSpec]]:
    """(the real servers that serve some of `specs`, the specs left for the other runtimes)."""
    parts: dict[str, RealPart] = {}
    rest = []
    for spec in specs:
        launch = launch_of(spec)
        if launch is None or not launch.runnable:
            rest.append(spec)
            continue
        part = parts.setdefault(launch.key, RealPart(key=spec.toolset or launch.describe(), launch=launch, specs=[]))
        part.specs.append(spec)
    keys = [p.key for p in parts.values()]
    for part in parts.values():
        if keys.count(part.key) > 1:  # two servers reporting the same name: keep their state apart
            part.key = f"{part.key}@{part.launch.key[:6]}"
    return list(parts.values()), rest


def passed_implementations(store: RunStore) -> dict[str, Implementation]:
    """toolset_id -> the passing implementation of a run (implementations.jsonl)."""
    return {i.toolset_id: i for i in store.read("implementations") if i.passed}


def environment_notes(specs: list[ToolSpec]) -> list[str]:
    """What an agent over these tools is told about its real servers' data (where the repository is)."""
    notes = []
    for part in real_parts(specs)[0]:
        kind = part.launch.kind
        if kind is not None:
            notes.append(kind.note.format(data=kind.data_path()))
    return notes


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

    def real(self, agent: Agent) -> list[RealPart]:
        """The real servers serving some of the agent's tools ([] when none)."""
        return real_parts([self.tools[i] for i in agent.tool_ids if i in self.tools])[0]

    def rest_implementation(self, agent: Agent) -> Implementation | None:
        """For an agent with real servers: the passing implementation of its other tools, if one covers them."""
        parts, rest = real_parts([self.tools[i] for i in agent.tool_ids if i in self.tools])
        if not parts or not rest:
            return None
        toolsets = {s.toolset_id for s in rest}
        impl = self.implementations.get(next(iter(toolsets))) if len(toolsets) == 1 else None
        return impl if impl is not None and {s.id for s in rest} <= set(impl.tool_ids) else None

    def runtime_of(self, agent: Agent) -> str:
        """What serves the agent: real, executable, simulated, or mixed (several of them)."""
        parts, rest = real_parts([self.tools[i] for i in agent.tool_ids if i in self.tools])
        if not parts:
            return "executable" if self.implementation(agent) else "simulated"
        if not rest:
            return "real"
        return "mixed"

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
                       max_result_chars: int = MAX_RESULT_CHARS,
                       real: list[RealPart] | None = None) -> AsyncIterator[ToolRuntime]:
    """The runtime of one episode on `sandbox`: `impl` (a passing implementation) served over MCP by
    the sandbox's tool host, else the LLM simulator (`llm`). `process`: rollout.tool_process;
    `max_result_chars`: rollout.tool_result_max_chars (call_tool cuts the other runtimes' results).
    With `real` parts, their tools run on their servers and the others as above (on `impl` when it
    covers them), routed by name when there is more than one part."""
    if real:
        async with _routed(specs, sandbox, real, impl=impl, llm=llm, seed=seed, fault_rate=fault_rate,
                           process=process, max_result_chars=max_result_chars) as runtime:
            yield runtime
        return
    if impl is not None:
        async with ExecutableToolset(specs, sandbox, module=impl.module, seed=seed, fault_rate=fault_rate,
                                     process=process, max_result_chars=max_result_chars) as runtime:
            yield runtime
    else:
        if llm is None:
            raise ValueError("a simulated toolset needs an LLM")  # a bug: callers without one pass an impl
        yield SimulatedToolset(llm, specs, sandbox, seed=seed, fault_rate=fault_rate)


@asynccontextmanager
async def _routed(specs: list[ToolSpec], sandbox: Sandbox, real: list[RealPart], *, impl: Implementation | None,
                  llm: LLM | None, seed: int, fault_rate: float, process: str,
                  max_result_chars: int) -> AsyncIterator[ToolRuntime]:
    served = {s.name for part in real for s in part.specs}
    rest = [s for s in specs if s.name not in served]
    async with AsyncExitStack() as stack:
        parts: list[tuple[str, ToolRuntime, list[str]]] = []
        for n, part in enumerate(real):
            runtime = await stack.enter_async_context(RealToolset(
                part.specs, sandbox, launch=part.launch, seed=seed + n, fault_rate=fault_rate, process=process))
            parts.append((part.key, runtime, [s.name for s in part.specs]))
        if rest:
            key = "+".join(dict.fromkeys(s.toolset or "tools" for s in rest))
            if impl is not None:
                other: ToolRuntime = await stack.enter_async_context(ExecutableToolset(
                    rest, sandbox, module=impl.module, seed=seed, fault_rate=fault_rate, process=process,
                    max_result_chars=max_result_chars))
            elif llm is not None:
                other = SimulatedToolset(llm, rest, sandbox, seed=seed, fault_rate=fault_rate)
            else:
                raise ValueError("the simulated tools of a mixed agent need an LLM")
            parts.append((key, other, [s.name for s in rest]))
        yield parts[0][1] if len(parts) == 1 else RoutedToolset(parts)
