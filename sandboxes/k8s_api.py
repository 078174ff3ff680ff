"""The Kubernetes API side of the k8s backend: client setup, retries, the Pod manifest, readiness.

The official client is blocking; every call runs in a dedicated thread pool and the retry loop
sleeps on the event loop, so thousands of episodes never park threads in backoff.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable

import urllib3.exceptions
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from sandboxes.container import WORKSPACE
from synth.core.errors import SandboxError

if TYPE_CHECKING:  # sandboxes.k8s imports this module on first use
    from sandboxes.k8s import K8sConfig

log = logging.getLogger(__name__)

CONTAINER = "sandbox"
UID = 1000
# exec streams hold a thread for their whole duration: the default executor would queue episodes.
POOL = ThreadPoolExecutor(max_workers=256, thread_name_prefix="synth-k8s")
_RETRY_STATUS = {429, 500, 502, 503, 504, 0}  # 0: no HTTP answer (connection refused/reset)
_BACKOFF_BASE_S, _BACKOFF_CAP_S, _RETRY_AFTER_CAP_S = 0.2, 10.0, 60.0
# Container waiting reasons that no amount of waiting fixes.
_FATAL_WAITING = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                  "CreateContainerConfigError", "CreateContainerError", "RunContainerError", "CrashLoopBackOff"}

_configs: dict[tuple, k8s.Configuration] = {}
_clients: dict[tuple, k8s.CoreV1Api] = {}
_lock = threading.Lock()


def configuration(cfg: K8sConfig) -> k8s.Configuration:
    """The client Configuration for cfg (kubeconfig or in-cluster), loaded once per process."""
    key = (cfg.kubeconfig, cfg.context, cfg.in_cluster)
    with _lock:
        if key not in _configs:
            conf = k8s.Configuration()
            try:
                if cfg.in_cluster:
                    k8s_config.load_incluster_config(client_configuration=conf)
                else:
                    k8s_config.load_kube_config(config_file=cfg.kubeconfig, context=cfg.context,
                                                client_configuration=conf, persist_config=False)
            except (k8s_config.ConfigException, OSError, TypeError) as e:
                where = "in-cluster service account" if cfg.in_cluster else f"kubeconfig {cfg.kubeconfig or '~/.kube/config'}"
                raise SandboxError(f"cannot load the Kubernetes {where}: {e}; set rollout.sandbox.kubeconfig "
                                   "or in_cluster: true") from e
            conf.connection_pool_maxsize = 128  # one pool shared by all episodes' create/get/delete calls
            _configs[key] = conf
        return _configs[key]


def core(cfg: K8sConfig) -> k8s.CoreV1Api:
    """One shared CoreV1Api per cluster config (thread-safe for plain REST calls)."""
    conf = configuration(cfg)
    key = (cfg.kubeconfig, cfg.context, cfg.in_cluster)
    with _lock:
        if key not in _clients:
            _clients[key] = k8s.CoreV1Api(k8s.ApiClient(conf))
        return _clients[key]


def forget_clients() -> None:
    """Drop cached configs and clients (tests point successive runs at different API servers)."""
    with _lock:
        for api in _clients.values():
            api.api_client.close()
        _clients.clear()
        _configs.clear()


async def run(fn: Callable, *args, **kwargs) -> Any:
    return await asyncio.get_running_loop().run_in_executor(POOL, functools.partial(fn, *args, **kwargs))


def status_of(e: BaseException) -> int:
    """HTTP status of an API error; for a websocket handshake the client wraps it with status 0."""
    if isinstance(e, ApiException):
        if e.status == 0 and (m := re.search(r"Handshake status (\d{3})", str(e.reason))):
            return int(m.group(1))
        return int(e.status or 0)
    return 0


def retry_delay(e: BaseException, attempt: int) -> float:
    """Retry-After when the server sends one (throttling), else exponential backoff; jitter always,
    so a thousand throttled episodes do not come back in lockstep."""
    jitter = random.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt))
    headers = getattr(e, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value is not None:
        try:
            return min(float(value), _RETRY_AFTER_CAP_S) + jitter
        except ValueError:
            if when := email.utils.parsedate_to_datetime(value):
                return min(max(when.timestamp() - time.time(), 0.0), _RETRY_AFTER_CAP_S) + jitter
    return jitter + min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt) / 2


async def call(cfg: K8sConfig, what: str, fn: Callable, *args, **kwargs) -> Any:
    """Run an API call, retrying 429 / 5xx / no answer up to cfg.max_retries times.

    Other ApiExceptions go to the caller, which knows what a 404 or a 409 means for it.
    """
    for attempt in range(cfg.max_retries + 1):
        try:
            return await run(fn, *args, **kwargs)
        except ApiException as e:
            status = status_of(e)
            if status not in _RETRY_STATUS or attempt == cfg.max_retries:
                raise
            delay = retry_delay(e, attempt)
            log.debug("%s: API answered %s, retry %d in %.2fs", what, status or "nothing", attempt + 1, delay)
            await asyncio.sleep(delay)
        except urllib3.exceptions.HTTPError as e:  # refused, reset, timed out: no answer at all
            if attempt == cfg.max_retries:
                host = configuration(cfg).host
                raise SandboxError(f"{what}: Kubernetes API server {host} unreachable ({e})") from e
            await asyncio.sleep(retry_delay(e, attempt))
    raise AssertionError("unreachable")


def explain(e: ApiException) -> str:
    """The API's own message (a Status body) rather than the client's multi-line dump."""
    import json

    try:
        body = json.loads(e.body or "")
        return f"{status_of(e)} {body.get('reason', '')}: {body.get('message', '')}".strip()
    except (ValueError, AttributeError):
        return f"{status_of(e)} {e.reason}"


def pod_manifest(cfg: K8sConfig, name: str, image: str, labels: dict[str, str]) -> dict[str, Any]:
    """The Pod of one episode: the Docker backend's guarantees, in Kubernetes terms.

    No network comes from deploy/k8s/networkpolicy.yaml (deny-all for synth.managed=1); the Pod
    cannot reach the API either, as it mounts no service account token.
    """
    mem = f"{cfg.memory_mb}Mi"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": cfg.namespace, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,  # no env vars naming the namespace's services
            "activeDeadlineSeconds": cfg.active_deadline_s,  # a killed run's Pods die on their own
            "terminationGracePeriodSeconds": 0,  # nothing to flush: the episode's state is read before stop
            **({"serviceAccountName": cfg.service_account} if cfg.service_account else {}),
            "securityContext": {"runAsUser": UID, "runAsGroup": UID, "runAsNonRoot": True, "fsGroup": UID,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": CONTAINER,
                "image": image,
                "imagePullPolicy": cfg.image_pull_policy,
                "command": ["sleep", "infinity"],
                "workingDir": WORKSPACE,
                "env": [{"name": k, "value": v} for k, v in {"HOME": "/home/sandbox", **cfg.env}.items()],
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True, "runAsUser": UID, "privileged": False,
                                    "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {"cpu": f"{cfg.cpus / 4:g}", "memory": mem},
                              "limits": {"cpu": f"{cfg.cpus:g}", "memory": mem}},
                "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE},
                                 {"name": "tmp", "mountPath": "/tmp"},
                                 {"name": "home", "mountPath": "/home/sandbox"}],
            }],
            "volumes": [{"name": "workspace", "emptyDir": {"sizeLimit": f"{cfg.workspace_mb}Mi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                        {"name": "home", "emptyDir": {"sizeLimit": "64Mi"}}],
        },
    }  # fmt: skip


def readiness(pod: k8s.V1Pod) -> tuple[bool, str | None, str]:
    """(ready, fatal error or None, what it is waiting for) from one look at a Pod's status."""
    status = pod.status
    if status is None:
        return False, None, "no status yet"
    waiting = "phase " + str(status.phase)
    for cs in status.container_statuses or []:
        if cs.state and cs.state.running:
            return status.phase == "Running", None, "phase " + str(status.phase)
        if cs.state and cs.state.terminated:
            t = cs.state.terminated
            return False, f"container exited (code {t.exit_code}, {t.reason}): {t.message or ''}".rstrip(": "), ""
        if cs.state and cs.state.waiting:
            w = cs.state.waiting
            if w.reason in _FATAL_WAITING:
                return False, f"{w.reason}: {w.message or 'image ' + str(cs.image)}", ""
            waiting = f"container waiting: {w.reason} {w.message or ''}".rstrip()
    if status.phase in ("Failed", "Succeeded"):
        return False, f"Pod {status.phase}: {status.reason or ''} {status.message or ''}".rstrip(), ""
    for cond in status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False":
            # Not fatal at once: a cluster autoscaler may be adding a node; ready_timeout_s bounds it.
            waiting = f"not scheduled: {cond.reason} {cond.message or ''}".rstrip()
    return False, None, waiting
