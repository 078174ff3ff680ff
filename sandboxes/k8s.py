"""The k8s backend: one locked-down Pod per episode, driven through the official `kubernetes` client.

The Pod idles on `sleep infinity`; exec, spawn and file access all go through the Pod exec
websocket, so files and processes persist for the episode and vanish with the Pod. The Docker
backend's guarantees carry over (see k8s_api.pod_manifest); scale concerns live here: bounded
concurrent creations, readiness with clear errors, 409 and throttling handled, deletion guaranteed.
API plumbing: k8s_api.py; exec streams: k8s_exec.py. Both import the official client, which costs
~0.2 s: they are imported on first use, so `import sandboxes` does not pay for it.

A Pod serves one episode: this backend does not pool (`pool_size` only takes 0, reset() refuses).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from sandboxes.base import BackendConfig, ExecResult
from sandboxes.container import ContainerIdentity, StartOnce, workspace_path
from synth.core.errors import SandboxError

if TYPE_CHECKING:
    from sandboxes.k8s_exec import K8sPipe

log = logging.getLogger(__name__)


class K8sConfig(BackendConfig):
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
    pool_size: int = Field(
        0, ge=0, le=0, description="Always 0: a Pod serves one episode and is not reused (no warm pool on k8s).")


def _api() -> ModuleType:
    """sandboxes.k8s_api (and with it the kubernetes client), imported on first use."""
    from sandboxes import k8s_api

    return k8s_api

_OUTPUT_LIMIT = 1 << 20  # bytes of stdout/stderr an exec keeps
_FILE_LIMIT = 1 << 30
_OUTER_SLACK_S = 15.0  # beyond the in-Pod timeout (+2 s kill grace): only a stuck stream gets here
_NAME_ATTEMPTS = 3  # 409s in a row before giving up (a collision of random names is already rare)
_create_slots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> {limit: Semaphore}


def _create_slot(limit: int) -> asyncio.Semaphore:
    """Bounds concurrent Pod creations; one semaphore per event loop (it cannot cross loops)."""
    return _create_slots.setdefault(asyncio.get_running_loop(), {}).setdefault(limit, asyncio.Semaphore(limit))


class K8sSandbox:
    """The k8s backend (see sandboxes/base.py Backend): a Pod per sandbox, never pooled."""

    config = K8sConfig
    pools = False

    def __init__(self, cfg: K8sConfig, labels: dict[str, str]):
        self.cfg = cfg
        identity = ContainerIdentity(labels)
        self.id, self.name, self.workspace, self.labels = identity.id, identity.name, identity.workspace, identity.labels
        self._ready = False
        self._life = StartOnce()
        self._pipes: list[K8sPipe] = []

    @staticmethod
    def remove_leftovers(cfg: K8sConfig, run: str | None = None, *, run_id: str | None = None) -> int:
        """Delete managed Pods (label synth.managed=1; of one run dir (`run_id`) or of every run named
        `run`, when given) in cfg.namespace. Blocking, with its own event loop: call it from a thread."""
        return asyncio.run(delete_pods(cfg, run, run_id=run_id))

    @staticmethod
    def provenance(cfg: K8sConfig) -> tuple[str, str]:
        return "k8s", ""

    @staticmethod
    def promises(cfg: K8sConfig) -> str:
        return "k8s (a locked-down Pod per episode, never reused)"

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await self._life.start(self.name, self._start)

    async def _start(self) -> None:
        from sandboxes.image.build import image_tag

        image = self.cfg.image or image_tag()
        async with _create_slot(self.cfg.create_concurrency):  # the slot covers scheduling + pull too
            await self._create(image)
            try:
                await self._wait_ready(image)
            except BaseException:
                # A Pod that will never run still holds quota: free it now, not at stop().
                await asyncio.shield(_quiet_delete(self.cfg, self.name))
                raise
        self._ready = True

    async def _create(self, image: str) -> None:
        api = _api()
        core = api.core(self.cfg)
        for _ in range(_NAME_ATTEMPTS):
            body = api.pod_manifest(self.cfg, self.name, image, self.labels)
            try:
                await api.call(self.cfg, f"create {self.name}", core.create_namespaced_pod, self.cfg.namespace, body)
                return
            except api.ApiException as e:
                if api.status_of(e) == 409:
                    if await self._is_ours():  # an earlier attempt got through, its answer was lost
                        return
                    self.id = uuid.uuid4().hex[:12]
                    self.name, self.labels["synth.episode"] = f"synth-{self.id}", self.id
                    continue
                raise self._create_error(e, image) from e
        raise SandboxError(f"Pod names kept colliding in namespace {self.cfg.namespace} ({_NAME_ATTEMPTS} tries)")

    async def _is_ours(self) -> bool:
        api = _api()
        try:
            pod = await api.call(self.cfg, f"get {self.name}", api.core(self.cfg).read_namespaced_pod,
                                 self.name, self.cfg.namespace)
        except api.ApiException:
            return False
        return (pod.metadata.labels or {}).get("synth.episode") == self.id

    def _create_error(self, e: Exception, image: str) -> SandboxError:
        api = _api()
        status, why, ns = api.status_of(e), api.explain(e), self.cfg.namespace
        if status == 403 and "exceeded quota" in (e.body or ""):
            return SandboxError(f"ResourceQuota of namespace {ns} exceeded ({why}); lower rollout.concurrency "
                                "or sandbox create_concurrency, or raise the quota")
        if status == 403:
            return SandboxError(f"not allowed to create Pods in {ns} ({why}); apply deploy/k8s/rbac.yaml")
        if status == 404:
            return SandboxError(f"namespace {ns} not found ({why}); apply deploy/k8s/namespace.yaml")
        return SandboxError(f"cannot create Pod {self.name} from {image} in {ns}: {why}")

    async def _wait_ready(self, image: str) -> None:
        """Poll the Pod's status with a growing interval (a watch per Pod would hold a connection each)."""
        deadline = time.monotonic() + self.cfg.ready_timeout_s
        interval, waiting = 0.05, "not looked at yet"
        api = _api()
        core = api.core(self.cfg)
        while True:
            try:
                pod = await api.call(self.cfg, f"get {self.name}", core.read_namespaced_pod, self.name, self.cfg.namespace)
            except api.ApiException as e:
                raise SandboxError(f"Pod {self.name} vanished while starting ({api.explain(e)})") from e
            ready, fatal, waiting = api.readiness(pod)
            if ready:
                return
            if fatal:
                raise SandboxError(f"Pod {self.name} (image {image}) cannot start: {fatal}")
            if time.monotonic() + interval > deadline:
                raise SandboxError(f"Pod {self.name} not running after {self.cfg.ready_timeout_s:g}s "
                                   f"(ready_timeout_s); last seen: {waiting}")
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 2.0)

    async def stop(self) -> None:
        """Delete the Pod (idempotent, never raises: `synth sandboxes gc --backend k8s` finds leftovers,
        and activeDeadlineSeconds ends them anyway)."""
        if not await self._life.begin_stop():  # a start in progress finishes first: its Pod must exist
            return
        for pipe in self._pipes:
            try:
                await pipe.close()
            except Exception as e:
                log.debug("closing a pipe of %s: %s", self.name, e)
        if self._life.task is not None:  # never started: nothing was created
            await _quiet_delete(self.cfg, self.name)

    # -- processes -------------------------------------------------------------------------
    def _pod(self) -> str:
        if not self._ready or self._life.stopped:
            raise SandboxError(f"sandbox {self.name} is not running (not started, or stopped)")
        return self.name

    async def is_alive(self) -> bool:
        if not self._ready or self._life.stopped:
            return False
        try:
            return await self._dead() is None
        except Exception:  # the API did not answer: not usable now
            return False

    async def _dead(self) -> SandboxError | None:
        """A SandboxError describing the Pod if it is no longer running."""
        api = _api()
        try:
            pod = await api.call(self.cfg, f"get {self.name}", api.core(self.cfg).read_namespaced_pod,
                                 self.name, self.cfg.namespace)
        except api.ApiException as e:
            return SandboxError(f"Pod {self.name} is gone ({api.explain(e)}; deleted from outside, or evicted)")
        ready, fatal, waiting = api.readiness(pod)
        return None if ready else SandboxError(f"Pod {self.name} is not running: {fatal or waiting}")

    async def _run(self, argv: list[str], stdin: bytes | None, budget: float, limit: int) -> tuple[int, bytes, bytes]:
        from sandboxes.k8s_exec import collect, open_stream, stream_error

        api = _api()
        pod, conf = self._pod(), api.configuration(self.cfg)
        for attempt in range(self.cfg.max_retries + 1):
            try:
                ws = await api.run(open_stream, conf, self.cfg.namespace, pod, argv, stdin is not None)
                break
            except api.ApiException as e:
                if api.status_of(e) != 429 or attempt == self.cfg.max_retries:
                    raise (await self._dead()) or stream_error(e, pod) from e
                await asyncio.sleep(api.retry_delay(e, attempt))
        try:
            code, out, err = await api.run(collect, ws, stdin, time.monotonic() + budget, limit)
        except TimeoutError:
            raise SandboxError(f"exec in {pod} still running after {budget:g}s: stream or kubelet stuck?") from None
        if code is None:  # the stream ended without a status: the Pod (or its node) went away under it
            raise (await self._dead()) or SandboxError(f"exec in {pod} ended without an exit status")
        return code, out, err

    async def exec(self, argv: list[str], timeout: float = 60.0) -> ExecResult:
        timeout = min(timeout, self.cfg.exec_timeout_s)
        start = time.monotonic()
        # The exec API has no timeout: `timeout` enforces it inside the Pod and kills the process group.
        wrapped = ["timeout", "-k", "2", f"{timeout:g}", *argv]
        code, out, err = await self._run(wrapped, None, timeout + _OUTER_SLACK_S, _OUTPUT_LIMIT)
        elapsed = time.monotonic() - start
        timed_out = code == 124 or (code == 137 and elapsed >= timeout)
        if code == 137 and not timed_out:
            if dead := await self._dead():
                raise dead
            err += f"\n[killed by SIGKILL before the timeout: out of memory? limit {self.cfg.memory_mb} MiB]".encode()
        return ExecResult(exit_code=code, stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"),
                          timed_out=timed_out, duration_s=elapsed)  # fmt: skip

    async def reset(self) -> None:
        raise SandboxError("k8s sandboxes are not reused between episodes (no warm pool): nothing resets them")

    async def spawn(self, argv: list[str], *, resident: bool = False) -> K8sPipe:
        """`resident` changes nothing here: a Pod serves one episode, so nothing outlives a reset."""
        from sandboxes.k8s_exec import K8sPipe, open_stream, stream_error

        api = _api()
        pod = self._pod()
        try:
            ws = await api.run(open_stream, api.configuration(self.cfg), self.cfg.namespace, pod, argv, True)
        except api.ApiException as e:
            raise (await self._dead()) or stream_error(e, pod) from e
        pipe = K8sPipe(ws, argv, asyncio.get_running_loop())
        self._pipes.append(pipe)
        return pipe

    # -- files -----------------------------------------------------------------------------
    async def read_file(self, path: str) -> bytes:
        code, out, err = await self._run(["cat", "--", workspace_path(path)], None, 300.0, _FILE_LIMIT)
        if code != 0:
            raise SandboxError(f"cannot read {path!r} in {self.name}: {err.decode(errors='replace').strip()}")
        return out

    async def write_file(self, path: str, data: bytes) -> None:
        # `head -c N` stops after the payload: the v4 exec protocol has no way to send stdin EOF.
        script = 'mkdir -p -- "$(dirname -- "$1")" && head -c "$2" > "$1"'
        cmd = ["sh", "-c", script, "sh", workspace_path(path), str(len(data))]
        code, _, err = await self._run(cmd, data, 300.0, _OUTPUT_LIMIT)
        if code != 0:
            raise SandboxError(f"cannot write {path!r} in {self.name}: {err.decode(errors='replace').strip()}")


async def delete_pod(cfg: K8sConfig, name: str) -> bool:
    """Delete a Pod at once (grace 0); False when it was already gone."""
    api = _api()
    try:
        await api.call(cfg, f"delete {name}", api.core(cfg).delete_namespaced_pod, name, cfg.namespace,
                       grace_period_seconds=0, propagation_policy="Background")
        return True
    except api.ApiException as e:
        if api.status_of(e) == 404:
            return False
        raise


async def _quiet_delete(cfg: K8sConfig, name: str) -> None:
    try:
        await delete_pod(cfg, name)
    except Exception as e:
        log.warning("could not delete Pod %s/%s: %s", cfg.namespace, name, e)


async def delete_pods(cfg: K8sConfig, run: str | None = None, *, run_id: str | None = None) -> int:
    """Delete managed Pods (of one run dir or of every run named `run`, when given) in cfg.namespace; how many."""
    api = _api()
    selector = "synth.managed=1" + (f",synth.run_id={run_id}" if run_id else f",synth.run={run}" if run else "")
    pods = await api.call(cfg, "list pods", api.core(cfg).list_namespaced_pod, cfg.namespace,
                                         label_selector=selector)
    results = await asyncio.gather(*(delete_pod(cfg, p.metadata.name) for p in pods.items), return_exceptions=True)
    for r in results:
        if isinstance(r, Exception):
            log.warning("gc: %s", r)  # the next gc tries again
    return sum(r is True for r in results)
