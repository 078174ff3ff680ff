"""The Sandbox protocol, its config union and `provision()`.

A sandbox is where tool servers and generated code run for one episode. Beyond exec and files it
offers one primitive: `spawn`, a process inside the sandbox with stdin/stdout pipes, over which the
harness speaks MCP (stdio transport). Backends: local (a workspace dir, bubblewrap when present),
docker (a container per episode), k8s (a Pod per episode).
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, AsyncIterator, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # pool.py imports this module
    from sandboxes.pool import WarmPool


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

    async def exec(self, argv: list[str], timeout: float = 60.0) -> ExecResult: ...

    async def spawn(self, argv: list[str], *, resident: bool = False) -> Pipe:
        """A process with stdin/stdout pipes. A `resident` one (only the harness starts them: a tool
        host) survives reset(); every spawned process ends at stop()."""
        ...

    async def reset(self) -> None:
        """Leave nothing of the last episode for the next: end its processes and pipes (residents
        excepted) and empty the writable dirs. For reuse by a warm pool; raises SandboxError if the
        sandbox cannot be made clean (the pool then replaces it)."""
        ...

    async def read_file(self, path: str) -> bytes: ...  # relative paths are under the workspace

    async def write_file(self, path: str, data: bytes) -> None: ...


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocalConfig(_Strict):
    """A per-episode workspace directory on this machine."""

    type: Literal["local"] = "local"
    isolation: Literal["auto", "bwrap", "none"] = Field(
        "auto", description="auto: bubblewrap when installed, else a plain subprocess with a loud warning."
    )
    root: str | None = Field(None, description="Where workspaces are created (default: a temp dir).")
    memory_mb: int | None = Field(None, gt=0, description="Address-space limit (RLIMIT_AS) per child, in MiB.")
    cpu_s: int | None = Field(
        None, gt=0, description="CPU-time limit (RLIMIT_CPU) per child, in seconds; a long-lived tool server accrues it."
    )
    exec_timeout_s: float | None = Field(
        None, gt=0, description="Upper bound on every exec's timeout; a caller's smaller timeout still wins."
    )
    ro_paths: list[str] = Field(
        default_factory=list, description="Extra host paths bound read-only at the same path (bwrap only)."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment for children; the host's environment is not inherited."
    )
    pool_size: int = Field(
        0, ge=0, description="Sandboxes kept started and reused across episodes (processes and writable dirs are "
        "reset between them); 0: a fresh one per episode. Size it to rollout.concurrency.")

class DockerConfig(_Strict):
    """One container per episode from the locally built sandbox image (no registry needed)."""

    type: Literal["docker"] = "docker"
    image: str | None = Field(
        None, description="Image tag; None: the default tag built by `synth sandboxes build-image`."
    )
    memory_mb: int = Field(512, gt=0, description="Memory limit of the container (swap disabled); tmpfs counts too.")
    pids_limit: int = Field(128, gt=0, description="Max processes/threads in the container (stops fork bombs).")
    cpus: float = Field(1.0, gt=0, description="CPU share of the container, in cores.")
    exec_timeout_s: float = Field(
        600.0, gt=0, description="Upper bound on any one exec's timeout; enforced inside the container."
    )
    workspace_mb: int = Field(256, gt=0, description="Size of the writable /workspace tmpfs.")
    user: str = Field("1000:1000", description="uid:gid every process in the container runs as (never root).")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for processes in the container.")
    start_concurrency: int = Field(4, gt=0, description="Max containers being created/started at once per event loop.")
    pool_size: int = Field(
        0, ge=0, description="Sandboxes kept started and reused across episodes (processes and writable dirs are "
        "reset between them); 0: a fresh one per episode. Size it to rollout.concurrency.")


class K8sConfig(_Strict):
    """One locked-down Pod per episode on a Kubernetes cluster (apply deploy/k8s/ first)."""

    type: Literal["k8s"] = "k8s"
    namespace: str = Field("synth", description="Namespace of the sandbox Pods (deploy/k8s/namespace.yaml makes `synth`).")
    image: str | None = Field(
        None, description="Image reference the nodes can pull; None: the local build tag (push it to a registry the cluster reaches)."
    )
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field(
        "IfNotPresent", description="Pod imagePullPolicy; Never suits images preloaded on the nodes (kind load, k3s import)."
    )
    memory_mb: int = Field(512, gt=0, description="Memory request and limit of the Pod (emptyDir in memory counts too).")
    cpus: float = Field(1.0, gt=0, description="CPU limit of the Pod in cores; the request is a quarter of it.")
    workspace_mb: int = Field(256, gt=0, description="Size limit of the /workspace emptyDir (and 64 MiB for /tmp).")
    exec_timeout_s: float = Field(
        600.0, gt=0, description="Upper bound on any one exec's timeout; enforced inside the Pod with `timeout`."
    )
    active_deadline_s: int = Field(
        3600, gt=0, description="activeDeadlineSeconds: the kubelet kills a Pod older than this even if stop() never ran."
    )
    ready_timeout_s: float = Field(
        300.0, gt=0, description="How long a Pod may take to be scheduled, pull its image and run; then SandboxError."
    )
    create_concurrency: int = Field(8, gt=0, description="Max Pod creations (create + wait for Running) at once per event loop.")
    kubeconfig: str | None = Field(None, description="kubeconfig file; None: $KUBECONFIG or ~/.kube/config (unless in_cluster).")
    context: str | None = Field(None, description="kubeconfig context; None: its current-context.")
    in_cluster: bool = Field(False, description="Use the Pod's service account (when synth itself runs in the cluster).")
    service_account: str | None = Field(
        None, description="serviceAccountName of sandbox Pods; None: the namespace default (its token is never mounted)."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for processes in the Pod.")
    max_retries: int = Field(6, ge=0, description="Retries of an API call answered 429/5xx or not at all (backoff with jitter).")


SandboxConfig = Annotated[LocalConfig | DockerConfig | K8sConfig, Field(discriminator="type")]


@asynccontextmanager
async def provision(cfg: SandboxConfig, *, labels: dict[str, str] | None = None,
                    pool: "WarmPool | None" = None) -> AsyncIterator[Sandbox]:
    """Start a sandbox for one episode and stop it whatever happens; with a pool, borrow one (reset on return)."""
    if pool is not None:
        async with pool.acquire() as sandbox:
            yield sandbox
        return
    sandbox = _backend(cfg, labels or {})
    try:
        await sandbox.start()
        yield sandbox
    finally:
        await asyncio.shield(sandbox.stop())


def _backend(cfg: SandboxConfig, labels: dict[str, str]) -> Sandbox:
    # Imported here so a backend's optional dependency is only needed when it is used.
    if cfg.type == "local":
        from sandboxes.local import LocalSandbox

        return LocalSandbox(cfg, labels)
    if cfg.type == "docker":
        from sandboxes.docker import DockerSandbox

        return DockerSandbox(cfg, labels)
    if cfg.type == "k8s":
        from sandboxes.k8s import K8sSandbox

        return K8sSandbox(cfg, labels)
    raise AssertionError(f"unknown sandbox type {cfg.type!r}")
