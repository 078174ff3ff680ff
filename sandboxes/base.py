"""The Sandbox protocol and the Backend contract every backend module fulfils.

A sandbox is where tool servers and generated code run for one episode. Beyond exec and files it
offers one primitive: `spawn`, a process inside the sandbox with stdin/stdout pipes, over which the
harness speaks MCP (stdio transport).

A backend is one module (local.py, docker.py, k8s.py) whose sandbox class is the Backend: it names
its config class, says whether a warm pool may reuse its sandboxes, and owns what is done per
config rather than per sandbox (leftover cleanup by run label, provenance for the export).
`sandboxes/__init__.py` maps a config's `type` to its backend in one table.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict


class ExecResult(BaseModel):
    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False
    duration_s: float = 0.0


@runtime_checkable
class Pipe(Protocol):
    """stdin/stdout of a process running inside a sandbox."""

    async def read(self, n: int = -1) -> bytes:
        """Up to n bytes of the process's stdout; b"" at EOF."""
        ...

    async def readline(self) -> bytes:
        """One line of stdout including the newline; b"" at EOF."""
        ...

    async def write(self, data: bytes) -> None:
        """Write to the process's stdin and drain."""
        ...

    async def close(self) -> None:
        """Close stdin, end the process, release the pipe. Idempotent."""
        ...


@runtime_checkable
class HasStderr(Protocol):
    """Optional for a Pipe: the end of the process's stderr, for error messages."""

    def stderr_tail(self, limit: int = 4000) -> str: ...


@runtime_checkable
class Sandbox(Protocol):
    id: str
    workspace: str  # absolute path of the writable workspace, as seen inside the sandbox

    async def start(self) -> None: ...  # idempotent

    async def stop(self) -> None: ...  # idempotent, shielded from cancellation

    async def is_alive(self) -> bool:
        """Started, not stopped, and still usable (its container or Pod runs): a cheap check, made
        before a warm pool hands it out."""
        ...

    async def exec(self, argv: list[str], timeout: float = 60.0) -> ExecResult: ...

    async def spawn(self, argv: list[str], *, resident: bool = False) -> Pipe:
        """A process with stdin/stdout pipes. A `resident` one (only the harness starts them: a tool
        host) survives reset(); every spawned process ends at stop()."""
        ...

    async def reset(self) -> None:
        """Leave nothing of the last episode for the next: end its processes and pipes (residents
        excepted) and empty the writable dirs. For reuse by a warm pool; raises SandboxError if the
        sandbox cannot be made clean (the pool then replaces it), or if its backend does not pool."""
        ...

    async def read_file(self, path: str) -> bytes: ...  # relative paths are under the workspace

    async def write_file(self, path: str, data: bytes) -> None: ...


class Backend(Protocol):
    """A backend: its sandbox class, constructed as `Backend(cfg, labels)`, plus what it does per config."""

    config: ClassVar[type[BackendConfig]]
    """Its config class, with a `type` literal that names it in `rollout.sandbox`."""
    pools: ClassVar[bool]
    """Whether a warm pool may keep its sandboxes and reset them between episodes."""

    def __call__(self, cfg: Any, labels: dict[str, str]) -> Sandbox: ...

    def remove_leftovers(self, cfg: Any, run: str | None = None, *, run_id: str | None = None) -> int:
        """Remove sandboxes that a killed process left behind: those labelled synth.run_id = `run_id`
        (one run directory), else synth.run = `run` (every run of that name), else all of this
        backend's; how many. Blocking: call it from a thread in async code."""
        ...

    def provenance(self, cfg: Any) -> tuple[str, str]:
        """(sandbox type, image) for the export: what the episodes ran in ('' when no image)."""
        ...

    def promises(self, cfg: Any) -> str:
        """What a sandbox of this config promises the code in it, in a line (run summary, dataset
        card; docs/security.md has the whole table)."""
        ...


class BackendConfig(BaseModel):
    """Base of every backend's config: unknown keys fail. Each declares `type: Literal["<name>"]`
    and `pool_size: int` (sandboxes kept warm; only 0 where the backend does not pool), in the
    order its fields are dumped (the export and config.yaml keep that order)."""

    model_config = ConfigDict(extra="forbid")
