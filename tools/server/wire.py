"""MCP's stdio transport, server side, with the stdlib only: one JSON-RPC message per line.

The runner answers a handful of methods (initialize, ping, tools/list, tools/call and its own
`synth/*` ones), so it speaks the wire itself instead of importing an SDK server: importing the
`mcp` 2.x server stack cost 1.2-1.5 s of CPU per process here, paid again by every sandbox. The
official client SDK is what talks to it (tests/test_tool_server.py), so the two stay compatible.

Reads go straight to the file descriptor (no stdio buffering) and the unread rest of a chunk stays
in `LineChannel.buffer`, for the host's relay to an episode process (tools/server/relay.py).

`reply_problem` states what a reply to each method must look like; the host checks an episode
process's replies with it, and the harness (tools/host_client.py) checks the host's.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

# Revisions reachable through the initialize handshake; a client asking for another gets the newest.
PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
SERVER_INFO = {"name": "synth-toolset", "version": "1"}

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603
MAX_RESULT_CHARS = 65536  # a tool result longer than this is cut (rollout.tool_result_max_chars)
TRUNCATED = "synth/truncated"  # CallToolResult._meta key: the length of the result before it was cut


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
        while (message := self.buffered()) is None:
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        return message

    def buffered(self) -> dict[str, Any] | RpcError | None:
        """The next message already read (as receive() would return it), or None: no whole line yet."""
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip():
                return parse(line)
        return None

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        while data:
            data = data[os.write(self.write_fd, data):]

    def reply(self, request_id: Any, result: dict[str, Any]) -> None:
        self.send({"jsonrpc": "2.0", "id": request_id, "result": result})

    def error(self, request_id: Any, error: RpcError) -> None:
        self.send({"jsonrpc": "2.0", "id": request_id, "error": {"code": error.code, "message": error.message}})


def parse(line: bytes) -> dict[str, Any] | RpcError:
    try:
        message = json.loads(line)
    except ValueError as e:
        return RpcError(PARSE_ERROR, f"not JSON: {e}")
    if not isinstance(message, dict) or not isinstance(message.get("method", ""), str):
        return RpcError(INVALID_REQUEST, "not a JSON-RPC message")
    return message


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


def tool_result(text: str, is_error: bool, max_chars: int = MAX_RESULT_CHARS) -> dict[str, Any]:
    text, cut_from = truncate(text, max_chars)
    result = {"content": [{"type": "text", "text": text}], "isError": is_error}
    if cut_from is not None:
        result["_meta"] = {TRUNCATED: cut_from}
    return result


def truncate(text: str, max_chars: int) -> tuple[str, int | None]:
    """`text` cut to at most `max_chars` characters, a note saying so included, and its length before;
    (text, None) if it fits. Cutting a cut text again changes nothing."""
    if len(text) <= max_chars:
        return text, None
    note = "\n[truncated: the result had {} characters, the first {} are shown]"
    keep = max(0, max_chars - len(note.format(len(text), max_chars)))
    return text[:keep] + note.format(len(text), keep), len(text)


def _is_text_content(content: Any) -> bool:
    return (isinstance(content, list)
            and all(isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str) for c in content))


def _call_problem(result: dict[str, Any]) -> str | None:
    if not _is_text_content(result.get("content")):
        return "content must be a list of text items"
    if not isinstance(result.get("isError", False), bool):
        return "isError must be a boolean"
    meta = result.get("_meta", {})
    if not isinstance(meta, dict) or not isinstance(meta.get(TRUNCATED, 0), int):
        return f"_meta.{TRUNCATED} must be an integer"
    return None


def _state_problem(result: dict[str, Any]) -> str | None:
    if not isinstance(result.get("state"), dict):
        return "state must be an object"
    recycle = result.get("recycle", [])
    return None if isinstance(recycle, list) and all(isinstance(r, str) for r in recycle) else "recycle must be a list of text"


RESULT_SHAPES: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "tools/call": _call_problem,
    "tools/list": lambda r: None if isinstance(r.get("tools"), list) and all(isinstance(t, dict) for t in r["tools"])
    else "tools must be a list of objects",
    "synth/begin": lambda r: None if isinstance(r.get("pid"), int) and isinstance(r.get("host"), str)
    else "pid must be an integer and host a string",
    "synth/snapshot": _state_problem,
    "synth/end": _state_problem,
}


def reply_problem(method: str, message: Any) -> str | None:
    """Why `message` is not a well-formed reply to a `method` request, or None."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return "not a JSON-RPC message"
    if "error" in message:
        error = message["error"]
        if "result" in message or not isinstance(error, dict) or not isinstance(error.get("code"), int) \
                or not isinstance(error.get("message"), str):
            return "an error must be {code: integer, message: string} and come without a result"
        return None
    result = message.get("result")
    if not isinstance(result, dict):
        return "the result must be an object"
    check = RESULT_SHAPES.get(method)
    return check(result) if check else None
