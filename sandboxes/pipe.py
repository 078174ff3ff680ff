"""The part of a `Pipe` every subprocess-backed backend shares: reading stdout, writing stdin."""

from __future__ import annotations

import shlex
from asyncio.subprocess import Process

from synth.core.errors import SandboxError


class SubprocessPipe:
    """stdin/stdout of a local process (the tool itself, or `docker exec -i` reaching into a container).

    Backends add `close()` (how the process ends) and `stderr_tail()` (where stderr went)."""

    def __init__(self, proc: Process, argv: list[str]):
        self._proc, self._argv, self._closed = proc, argv, False

    @property
    def alive(self) -> bool:
        """Not closed, and its process has not exited."""
        return not self._closed and self._proc.returncode is None

    async def read(self, n: int = -1) -> bytes:
        return await self._proc.stdout.read(n)

    async def readline(self) -> bytes:
        return await self._proc.stdout.readline()

    async def write(self, data: bytes) -> None:
        try:
            self._proc.stdin.write(data)
            await self._proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as e:
            raise SandboxError(f"`{shlex.join(self._argv)}` no longer reads its stdin (exited?)") from e
