"""What the container backends (docker, k8s) share: identity, labels, the workspace path rule."""

from __future__ import annotations

import asyncio
import posixpath
import uuid
from typing import Awaitable, Callable

from synth.core.errors import SandboxError

WORKSPACE = "/workspace"


class ContainerIdentity:
    """Name and labels fixed before creation, so stop() can remove a half-made container or Pod."""

    def __init__(self, labels: dict[str, str]):
        self.id = uuid.uuid4().hex[:12]
        self.name = f"synth-{self.id}"
        self.workspace = WORKSPACE
        self.labels = {"synth.run": "adhoc", "synth.episode": self.id, **labels, "synth.managed": "1"}


def workspace_path(path: str) -> str:
    """`path` resolved under the workspace; anything that escapes it is refused."""
    full = posixpath.normpath(posixpath.join(WORKSPACE, path))  # an absolute path replaces the join
    if full != WORKSPACE and not full.startswith(WORKSPACE + "/"):
        raise SandboxError(f"path {path!r} resolves to {full!r}, outside the workspace {WORKSPACE}")
    return full


class StartOnce:
    """Start once, stop once. Concurrent and cancelled `start()` callers share one creation task, so
    a cancelled caller never orphans a half-made container; `stop()` waits for that task first."""

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.stopped = False

    async def start(self, name: str, create: Callable[[], Awaitable[None]]) -> None:
        if self.stopped:
            raise SandboxError(f"sandbox {name} was stopped; provision a new one")
        if self.task is None:
            self.task = asyncio.create_task(create())
        await asyncio.shield(self.task)

    async def begin_stop(self) -> bool:
        """False when stop already ran; else marks stopped and waits for a start in progress."""
        if self.stopped:
            return False
        self.stopped = True
        if self.task is not None:
            await asyncio.wait([self.task])
        return True
