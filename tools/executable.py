"""Executable synthetic tools: a generated Python module served by tools/server inside the sandbox.

Same shape as SimulatedToolset (reset, call, snapshot), so the rollout loop cannot tell them apart.
The runner package is copied into the workspace (`.synth/tools/server`) and started with
PYTHONPATH=.synth: that works unchanged in every backend (local with or without bubblewrap, docker,
a Pod), needs no extra binds or config, and always runs the same runner version as the host.
(The docker image also carries it at /opt/synth/tools/server; the workspace copy wins.)

The MCP session lives in a task of its own, so reset/call/aclose may come from any task (the rollout
runs parallel tool calls in separate tasks; anyio cancel scopes must exit in the task that entered).
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any, Protocol

from mcp import ClientSession, MCPError

from sandboxes.base import Sandbox
from synth.errors import ToolError
from tools.mcp_pipe import mcp_session
from tools.simulator import FAULTS, STATE_FILE, ToolOutcome
from tools.spec import ToolSpec

RUNNER_DIR = Path(__file__).resolve().parent / "server"
HOME = ".synth"  # workspace dir holding the runner, the module and the specs (not part of the state)
MODULE_FILE, SPECS_FILE = f"{HOME}/impl.py", f"{HOME}/tools.json"


def runner_files() -> dict[str, bytes]:
    """Workspace path -> content of the runner package (and an empty `tools` package above it)."""
    files = {f"{HOME}/tools/__init__.py": b""}
    for path in sorted(RUNNER_DIR.glob("*.py")):
        files[f"{HOME}/tools/server/{path.name}"] = path.read_bytes()
    return files


def python_argv(module: str, *args: str) -> list[str]:
    """argv running `python -m module` with the shipped runner importable, from the workspace."""
    return ["env", f"PYTHONPATH={HOME}", "PYTHONDONTWRITEBYTECODE=1", "python3", "-m", module, *args]


async def ship(sandbox: Sandbox, module: str, specs: list[dict[str, Any]]) -> None:
    files = {**runner_files(), MODULE_FILE: module.encode(), SPECS_FILE: json.dumps(specs).encode()}
    await asyncio.gather(*(sandbox.write_file(path, data) for path, data in files.items()))


class ToolRuntime(Protocol):
    """What the rollout needs from a tool runtime: SimulatedToolset and ExecutableToolset both fit."""

    async def reset(self, initial_state: dict[str, Any]) -> None: ...

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolOutcome: ...

    async def snapshot(self) -> dict[str, Any]: ...


class ExecutableToolset:
    """Tool runtime for one episode: a toolset module served over MCP inside `sandbox`."""

    def __init__(self, specs: list[ToolSpec], sandbox: Sandbox, *, module: str, seed: int = 0,
                 fault_rate: float = 0.0, init_timeout: float = 30.0):
        self.specs = {s.name: s for s in specs}
        self.sandbox, self.module, self.init_timeout = sandbox, module, init_timeout
        self.seed, self.fault_rate = seed, fault_rate
        self.calls = 0
        self._session: ClientSession | None = None
        self._owner: asyncio.Task | None = None
        self._stop = asyncio.Event()

    async def __aenter__(self) -> "ExecutableToolset":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def reset(self, initial_state: dict[str, Any]) -> None:
        """(Re)start the server on `initial_state` over the module's STATE_DEFAULT."""
        await self.aclose()
        await ship(self.sandbox, self.module, [s.to_mcp() for s in self.specs.values()])
        await self.sandbox.write_file(STATE_FILE, json.dumps(initial_state, sort_keys=True).encode())
        ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._owner = asyncio.create_task(self._serve(ready))
        try:
            self._session = await ready
        except BaseException:
            await self.aclose()
            raise

    async def _serve(self, ready: asyncio.Future[ClientSession]) -> None:
        argv = python_argv("tools.server", "--module", MODULE_FILE, "--specs", SPECS_FILE, "--state", STATE_FILE)
        try:
            async with mcp_session(self.sandbox, argv, init_timeout=self.init_timeout) as session:
                ready.set_result(session)
                await self._stop.wait()
        except BaseException as e:
            if not ready.done():
                ready.set_exception(e)
            elif not isinstance(e, asyncio.CancelledError):
                raise

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        self.calls += 1
        index = self.calls  # taken before any await, as in SimulatedToolset
        if self._session is None:
            raise ToolError("ExecutableToolset.call before reset()")
        if name not in self.specs:
            return ToolOutcome(text=f"Error: unknown tool {name!r}; available: {sorted(self.specs)}", is_error=True)
        if fault := self.fault(index):  # injected before the server sees the call: the state is untouched
            return ToolOutcome(text=FAULTS[fault], is_error=True, fault=fault)
        try:
            result = await self._session.call_tool(name, arguments)
        except MCPError as e:  # the server died (a generated module that calls os._exit, say)
            raise ToolError(f"toolset server failed on {name!r}: {e.error.message}") from e
        text = "\n".join(getattr(c, "text", "") or json.dumps(c.model_dump(mode="json")) for c in result.content)
        return ToolOutcome(text=f"Error: {text}" if result.is_error else text, is_error=bool(result.is_error))

    def fault(self, index: int) -> str | None:
        """The same seeded draw as SimulatedToolset.fault: a rerun fails the same calls the same way."""
        if self.fault_rate <= 0:
            return None
        rng = random.Random(f"{self.seed}:{index}")
        return rng.choice(sorted(FAULTS)) if rng.random() < self.fault_rate else None

    async def list_tools(self) -> list[dict[str, Any]]:
        """What the server offers, in MCP form (for checks: it must equal the specs)."""
        if self._session is None:
            raise ToolError("ExecutableToolset.list_tools before reset()")
        result = await self._session.list_tools()
        return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in result.tools]

    async def snapshot(self) -> dict[str, Any]:
        # The runner replaces the file atomically after every call: no lock needed to read it whole.
        return json.loads(await self.sandbox.read_file(STATE_FILE))

    async def aclose(self) -> None:
        owner, self._owner, self._session = self._owner, None, None
        if owner is None:
            return
        self._stop.set()
        try:
            await asyncio.wait_for(owner, 10)  # cancels the owner (and so the server) if it hangs
        except Exception:
            pass  # the server already failed; the call that met it reported the error
