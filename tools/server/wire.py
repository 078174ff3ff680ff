"""MCP's stdio transport, server side, with the stdlib only: one JSON-RPC message per line.

The runner answers a handful of methods (initialize, ping, tools/list, tools/call and its own
`synth/*` ones), so it speaks the wire itself instead of importing an SDK server: importing the
`mcp` 2.x server stack cost 1.2-1.5 s of CPU per process here, paid again by every sandbox. The
official client SDK is what talks to it (tests/test_tool_server.py), so the two stay compatible.

Reads go straight to the file descriptor (no stdio buffering) and the unread rest of a chunk stays
in `LineChannel.buffer`: a forked child takes the channel over as it is (tools/server/host.py).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

# Revisions reachable through the initialize handshake; a client asking for another gets the newest.
PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
SERVER_INFO = {"name": "synth-toolset", "version": "1"}

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603


class RpcError(Exception):
    """An error response: `code` per JSON-RPC, `message` for the caller."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class LineChannel:
    """JSON lines over two file descriptors."""

    def __init__(self, read_fd: int = 0, write_fd: int = 1):
        self.read_fd, self.write_fd = read_fd, write_fd
        self.buffer = b""

    def receive(self) -> dict[str, Any] | RpcError | None:
        """The next message; an RpcError for a line that is not a JSON-RPC message; None at EOF."""
        while b"\n" not in self.buffer:
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        if not line.strip():
            return self.receive()
        try:
            message = json.loads(line)
        except ValueError as e:
            return RpcError(PARSE_ERROR, f"not JSON: {e}")
        if not isinstance(message, dict) or not isinstance(message.get("method", ""), str):
            return RpcError(INVALID_REQUEST, "not a JSON-RPC message")
        return message

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        while data:
            data = data[os.write(self.write_fd, data):]

    def reply(self, request_id: Any, result: dict[str, Any]) -> None:
        self.send({"jsonrpc": "2.0", "id": request_id, "result": result})

    def error(self, request_id: Any, error: RpcError) -> None:
        self.send({"jsonrpc": "2.0", "id": request_id, "error": {"code": error.code, "message": error.message}})


Handler = Callable[[dict[str, Any]], dict[str, Any]]


def initialize(params: dict[str, Any]) -> dict[str, Any]:
    asked = params.get("protocolVersion")
    return {"protocolVersion": asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[-1],
            "capabilities": {"tools": {"listChanged": False}}, "serverInfo": SERVER_INFO}


def answer(channel: LineChannel, message: dict[str, Any], handlers: dict[str, Handler]) -> None:
    """Run the message's handler and send its reply; a notification (no id) gets none."""
    request_id, method = message.get("id"), message.get("method")
    if method is None:
        return  # a response: this server sends no requests, so there is nothing waiting for it
    try:
        handler = handlers.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, f"method not found: {method}")
        params = message.get("params") or {}
        if not isinstance(params, dict):
            raise RpcError(INVALID_PARAMS, "params must be an object")
        result = handler(params)
    except RpcError as e:
        if request_id is not None:
            channel.error(request_id, e)
        return
    if request_id is not None:
        channel.reply(request_id, result)


def tool_result(text: str, is_error: bool) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": is_error}
