"""A warm pool: K sandboxes started ahead, handed out one episode at a time, reset and reused.

Starting a container costs the engine ~0.3-1 s (more under load); resetting one costs one exec
(~0.1 s) that runs after release, off the next episode's path, so a warm acquire is a queue get
plus a liveness check. A sandbox whose reset fails, or whose container died, is thrown away and a
fresh one started in the background, so the pool keeps K alive. When all K are busy (or the engine
is slow to start replacements) acquire waits: back-pressure, not failure, up to `acquire_timeout_s`.

    async with WarmPool(cfg, size=8, labels={"synth.run": name}) as pool:
        async with pool.acquire() as sandbox:
            ...
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Coroutine

from sandboxes import BACKENDS, backend_of
from sandboxes.base import Sandbox
from synth.core.errors import ConfigError, SandboxError

log = logging.getLogger(__name__)

class WarmPool:
    """`size` sandboxes of one config, kept started; see the module docstring."""

    def __init__(self, cfg: Any, size: int = 4, *, labels: dict[str, str] | None = None,
                 acquire_timeout_s: float | None = 600.0, reset_timeout_s: float = 30.0):
        self.backend = backend_of(cfg)
        if not self.backend.pools:
            pooled = ", ".join(name for name, b in BACKENDS.items() if b.pools)
            raise ConfigError(f"sandbox type {cfg.type!r} is not pooled (a fresh sandbox per episode); "
                              f"a warm pool takes: {pooled}")
        if size < 1:
            raise ConfigError(f"pool size must be at least 1, got {size}")
        self.cfg, self.size, self.labels = cfg, size, dict(labels or {})
        self.acquire_timeout_s, self.reset_timeout_s = acquire_timeout_s, reset_timeout_s
        self.stats: Counter[str] = Counter()  # started, acquired, reset, replaced, start_failed
        self._idle: asyncio.Queue[Sandbox | None] = asyncio.Queue()  # None: the pool closed
        self._live: set[Sandbox] = set()  # every sandbox this pool owns: starting, idle, in use, resetting
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._last_error: BaseException | None = None

    @property
    def idle(self) -> int:
        """Sandboxes ready to hand out now."""
        return 0 if self._closed else self._idle.qsize()

    async def __aenter__(self) -> WarmPool:
        """Start all `size` sandboxes (the backend bounds concurrent starts); fail only if none starts."""
        try:
            results = await asyncio.gather(*(self._start_one() for _ in range(self.size)), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if len(errors) == self.size:
                raise errors[0]
            for error in errors:
                log.warning("sandbox pool: a start failed, retrying in the background: %s", error)
                self._spawn(self._refill())
        except BaseException:
            await self._close_shielded()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self._close_shielded()

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Sandbox]:
        """A started sandbox, clean of earlier episodes; reset (or replaced) in the background on release."""
        sandbox = await self._take()
        try:
            yield sandbox
        finally:
            self._spawn(self._recycle(sandbox))

    async def _take(self) -> Sandbox:
        loop = asyncio.get_running_loop()
        deadline = None if self.acquire_timeout_s is None else loop.time() + self.acquire_timeout_s
        while True:
            if self._closed:
                raise SandboxError("the sandbox pool is closed")
            try:
                async with asyncio.timeout_at(deadline):
                    sandbox = await self._idle.get()
            except TimeoutError:
                why = f"; last start failure: {self._last_error}" if self._last_error else ""
                raise SandboxError(
                    f"no sandbox free within {self.acquire_timeout_s:g} s: all {self.size} sandboxes of the pool "
                    f"are in use or (re)starting{why}; raise the pool size or the acquire timeout"
                ) from None
            if sandbox is None:  # closed while waiting: wake the next waiter too
                self._idle.put_nowait(None)
                raise SandboxError("the sandbox pool closed while waiting for a sandbox")
            try:
                alive = await sandbox.is_alive()  # cheap: one engine inspect, or a stat
            except BaseException:
                self._idle.put_nowait(sandbox)  # cancelled while checking: it is still good
                raise
            if alive:
                self.stats["acquired"] += 1
                return sandbox
            log.info("sandbox pool: %s died while idle, replacing it", sandbox.id)
            self._spawn(self._replace(sandbox))

    async def _start_one(self) -> Sandbox:
        sandbox = self.backend(self.cfg, self.labels)
        self._live.add(sandbox)  # before start: a cancelled start is still stopped by close
        try:
            await sandbox.start()
        except Exception:
            self._live.discard(sandbox)
            await asyncio.shield(sandbox.stop())
            self.stats["start_failed"] += 1
            raise
        self.stats["started"] += 1
        self._idle.put_nowait(sandbox)
        return sandbox

    async def _refill(self) -> None:
        """Start one sandbox, retrying with backoff: a slow or failing engine must not end the run."""
        delay = 0.5
        while not self._closed:
            try:
                await self._start_one()
                return
            except Exception as e:
                self._last_error = e
                log.warning("sandbox pool: start failed, retrying in %.1f s: %s", delay, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _replace(self, sandbox: Sandbox) -> None:
        self.stats["replaced"] += 1
        self._live.discard(sandbox)
        await asyncio.shield(sandbox.stop())
        await self._refill()

    async def _recycle(self, sandbox: Sandbox) -> None:
        try:
            async with asyncio.timeout(self.reset_timeout_s):
                await sandbox.reset()
        except Exception as e:  # SandboxError (dead container, stubborn files), TimeoutError
            log.info("sandbox pool: reset of %s failed, replacing it: %s", sandbox.id, e)
            await self._replace(sandbox)
            return
        self.stats["reset"] += 1
        self._idle.put_nowait(sandbox)

    def _spawn(self, coro: Coroutine) -> None:
        if self._closed:
            coro.close()  # released after close: close already stopped every sandbox
            return
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_shielded(self) -> None:
        # Shielded, and awaited to the end even when cancelled: asyncio.run cancels leftover tasks
        # at shutdown, which would otherwise cut the containers' removal short.
        closing = asyncio.ensure_future(self._close())
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            await closing
            raise

    async def _close(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        live, self._live = list(self._live), set()
        await asyncio.gather(*(sandbox.stop() for sandbox in live), return_exceptions=True)
        while not self._idle.empty():
            self._idle.get_nowait()
        self._idle.put_nowait(None)

