"""The client side of our own tool host: MCP's JSON-RPC lines over a sandbox pipe, without the SDK.

Real MCP servers (imports, reference servers) are spoken to with the official `mcp` client SDK
(tools/mcp_pipe.py). For the tool host, whose other end we also write (tools/server/), the rollout
loop's hot path uses this instead: a request is one write and one future, woken by one reader task.
Through the SDK's ClientSession a request cost ~0.5 ms of CPU and five event-loop hops (memory
streams, dispatcher, result validation); with hundreds of episodes on one loop each hop waits a whole
loop iteration, and tool calls took 70-113 ms (median) at concurrency 256 in bench/rollout.py.
tests/test_tool_server.py also drives the host with the official client, so the two stay compatible.

A reply is taken only for a request in flight, and only in the shape its method's result must have
(tools/server/wire.reply_problem): anything else fails that request with a ToolError, so a host that
misbehaves costs its episode (recorded as an error), never the stage. In `tool_process: per_episode`
the host already holds episode code to that; in `shared` this check is all there is, and a
well-formed reply the episode's code writes for a pending request cannot be told from the host's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from sandboxes.base import HasStderr, Pipe
from synth.core.errors import HostTimeout, ToolError
from tools.server.wire import reply_problem

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "2025-11-25"


class HostConnection:
    """Requests to one tool host; responses matched by id. Any number may be in flight."""

    def __init__(self, pipe: Pipe, name: str = "tool host"):
        self.pipe, self.name = pipe, name
        self.ended = asyncio.Event()  # the host's stdout closed: every request from now on fails
        self._pending: dict[int, tuple[str, asyncio.Future[dict[str, Any]]]] = {}  # id -> (method, future)
        self._next_id = 0
        self._reader: asyncio.Task | None = None

    async def start(self, timeout: float) -> None:
        """Read responses from now on and do MCP's initialize handshake."""
        self._reader = asyncio.create_task(self._read())
        await self.request("initialize", {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                                          "clientInfo": {"name": "synth", "version": "1"}}, timeout=timeout)
        await self._write({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def request(self, method: str, params: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """The result; a JSON-RPC error, a closed pipe or the timeout is a ToolError."""
        if self.ended.is_set():
            raise ToolError(f"{self.name} has ended{self._stderr()}")
        self._next_id += 1
        request_id = self._next_id
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = method, future
        try:
            await self._write({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise HostTimeout(f"{self.name}: {method} got no answer within {timeout:g} s") from None
        finally:
            self._pending.pop(request_id, None)

    async def _write(self, message: dict[str, Any]) -> None:
        try:
            await self.pipe.write(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
        except Exception as e:  # the process is gone; the reader reports why
            raise ToolError(f"{self.name} no longer reads its stdin{self._stderr()}") from e

    async def _read(self) -> None:
        try:
            while line := await self.pipe.readline():
                try:
                    message = json.loads(line)
                    method, future = self._pending[message["id"]]
                except (ValueError, TypeError, KeyError):  # not JSON, no id, or an id nothing waits for
                    # (a reply to a call that timed out, too: debug, not warning)
                    log.debug("%s wrote a line that answers no pending request: %.200r", self.name, line)
                    continue
                if future.done():
                    continue  # a request that timed out
                if problem := reply_problem(method, message):
                    future.set_exception(ToolError(f"{self.name} sent a malformed reply to {method}: {problem}"))
                elif "error" in message:
                    future.set_exception(ToolError(message["error"]["message"]))
                else:
                    future.set_result(message["result"])
        except Exception as e:  # a broken pipe ends the connection like EOF does
            log.debug("reading from %s failed: %s", self.name, e)
        finally:
            self.ended.set()
            why = ToolError(f"{self.name} closed the connection{self._stderr()}")
            for _, future in self._pending.values():
                if not future.done():
                    future.set_exception(why)

    def _stderr(self) -> str:
        tail = self.pipe.stderr_tail().strip() if isinstance(self.pipe, HasStderr) else ""
        return f"; its stderr ends with:\n{tail}" if tail else ""

    async def close(self) -> None:
        """Close the pipe (ending the host) and stop reading. Idempotent."""
        self.ended.set()
        try:
            await asyncio.shield(self.pipe.close())
        finally:
            if self._reader is not None:
                self._reader.cancel()
