"""The host between the harness and an episode's own process (`tool_process: per_episode`).

The episode's process, forked by the host (tools/server/host.py), never holds the harness's channel:
it closes it before the module loads and talks to the host over a socket pair of its own; the host
is not dumpable, so /proc/<host>/fd and /proc/<host>/mem are closed to it too. The host forwards one
request at a time (the episode process answers one at a time anyway), takes from the socket only the
one reply to that request, checks its shape (wire.reply_problem), cuts a result over the limit, and
passes it on. Anything else the episode process writes (a reply to another id, a second reply, a line
that is not JSON-RPC or longer than the limit) ends the episode: the process is killed and its
pending requests get an error. So the episode's code can only answer the call it is serving, as any
tool answers its own calls: never another call, the episode's end, or another episode.

The reply to `synth/end` (the final state) is passed on only once the episode process and every
process it started are dead (hygiene.end_descendants): a reset that follows finds nothing to kill.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import time
from collections import deque
from typing import Any

from tools.server.hygiene import end_descendants
from tools.server.wire import INTERNAL_ERROR, TRUNCATED, LineChannel, RpcError, reply_problem, truncate

ENDED, EOF = "ended", "eof"


class Relay:
    """One episode whose process is `pid`, reachable on `sock`, with synth/begin (`begin_id`) pending."""

    def __init__(self, channel: LineChannel, sock: socket.socket, pid: int, begin_id: Any, max_result_chars: int):
        self.channel, self.sock, self.pid, self.max_result_chars = channel, sock, pid, max_result_chars
        self.child = LineChannel(sock.fileno(), sock.fileno())
        self.queue: deque[dict[str, Any]] = deque()
        self.pending: dict[str, Any] | None = {"id": begin_id, "method": "synth/begin"}
        self.line_limit = 6 * max_result_chars + (1 << 20)  # JSON escapes take up to 6 bytes a character
        self.status: int | None = None  # the episode process's wait status, once reaped
        self.ended = False  # its processes are all gone

    def run(self) -> str:
        """Until the episode ends (ENDED: the host serves the next) or the harness hangs up (EOF)."""
        poller = select.poll()
        poller.register(self.channel.read_fd, select.POLLIN)
        poller.register(self.child.read_fd, select.POLLIN)
        try:
            self._take_requests()  # what the host had read ahead
            while True:
                for fd, _ in poller.poll():
                    if fd == self.channel.read_fd:
                        chunk = os.read(fd, 1 << 16)
                        if not chunk:
                            return EOF
                        self.channel.buffer += chunk
                        self._take_requests()
                    elif (ending := self._from_child()) is not None:
                        return ending
        finally:
            self._end_processes()
            self.sock.close()

    def _take_requests(self) -> None:
        while (message := self.channel.buffered()) is not None:
            if isinstance(message, RpcError):
                self.channel.error(None, message)
            elif message.get("id") is not None and message.get("method") is not None:
                self.queue.append(message)  # notifications and responses: nothing the episode needs
        self._forward()

    def _forward(self) -> None:
        if self.pending is None and self.queue:
            self.pending = self.queue.popleft()
            self.child.send(self.pending)

    def _from_child(self) -> str | None:
        try:
            chunk = os.read(self.child.read_fd, 1 << 16)
        except OSError:
            chunk = b""
        if not chunk:
            return self._broken(self._exit_reason())
        self.child.buffer += chunk
        while b"\n" in self.child.buffer:
            line, self.child.buffer = self.child.buffer.split(b"\n", 1)
            if line.strip() and (ending := self._reply(line)) is not None:
                return ending
        if len(self.child.buffer) > self.line_limit:
            return self._broken(f"wrote over {self.line_limit} bytes without a line end")
        return None

    def _reply(self, line: bytes) -> str | None:
        if len(line) > self.line_limit:
            return self._broken(f"wrote a line of {len(line)} bytes")
        try:
            message = json.loads(line)
        except ValueError:
            return self._broken("wrote a line that is not JSON")
        request = self.pending
        if request is None or not isinstance(message, dict) or "method" in message \
                or type(message.get("id")) is not type(request["id"]) or message.get("id") != request["id"]:
            return self._broken("wrote a reply to a request it was not serving")
        if problem := reply_problem(request["method"], message):
            return self._broken(f"sent a malformed reply to {request['method']}: {problem}")
        self.pending = None
        if request["method"] == "tools/call" and "result" in message:
            message["result"] = self._capped(message["result"])
        if request["method"] == "synth/end" or (request["method"] == "synth/begin" and "error" in message):
            self._end_processes()  # before the harness hears of the end
            self.channel.send(message)
            self._fail_queued("the episode has ended")
            return ENDED
        self.channel.send(message)
        self._forward()
        return None

    def _capped(self, result: dict[str, Any]) -> dict[str, Any]:
        texts = [c["text"] for c in result["content"]]
        if sum(map(len, texts)) <= self.max_result_chars:
            return result
        text, length = truncate("\n".join(texts), self.max_result_chars)
        meta = {**(result.get("_meta") or {}), TRUNCATED: length}
        return {**result, "content": [{"type": "text", "text": text}], "_meta": meta}

    def _broken(self, why: str) -> str:
        """End the episode: kill its processes, then answer what it left pending with the reason."""
        self._end_processes()
        error = RpcError(INTERNAL_ERROR, f"the episode process {why}; the episode has ended")
        if self.pending is not None:
            self.channel.error(self.pending["id"], error)
            self.pending = None
        self._fail_queued(error.message)
        return ENDED

    def _fail_queued(self, why: str) -> None:
        while self.queue:
            self.channel.error(self.queue.popleft()["id"], RpcError(INTERNAL_ERROR, why))

    def _exit_reason(self) -> str:
        """Its channel closed: how the episode process ended, if it did within a moment."""
        deadline = time.monotonic() + 0.2
        while self.pid is not None and time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pid, self.status = None, status
                break
            time.sleep(0.005)
        if self.status is None:
            return "closed its channel"
        if os.WIFSIGNALED(self.status):
            return f"was killed by signal {os.WTERMSIG(self.status)}"
        return f"exited with status {os.waitstatus_to_exitcode(self.status)}"

    def _end_processes(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, self.status = os.waitpid(self.pid, 0)
            self.pid = None
        end_descendants()
