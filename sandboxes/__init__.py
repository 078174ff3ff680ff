"""Sandboxes: where tool servers and generated code run, one per episode (sandboxes/base.py).

`BACKENDS` is the one table from a config's `type` to its backend; the `SandboxConfig` union and
every dispatch (`provision`, the warm pool, leftover cleanup, export provenance) come from it. A
new backend is one module (its config class and its sandbox class: see base.py `Backend`) plus one
line here.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, AsyncIterator, Union

from pydantic import Field, TypeAdapter, ValidationError

from sandboxes.base import Backend, Sandbox
from sandboxes.docker import DockerSandbox
from sandboxes.k8s import K8sSandbox
from sandboxes.local import LocalSandbox
from synth.core.errors import ConfigError

if TYPE_CHECKING:
    from sandboxes.pool import WarmPool

BACKENDS: dict[str, Backend] = {"local": LocalSandbox, "docker": DockerSandbox, "k8s": K8sSandbox}

# Built from the table, so a backend added there is a valid `rollout.sandbox` too.
SandboxConfig = Annotated[Union[tuple(b.config for b in BACKENDS.values())], Field(discriminator="type")]  # type: ignore[valid-type]

__all__ = ["BACKENDS", "SandboxConfig", "backend_of", "provision", "sandbox_config"]


def backend_of(cfg: Any) -> Backend:
    """The backend a sandbox config belongs to, by its `type`."""
    try:
        return BACKENDS[cfg.type]
    except KeyError:
        raise ConfigError(f"unknown sandbox type {cfg.type!r}; known: {', '.join(BACKENDS)}") from None


def sandbox_config(data: dict[str, Any]) -> Any:
    """A sandbox config from plain data (`{"type": "k8s", "namespace": ...}`), or a ConfigError naming the key."""
    try:
        return TypeAdapter(SandboxConfig).validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'type'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"sandbox {data.get('type')!r}: {problems}") from None


@asynccontextmanager
async def provision(cfg: Any, *, labels: dict[str, str] | None = None,
                    pool: WarmPool | None = None) -> AsyncIterator[Sandbox]:
    """Start a sandbox for one episode and stop it whatever happens; with a pool, borrow one (reset on return)."""
    if pool is not None:
        async with pool.acquire() as sandbox:
            yield sandbox
        return
    sandbox = backend_of(cfg)(cfg, labels or {})
    try:
        await sandbox.start()
        yield sandbox
    finally:
        await asyncio.shield(sandbox.stop())
