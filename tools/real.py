"""Real MCP servers as a tool runtime: the server runs inside the episode's sandbox, spoken to over
its stdio pipe with the official `mcp` client (tools/mcp_pipe.py), on the task's seeded
environment (tools/environments.py); the episode ends with a snapshot of that environment.

Same shape as the other runtimes (tools/runtime.py ToolRuntime). Starting a server costs ~0.4-1 s
(mostly its own imports), so with `process: shared` a server whose environment kind is reusable
(its whole state is the data it works on) stays in its sandbox as a resident process: a warm
pool's reset spares it, and the next episode only replaces the data with its own seed. Otherwise
(`per_episode`, a kind that keeps state in the process, or an episode that ended in an error) the
server ends with its episode.

The model sees workspace paths as /workspace/... on every backend: arguments are mapped onto the
sandbox's real workspace and results back, so trajectories and gold actions are portable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types
from mcp import ClientSession, MCPError

from sandboxes.base import Sandbox
from synth.core.errors import ToolError
from synth.core.records import ToolSpec
from tools.environments import WORKSPACE
from tools.launch import ServerLaunch, command
from tools.mcp_pipe import SessionWatch, mcp_session
from tools.runtime import ToolOutcome, injected_fault, tool_error, unknown_tool

if TYPE_CHECKING:
    from sandboxes.pool import WarmPool

log = logging.getLogger(__name__)

MAX_RESIDENT = 4  # servers kept per sandbox; the least recently used goes first
_SERVERS: "weakref.WeakKeyDictionary[Sandbox, dict[str, RealServer]]" = weakref.WeakKeyDictionary()


class RealServer:
    """One server process in a sandbox and the client session with it. The session lives in a task of
    its own: anyio's scopes must close in the task that opened them, and episodes run in others."""

    def __init__(self, sandbox: Sandbox, launch: ServerLaunch, *, resident: bool, init_timeout: float):
        self.sandbox, self.launch, self.resident, self.init_timeout = sandbox, launch, resident, init_timeout
        self.argv = command(launch, sandbox)
        self.session: ClientSession | None = None
        self.watch = SessionWatch()
        self.busy = False
        self.used = time.monotonic()
        self._stop = asyncio.Event()
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def of(cls, sandbox: Sandbox, launch: ServerLaunch, *, shared: bool, init_timeout: float = 60.0) -> RealServer:
        """A server for one episode: the sandbox's resident one when `shared` and it is alive and idle,
        else a new one (resident when `shared`)."""
        servers = _SERVERS.setdefault(sandbox, {})
        server = servers.get(launch.key) if shared else None
        if server is None or not server.usable or server.busy:
            server = cls(sandbox, launch, resident=shared, init_timeout=init_timeout)
            await server.start()
            if shared:
                await _evict(servers, keep=MAX_RESIDENT - 1)
                servers[launch.key] = server
        server.busy, server.used = True, time.monotonic()
        return server

    @property
    def usable(self) -> bool:
        return self.session is not None and not self.watch.ended.is_set() and not self._stop.is_set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._serve(), name=f"mcp server {self.launch.describe()}")
        try:
            await self._ready
        except BaseException:
            await self.close()
            raise

    async def _serve(self) -> None:
        try:
            async with mcp_session(self.sandbox, self.argv, init_timeout=self.init_timeout, resident=self.resident,
                                   watch=self.watch) as session:
                self.session = session
                self._ready.set_result(None)
                stop, ended = asyncio.create_task(self._stop.wait()), asyncio.create_task(self.watch.ended.wait())
                try:
                    await asyncio.wait([stop, ended], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel(), ended.cancel()
        except BaseException as e:
            if not self._ready.done():
                self._ready.set_exception(e if isinstance(e, Exception) else ToolError(f"server start cancelled: {e!r}"))
            elif not isinstance(e, (Exception, asyncio.CancelledError)):
                raise
            else:
                log.debug("MCP server %s ended: %r", self.launch.describe(), e)
        finally:
            self.session = None
            servers = _SERVERS.get(self.sandbox)
            if servers is not None and servers.get(self.launch.key) is self:
                del servers[self.launch.key]

    async def call(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        """(text, is_error) of one call; a ToolError when the server is gone."""
        session = self.session
        if session is None or not self.usable:
            raise ToolError(f"MCP server `{self.launch.describe()}` is not running{self.watch.stderr()}")
        try:
            result = await session.call_tool(name, arguments)
        except MCPError as e:
            if e.code == mcp_types.CONNECTION_CLOSED or self.watch.ended.is_set():
                raise ToolError(f"MCP server `{self.launch.describe()}` closed the connection{self.watch.stderr()}") from e
            return e.error.message, True  # the server answered with a JSON-RPC error: the model sees it
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as e:
            raise ToolError(f"MCP server `{self.launch.describe()}` is gone{self.watch.stderr()}") from e
        content = getattr(result, "content", None) or []
        text = "\n".join(getattr(c, "text", None) or json.dumps(c.model_dump(mode="json", exclude_none=True))
                         for c in content)
        if not content and getattr(result, "structured_content", None) is not None:
            text = json.dumps(result.structured_content)
        return text, bool(getattr(result, "is_error", False))

    async def close(self) -> None:
        """End the server (shielded: it must finish even when cancelled)."""
        self._stop.set()
        if self._task is not None:
            await asyncio.shield(asyncio.wait([self._task]))


async def _evict(servers: dict[str, RealServer], keep: int) -> None:
    idle = sorted((s for s in servers.values() if not s.busy), key=lambda s: s.used)
    while len(servers) > keep and idle:
        await idle.pop(0).close()  # its task removes it from `servers`


def to_sandbox(value: Any, workspace: str) -> Any:
    """The model's /workspace paths as the sandbox's own, inside any JSON value."""
    if workspace == WORKSPACE:
        return value
    if isinstance(value, str):
        return workspace + value[len(WORKSPACE):] if value == WORKSPACE or value.startswith(WORKSPACE + "/") else value
    if isinstance(value, list):
        return [to_sandbox(v, workspace) for v in value]
    if isinstance(value, dict):
        return {k: to_sandbox(v, workspace) for k, v in value.items()}
    return value


def to_model(text: str, workspace: str) -> str:
    return text if workspace == WORKSPACE else text.replace(workspace, WORKSPACE)


class RealToolset:
    """Tool runtime for one episode: a real MCP server in the sandbox, on a seeded environment."""

    runtime = "real"

    def __init__(self, specs: list[ToolSpec], sandbox: Sandbox, *, launch: ServerLaunch, seed: int = 0,
                 fault_rate: float = 0.0, process: str = "shared", init_timeout: float = 60.0):
        """`process`: shared (keep the server for the sandbox's next episode when its kind allows) or
        per_episode (a server per episode): rollout.tool_process."""
        self.specs = {s.name: s for s in specs}
        self.sandbox, self.launch, self.seed, self.fault_rate = sandbox, launch, seed, fault_rate
        self.kind = launch.kind
        self.shared = process == "shared" and (self.kind is None or self.kind.reusable)
        self.init_timeout = init_timeout
        self.calls = 0
        self.server: RealServer | None = None

    async def __aenter__(self) -> RealToolset:
        return self

    async def __aexit__(self, exc_type: Any, *exc: Any) -> None:
        await self.release(clean=exc_type is None)

    async def reset(self, initial_state: dict[str, Any]) -> None:
        """Replace the environment with `initial_state` (the kind's seed), then make sure a server runs
        on it (some check their data at start: the seed comes first)."""
        await self.release()
        if self.kind is not None:
            try:
                await self.kind.build(self.sandbox, initial_state)
            except ValueError as e:  # a task's seed that does not fit: validated when tasks are written
                raise ToolError(f"cannot seed {self.launch.describe()}: {e}") from e
        self.server = await RealServer.of(self.sandbox, self.launch, shared=self.shared, init_timeout=self.init_timeout)

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        self.calls += 1
        index = self.calls  # before any await, as in the other runtimes
        if self.server is None:
            raise ToolError("RealToolset used before reset() (or after its episode ended)")
        if name not in self.specs:
            return unknown_tool(name, self.specs)
        if fault := injected_fault(self.seed, index, self.fault_rate):  # before the server sees it: state untouched
            return fault.model_copy(update={"runtime": self.runtime})
        text, is_error = await self.server.call(name, to_sandbox(arguments, self.sandbox.workspace))
        text = to_model(text, self.sandbox.workspace)
        if is_error:
            return tool_error(text.removeprefix("Error: "), runtime=self.runtime)
        return ToolOutcome(text=text, runtime=self.runtime)

    async def list_tools(self) -> list[dict[str, Any]]:
        if self.server is None or self.server.session is None:
            raise ToolError("RealToolset.list_tools before reset()")
        tools = (await self.server.session.list_tools()).tools
        return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]

    async def snapshot(self) -> dict[str, Any]:
        return await self.kind.snapshot(self.sandbox) if self.kind is not None else {}

    async def finish(self) -> dict[str, Any]:
        """The final state; the server stays for the sandbox's next episode when shared."""
        if self.server is None:
            raise ToolError("RealToolset.finish before reset()")
        try:
            return await self.snapshot()
        finally:
            await self.release()

    async def release(self, clean: bool = True) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        server.busy = False
        if not (clean and self.shared and server.usable):
            await server.close()


async def warm_servers(pool: WarmPool, launches: list[ServerLaunch], count: int) -> None:
    """Start the reusable servers of `launches` in `count` of the pool's sandboxes now, each on an empty
    seed (the pool's reset clears it), so the first episodes find them running."""
    shared = [launch for launch in launches if launch.runnable and (launch.kind is None or launch.kind.reusable)]
    if count <= 0 or not shared:
        return
    async with AsyncExitStack() as stack:
        boxes = [await stack.enter_async_context(pool.acquire()) for _ in range(count)]

        async def warm(box: Sandbox) -> None:
            for launch in shared[:MAX_RESIDENT]:
                if launch.kind is not None:
                    await launch.kind.build(box, {})
                server = await RealServer.of(box, launch, shared=True)
                server.busy = False

        results = await asyncio.gather(*(warm(box) for box in boxes), return_exceptions=True)
    for error in {str(r) for r in results if isinstance(r, BaseException)}:
        log.warning("warming MCP servers failed (the episodes start them instead): %s", error)
