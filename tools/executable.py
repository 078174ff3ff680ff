"""Executable synthetic tools: a generated Python module served by tools/server inside the sandbox.

Same shape as SimulatedToolset (tools/runtime.py ToolRuntime), so the episode loop cannot tell them apart.

Each sandbox gets one resident tool host (`python -m tools.server --host`, tools/server/host.py),
started on the first episode and kept while the sandbox lives: a warm pool's reset spares it, so a
reused sandbox starts no Python process per episode. Each episode sends its module, tools and
initial state (`synth/begin`). The host serves it in a fresh process it forks for it and relays to
(`per_episode`, the default: nothing of one episode reaches another, and the episode's code cannot
answer for the host), or itself with a fresh module and state (`shared`, for trusted modules only:
see tools/server/host.py; if the episode changed the host process, `synth/end` says so and the host
is replaced). An episode that ends any other way (an error, a cancellation, a timeout) closes the
host: the next one starts a new host. A result longer than `max_result_chars` is cut and marked, by
the host and again here (ToolOutcome.truncated).

The runner package is copied into the workspace (`.synth/tools/server`) and started with
PYTHONPATH=.synth: that works unchanged in every backend (local with or without bubblewrap, docker,
a Pod), needs no extra binds or config, and always runs the same runner version as the harness.
(The docker image also carries it at /opt/synth/tools/server; the workspace copy wins.)

The host is spoken to with tools/host_client.py (MCP's JSON-RPC lines without the SDK: see there
why); calls may come from any task (the rollout runs parallel tool calls in separate tasks).
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandboxes.base import Sandbox
from synth.core.errors import HostTimeout, ToolError
from synth.core.records import ToolSpec
from tools.host_client import HostConnection
from tools.runtime import STATE_FILE, ToolOutcome, injected_fault, tool_error, unknown_tool
from tools.server.wire import MAX_RESULT_CHARS, TRUNCATED, truncate

if TYPE_CHECKING:
    from sandboxes.pool import WarmPool

log = logging.getLogger(__name__)

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


async def ship(sandbox: Sandbox, module: str | None = None, specs: list[dict[str, Any]] | None = None) -> None:
    """The runner into the workspace, and the module and its specs when given."""
    files = runner_files()
    if module is not None:
        files[MODULE_FILE] = module.encode()
    if specs is not None:
        files[SPECS_FILE] = json.dumps(specs).encode()
    await asyncio.gather(*(sandbox.write_file(path, data) for path, data in files.items()))


_HOSTS: "weakref.WeakKeyDictionary[Sandbox, ToolHost]" = weakref.WeakKeyDictionary()


class ToolHost:
    """The resident `python -m tools.server --host` of one sandbox and the connection to it."""

    def __init__(self, sandbox: Sandbox, init_timeout: float):
        self.sandbox, self.init_timeout = sandbox, init_timeout
        self.connection: HostConnection | None = None
        self.busy = False  # an episode is open: the host serves one at a time

    @classmethod
    async def of(cls, sandbox: Sandbox, init_timeout: float = 30.0) -> "ToolHost":
        """The sandbox's host, started if it has none or its last one ended."""
        host = _HOSTS.get(sandbox)
        if host is None or not host.usable:
            host = cls(sandbox, init_timeout)
            await host._start()
            _HOSTS[sandbox] = host
        return host

    @property
    def usable(self) -> bool:
        return self.connection is not None and not self.connection.ended.is_set()

    async def _start(self) -> None:
        await ship(self.sandbox)
        pipe = await self.sandbox.spawn(python_argv("tools.server", "--host"), resident=True)
        self.connection = HostConnection(pipe, f"the tool host of sandbox {self.sandbox.id}")
        try:
            await self.connection.start(self.init_timeout)
        except BaseException:
            await self.close()
            raise

    async def request(self, method: str, params: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """The result; an error reply or a dead host is a ToolError."""
        if self.connection is None:
            raise ToolError(f"the tool host of sandbox {self.sandbox.id} is closed")
        return await self.connection.request(method, params, timeout)

    async def close(self) -> None:
        """End the host and its episode process (shielded: it must finish even when cancelled)."""
        if _HOSTS.get(self.sandbox) is self:
            del _HOSTS[self.sandbox]
        connection, self.connection = self.connection, None
        if connection is not None:
            await connection.close()


async def warm_hosts(pool: "WarmPool", count: int) -> None:
    """Start the tool hosts of `count` of the pool's sandboxes now, concurrently, instead of in the
    first episodes: ~0.2 s of CPU each, better paid before the first wave than inside it."""
    if count <= 0:
        return
    async with AsyncExitStack() as stack:
        boxes = [await stack.enter_async_context(pool.acquire()) for _ in range(count)]
        await asyncio.gather(*(ToolHost.of(box) for box in boxes))
    try:  # released sandboxes are reset in the background: let them be idle before the first episode
        async with asyncio.timeout(pool.reset_timeout_s):
            while pool.idle < count:
                await asyncio.sleep(0.01)
    except TimeoutError:
        pass  # a reset failed and its replacement is still starting: the episodes wait for it anyway


class ExecutableToolset:
    """Tool runtime for one episode: a toolset module served over MCP by the sandbox's tool host."""

    runtime = "executable"

    def __init__(self, specs: list[ToolSpec], sandbox: Sandbox, *, module: str, seed: int = 0,
                 fault_rate: float = 0.0, init_timeout: float = 30.0, end_timeout: float = 10.0,
                 process: str = "per_episode", max_result_chars: int = MAX_RESULT_CHARS):
        """`process`: per_episode (a fresh process forked by the host) or shared (the host's own,
        for trusted modules): rollout.tool_process. `max_result_chars`: rollout.tool_result_max_chars."""
        self.specs = {s.name: s for s in specs}
        self.process_mode, self.max_result_chars = process, max_result_chars
        self.sandbox, self.module, self.init_timeout, self.end_timeout = sandbox, module, init_timeout, end_timeout
        self.seed, self.fault_rate = seed, fault_rate
        self.calls = 0
        self.episode_process: dict[str, Any] = {}  # {pid, host} of the episode's process, from synth/begin
        self.recycled: list[str] = []  # why the host ended after this (shared) episode, if it did
        self._host: ToolHost | None = None

    async def __aenter__(self) -> "ExecutableToolset":
        return self

    async def __aexit__(self, exc_type: Any, *exc: Any) -> None:
        await self.aclose(clean=exc_type is None)

    async def reset(self, initial_state: dict[str, Any]) -> None:
        """Begin an episode on `initial_state` over the module's STATE_DEFAULT (ending one begun before)."""
        await self.aclose()
        host = await ToolHost.of(self.sandbox, self.init_timeout)
        if host.busy:
            raise ToolError(f"sandbox {self.sandbox.id} already serves an episode: one ExecutableToolset at a time")
        params = {"module": self.module, "tools": [s.to_mcp() for s in self.specs.values()],
                  "state": initial_state, "state_file": STATE_FILE, "seed": self.seed, "process": self.process_mode,
                  "max_result_chars": self.max_result_chars}
        try:
            self.episode_process = await host.request("synth/begin", params, timeout=self.init_timeout)
        except ToolError as e:
            if isinstance(e, HostTimeout) or not host.usable:
                await host.close()  # stuck (a module looping at import) or dead: the next episode starts anew
            raise  # else the module does not load or fit its tools: the host is fine, the episode is not
        except BaseException:
            await host.close()  # cancelled mid-begin: the host's state is unknown
            raise
        host.busy, self._host = True, host

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        self.calls += 1
        index = self.calls  # taken before any await, as in SimulatedToolset
        host = self._current()
        if name not in self.specs:
            return unknown_tool(name, self.specs)
        if fault := injected_fault(self.seed, index, self.fault_rate):  # before the server sees it: state untouched
            return fault
        try:  # the reply's shape is checked on arrival (host_client): text items, isError a bool
            result = await host.request("tools/call", {"name": name, "arguments": arguments})
        except ToolError as e:  # the episode process died (a generated module that calls os._exit, say)
            raise ToolError(f"toolset server failed on {name!r}: {e}") from e
        text, cut_from = truncate("\n".join(c["text"] for c in result["content"]), self.max_result_chars)
        cut_from = (result.get("_meta") or {}).get(TRUNCATED, cut_from)
        outcome = tool_error(text) if result.get("isError", False) else ToolOutcome(text=text)
        return outcome.model_copy(update={"truncated": cut_from}) if cut_from is not None else outcome

    def _current(self) -> ToolHost:
        if self._host is None or not self._host.usable:
            raise ToolError("ExecutableToolset used before reset() (or after its episode ended)")
        return self._host

    async def list_tools(self) -> list[dict[str, Any]]:
        """What the server offers, in MCP form (for checks: it must equal the specs)."""
        return (await self._current().request("tools/list", {}))["tools"]

    async def snapshot(self) -> dict[str, Any]:
        """The episode's state now (the episode process also keeps it in STATE_FILE after every call)."""
        if self._host is None:
            raise ToolError("ExecutableToolset.snapshot before reset()")
        return (await self._host.request("synth/snapshot", {}))["state"]

    async def finish(self) -> dict[str, Any]:
        """End the episode (`synth/end`, which returns the final state: one request, not two)."""
        host, self._host = self._host, None
        if host is None:
            raise ToolError("ExecutableToolset.finish before reset()")
        host.busy = False
        try:
            ended = await host.request("synth/end", {}, timeout=self.end_timeout)
        except BaseException:
            await host.close()
            raise
        if ended.get("recycle"):  # a shared episode changed the host process: it ends, the next gets a new one
            log.info("the tool host of sandbox %s is replaced: the episode left %s", self.sandbox.id,
                     "; ".join(map(str, ended["recycle"])))
            self.recycled = list(ended["recycle"])
            await host.close()
        return ended["state"]

    async def aclose(self, clean: bool = True) -> None:
        """End the episode. Cleanly (`synth/end`) the host stays for the sandbox's next episode;
        after an error or a cancellation, or if the end fails, the host is closed."""
        if self._host is None:
            return
        if clean:
            try:
                await self.finish()
            except Exception:
                pass  # finish closed the host; the episode's outcome is already decided
            return
        host, self._host = self._host, None
        host.busy = False
        await host.close()
