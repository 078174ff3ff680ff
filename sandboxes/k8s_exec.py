"""Processes inside a Pod over the exec websocket (channels: 0 stdin, 1 stdout, 2 stderr, 3 status).

`kubernetes.stream.stream` swaps `call_api` on the ApiClient it is handed for the duration of the
call, so concurrent streams on one shared client would corrupt each other: every stream gets its
own short-lived ApiClient. Each stream's socket is read and written by one thread only (the client's
websocket has no locking, and TLS objects must not be shared between threads).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import select
import shlex
import ssl
import threading
import time

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream
from kubernetes.stream.ws_client import ERROR_CHANNEL, STDERR_CHANNEL, STDOUT_CHANNEL, V5_CHANNEL_PROTOCOL, WSClient

from sandboxes.k8s_api import CONTAINER, explain
from synth.core.errors import SandboxError

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


def open_stream(conf: k8s.Configuration, namespace: str, pod: str, argv: list[str], stdin: bool) -> WSClient:
    """Blocking: connect an exec stream (binary frames, no tty). Raises ApiException."""
    api_client = k8s.ApiClient(conf)
    try:
        return stream(k8s.CoreV1Api(api_client).connect_get_namespaced_pod_exec, pod, namespace,
                      command=argv, container=CONTAINER, stdin=stdin, stdout=True, stderr=True, tty=False,
                      _preload_content=False, binary=True)  # fmt: skip
    finally:
        api_client.close()  # the websocket does not use it


def exit_code(status: bytes | str) -> int | None:
    """Exit code from the status channel's v1.Status; None when there is none; SandboxError when the
    process could not run at all (the runtime's message)."""
    if not status:
        return None
    try:
        data = json.loads(status)
    except ValueError:
        raise SandboxError(f"unreadable exec status: {status[:200]!r}") from None
    if data.get("status") == "Success":
        return 0
    for cause in (data.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause.get("message", "1"))
    raise SandboxError(f"exec failed: {data.get('message') or data}")


def send_stdin(ws: WSClient, data: bytes) -> None:
    for i in range(0, len(data), _CHUNK):
        ws.write_stdin(data[i : i + _CHUNK])
    ws.close_channel(0)  # EOF on stdin; a no-op on v4 (callers there must not need EOF)


def collect(ws: WSClient, stdin: bytes | None, deadline: float, limit: int) -> tuple[int | None, bytes, bytes]:
    """Blocking: feed stdin, gather stdout/stderr (each capped at `limit`) until the stream ends.

    Returns (exit code or None if the stream ended without a status, stdout, stderr); TimeoutError
    past `deadline` (monotonic), with the stream closed.
    """
    out, err = bytearray(), bytearray()
    try:
        if stdin is not None:
            send_stdin(ws, stdin)
        while ws.is_open():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ws.update(timeout=min(left, 1.0))
            for channel, buf in ((STDOUT_CHANNEL, out), (STDERR_CHANNEL, err)):
                if channel in ws._channels:  # read_channel() would poll the socket once more per call
                    data = ws._channels.pop(channel)
                    buf += data[: max(0, limit - len(buf))]
        return exit_code(ws._channels.pop(ERROR_CHANNEL, b"")), bytes(out), bytes(err)
    finally:
        ws.close()


class K8sPipe:
    """stdin/stdout of a process in a Pod. One IO thread owns the socket: it reads frames into an
    asyncio.StreamReader and sends what write() queued, woken through a socketpair."""

    def __init__(self, ws: WSClient, argv: list[str], loop: asyncio.AbstractEventLoop):
        self._ws, self._argv, self._loop = ws, argv, loop
        self._stdout = asyncio.StreamReader(limit=1 << 24, loop=loop)  # one MCP message can be large
        self._stderr = bytearray()
        self._outbox: queue.Queue[tuple[bytes | None, asyncio.Future]] = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        self.status: bytes = b""
        self._thread = threading.Thread(target=self._io, name=f"k8s-pipe-{argv[0]}", daemon=True)
        self._thread.start()

    def _io(self) -> None:
        ws = self._ws
        try:
            while ws.is_open():
                self._flush_outbox()
                sock = ws.sock.sock
                if sock is None:
                    break
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    ready, _, _ = select.select([sock, self._wake_r], [], [], 1.0)
                    if self._wake_r in ready:
                        os.read(self._wake_r, 4096)
                    if sock not in ready:
                        continue
                ws.update(timeout=0)
                if data := ws._channels.pop(STDOUT_CHANNEL, b""):
                    self._loop.call_soon_threadsafe(self._stdout.feed_data, data)
                if data := ws._channels.pop(STDERR_CHANNEL, b""):
                    self._stderr += data
                    del self._stderr[: -(1 << 16)]  # keep the tail only
        except Exception as e:  # the stream broke: EOF for the reader, the reason in stderr_tail
            if not self._closed:
                self._stderr += f"\n[exec stream failed: {e}]".encode()
        finally:
            self.status = ws._channels.pop(ERROR_CHANNEL, b"")
            ws.close()
            self._loop.call_soon_threadsafe(self._stdout.feed_eof)
            self._fail_outbox()

    def _flush_outbox(self) -> None:
        while True:
            try:
                data, done = self._outbox.get_nowait()
            except queue.Empty:
                return
            try:
                if data is None:
                    self._ws.close_channel(0)
                else:
                    self._ws.write_stdin(data)
                self._loop.call_soon_threadsafe(_settle, done, None)
            except Exception as e:
                self._loop.call_soon_threadsafe(_settle, done, e)
                raise

    def _fail_outbox(self) -> None:
        gone = SandboxError(f"`{shlex.join(self._argv)}` no longer reads its stdin (exited?)")
        while True:
            try:
                _, done = self._outbox.get_nowait()
            except queue.Empty:
                return
            self._loop.call_soon_threadsafe(_settle, done, gone)

    async def _send(self, data: bytes | None) -> None:
        if not self._thread.is_alive():
            raise SandboxError(f"`{shlex.join(self._argv)}` no longer reads its stdin (exited?)")
        done = self._loop.create_future()
        self._outbox.put((data, done))
        os.write(self._wake_w, b"x")
        if not self._thread.is_alive():  # it may have ended between the check and the put
            self._fail_outbox()
        await done

    async def read(self, n: int = -1) -> bytes:
        return await self._stdout.read(n)

    async def readline(self) -> bytes:
        return await self._stdout.readline()

    async def write(self, data: bytes) -> None:
        await self._send(data)

    async def close(self) -> None:
        """EOF on stdin (v5) or the stream's end (v4: the kubelet closes stdin), then the socket."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive() and self._ws.subprotocol == V5_CHANNEL_PROTOCOL:
            try:
                await asyncio.wait_for(self._send(None), 2.0)
                await asyncio.wait_for(asyncio.to_thread(self._thread.join, 2.0), 3.0)
            except (SandboxError, asyncio.TimeoutError):
                pass
        self._ws._connected = False  # ends the IO loop at its next turn; it closes the socket
        os.write(self._wake_w, b"x")
        await asyncio.to_thread(self._thread.join, 5.0)
        if not self._thread.is_alive():  # a stuck thread keeps its fds rather than select on closed ones
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)

    def stderr_tail(self, limit: int = 4000) -> str:
        return self._stderr[-limit:].decode(errors="replace")


def _settle(fut: asyncio.Future, error: BaseException | None) -> None:
    if not fut.done():
        fut.set_exception(error) if error else fut.set_result(None)


def stream_error(e: ApiException, pod: str) -> SandboxError:
    return SandboxError(f"exec in Pod {pod} failed: {explain(e) if e.body else e.reason}")
