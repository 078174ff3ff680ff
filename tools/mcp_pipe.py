"""Speak MCP (stdio transport) to a server running inside a sandbox, over its `spawn()` pipe.

The SDK's `stdio_client` starts a local process itself; here the process belongs to a sandbox
backend (local, docker exec -i, a Pod exec stream), so this module adapts a byte `Pipe` to the
`SessionMessage` streams `ClientSession` expects, with the same wire format: one JSON-RPC message
per line.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import mcp_types
from mcp import ClientSession, MCPError
from mcp.shared.message import SessionMessage

from sandboxes.base import HasStderr, Pipe, Sandbox
from synth.core.errors import ToolError

log = logging.getLogger(__name__)


class SessionWatch:
    """What a holder of a long-lived session learns: `ended` (the server's stdout closed), its stderr."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.pipe: Pipe | None = None

    def stderr(self) -> str:
        return stderr_of(self.pipe) if self.pipe is not None else ""


@asynccontextmanager
async def mcp_session(
    sandbox: Sandbox, argv: list[str], *, init_timeout: float = 30.0, call_timeout: float | None = None,
    resident: bool = False, watch: SessionWatch | None = None,
) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session with `argv` running inside `sandbox`.

    A server that dies or closes its stdout ends every pending and later request at once with a
    ToolError carrying the end of its stderr; the pipe is always closed on exit. `resident`: the
    process survives the sandbox's reset (a server kept for the next episode); `watch` learns when
    the server's stdout closes and can tell its stderr (for a holder that waits on something else).
    """
    command = shlex.join(argv)
    pipe = await sandbox.spawn(argv, resident=resident)
    if watch is not None:
        watch.pipe = pipe
    try:
        async with (
            _pipe_streams(pipe, watch.ended if watch else None) as (read, write),
            ClientSession(read, write, read_timeout_seconds=call_timeout) as session,
        ):
            try:
                with anyio.fail_after(init_timeout):
                    await session.initialize()
            except TimeoutError:
                raise ToolError(f"MCP server `{command}` did not initialize within {init_timeout:g}s{stderr_of(pipe)}")
            except MCPError as e:
                raise ToolError(f"MCP server `{command}` failed to initialize: {e.error.message}{stderr_of(pipe)}") from e
            try:
                yield session
            except MCPError as e:
                if e.code != mcp_types.CONNECTION_CLOSED:
                    raise
                raise ToolError(f"MCP server `{command}` closed the connection{stderr_of(pipe)}") from e
    except BaseExceptionGroup as group:
        # anyio task groups (ours and ClientSession's) wrap whatever leaves them; callers match
        # ToolError and the like, so hand back the sole error itself.
        sole = _sole(group)
        if sole is group:
            raise
        raise sole from sole.__cause__
    finally:
        with anyio.CancelScope(shield=True):
            await pipe.close()


def _sole(group: BaseExceptionGroup) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def stderr_of(pipe: Pipe) -> str:
    """'; its stderr ends with: ...' for error messages, or '' when there is none."""
    tail = pipe.stderr_tail().strip() if isinstance(pipe, HasStderr) else ""
    return f"; its stderr ends with:\n{tail}" if tail else ""


@asynccontextmanager
async def _pipe_streams(pipe: Pipe, ended: asyncio.Event | None = None):
    """Two tasks bridge the pipe and the session's memory streams, as `stdio_client` does."""
    read_send, read_recv = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_send, write_recv = anyio.create_memory_object_stream[SessionMessage](0)

    async def reader() -> None:
        # Closing read_send on EOF or a read failure is what wakes pending requests with
        # CONNECTION_CLOSED instead of letting them wait forever.
        async with read_send:
            buffer = b""
            try:
                while chunk := await pipe.read(65536):
                    *lines, buffer = (buffer + chunk).split(b"\n")
                    for line in lines:
                        if line.strip():
                            await read_send.send(_parse(line))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass  # the session is gone
            except Exception:
                log.exception("reading from the MCP server's pipe failed")
            finally:
                if ended is not None:
                    ended.set()

    async def writer() -> None:
        async with write_recv:
            try:
                async for message in write_recv:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await pipe.write(data.encode() + b"\n")
            except Exception:
                # The server may be alive but deaf: end the session rather than let a request hang.
                log.debug("writing to the MCP server's pipe failed", exc_info=True)
                await read_send.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(writer)
        try:
            async with read_recv, write_send:
                yield read_recv, write_send
        finally:
            tg.cancel_scope.cancel()


def _parse(line: bytes) -> SessionMessage | Exception:
    """A parse error goes to the session as a value: one bad line must not end the connection."""
    try:
        return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as e:
        return e
