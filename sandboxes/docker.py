"""The docker backend: one locked-down container per episode, from the locally built image.

The container idles on `sleep infinity` under docker-init; every exec and spawned process joins it, so
files and processes persist for the episode and vanish with the container. exec goes through the SDK
(no CLI start-up per call); spawn uses `docker exec -i`, whose stdio is the pipe MCP speaks over.
A warm pool reuses containers: reset() ends the episode's processes and empties the writable dirs.
The docker SDK is imported on first use (~0.2 s), so `import sandboxes` does not pay for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from sandboxes.base import BackendConfig, ExecResult
from sandboxes.container import WORKSPACE, ContainerIdentity, StartOnce, workspace_path
from sandboxes.pipe import SubprocessPipe
from synth.core.errors import SandboxError

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)


class DockerConfig(BackendConfig):
    """One container per episode from the locally built sandbox image (no registry needed)."""

    type: Literal["docker"] = "docker"
    image: str | None = Field(
        None, description="Image tag; None: the tag of `variant` built by `synth sandboxes build-image`."
    )
    variant: Literal["python", "node", "mcp"] = Field(
        "python", description="The locally built image used when `image` is None: python, node (+ nodejs, npm) or "
        "mcp (+ git and the catalog's reference MCP servers, for real servers in rollouts).")
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


_OUTPUT_LIMIT = 1 << 20  # bytes of stdout/stderr an exec keeps; the rest is drained and dropped
_FILE_LIMIT = 1 << 30  # read_file: whole files (the workspace tmpfs is far smaller anyway)
_OUTER_SLACK_S = 15.0  # beyond the in-container timeout (+2 s kill grace): only a stuck engine gets here
# exec_start blocks a thread for the whole command: the default executor (cpus + 4 threads) would
# serialize concurrent episodes behind a few slow commands.
_POOL = ThreadPoolExecutor(max_workers=128, thread_name_prefix="synth-docker")
_client: docker.DockerClient | None = None
_client_lock = threading.Lock()
_start_slots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> {limit: Semaphore}


def client() -> docker.DockerClient:
    """One shared SDK client (it is thread-safe; a large pool so concurrent execs don't queue)."""
    import docker

    global _client
    with _client_lock:
        if _client is None:
            try:
                c = docker.from_env(timeout=None, max_pool_size=128)  # exec duration is bounded in-container
                c.ping()
            except docker.errors.DockerException as e:
                msg = f"Docker Engine unreachable ({e}); start `dockerd` or point DOCKER_HOST at a running engine"
                raise SandboxError(msg) from e
            _client = c
    return _client


async def _run(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(_POOL, functools.partial(fn, *args))


def _start_slot(limit: int) -> asyncio.Semaphore:
    """Bounds concurrent container starts; one semaphore per event loop (it cannot cross loops)."""
    slots = _start_slots.setdefault(asyncio.get_running_loop(), {})
    return slots.setdefault(limit, asyncio.Semaphore(limit))


def remove_container(ref: str) -> None:
    """Force-remove a container with its anonymous volumes; already gone is fine."""
    import docker.errors

    try:
        client().api.remove_container(ref, force=True, v=True)
    except docker.errors.APIError as e:
        if e.status_code not in (404, 409):  # gone, or a removal is already in progress
            raise

# Writable places a container episode can leave state in (the root filesystem is read-only).
_RESET_DIRS = "/workspace /tmp /home/sandbox /dev/shm /dev/mqueue"
# One exec (`sh -c _RESET sh PID...`): SIGKILL every process but docker-init (pid 1), the container's
# `sleep infinity` (the lowest-numbered child of pid 1: orphans reparent there too, but later), the
# residents given as arguments (the in-container pids of the tool hosts the harness started and still
# holds: nothing a process inside can claim for itself) and this script with its `timeout` wrapper;
# then empty the writable dirs and System V IPC. Builtins only in the loops (dash).
_RESET = r"""
keep=
for d in /proc/[0-9]*; do
  p=${d#/proc/}; pp=
  { while read -r k v rest; do [ "$k" = PPid: ] && { pp=$v; break; }; done < "$d/status"; } 2>/dev/null
  if [ "$pp" = 1 ] && { [ -z "$keep" ] || [ "$p" -lt "$keep" ]; }; then keep=$p; fi
done
[ -n "$keep" ] || { echo "no main process found" >&2; exit 1; }
spare=" $* "
round=0
while :; do
  n=0
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    case " 1 $keep $$ $PPID $spare " in *" $p "*) continue;; esac
    st=
    { while read -r k v rest; do [ "$k" = State: ] && { st=$v; break; }; done < "$d/status"; } 2>/dev/null
    case "$st" in ""|Z) continue;; esac
    kill -9 "$p" 2>/dev/null
    n=$((n + 1))
  done
  [ "$n" = 0 ] && break
  round=$((round + 1))
  [ "$round" -lt 50 ] || { echo "processes survive SIGKILL" >&2; exit 1; }
  sleep 0.02
done
ipcrm -a 2>/dev/null
chmod -R u+rwX DIRS 2>/dev/null
find DIRS -mindepth 1 -delete || exit 1
left=$(find DIRS -mindepth 1 -print -quit)
[ -z "$left" ] || { echo "left behind: $left" >&2; exit 1; }
""".replace("DIRS", _RESET_DIRS)


# `sh -c _KILL_TREE sh PID`: stop PID and every descendant (stopped, none can fork), then SIGKILL them
# all. Descendants first found while PID is alive: once it is dead they would belong to docker-init.
_KILL_TREE = r"""
tree=" $1 "
kill -STOP "$1" 2>/dev/null
grew=1
while [ "$grew" = 1 ]; do
  grew=0
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    case "$tree" in *" $p "*) continue;; esac
    pp=
    { while read -r k v rest; do [ "$k" = PPid: ] && { pp=$v; break; }; done < "$d/status"; } 2>/dev/null
    case "$tree" in *" $pp "*) kill -STOP "$p" 2>/dev/null; tree="$tree$p "; grew=1;; esac
  done
done
for p in $tree; do kill -9 "$p" 2>/dev/null; done
exit 0
"""
# spawn runs `sh -c _ANNOUNCE sh ARGV...`: the first line of stdout is the command's pid in the
# container (then it execs, keeping the pid), so close() and reset() can reach it there.
_ANNOUNCE = 'echo "$$"; exec "$@"'


class DockerPipe(SubprocessPipe):
    """stdin/stdout of `docker exec -i`; stderr is drained into a bounded tail for error messages.
    `pid`: the process's pid inside the container (killing the CLI does not end it)."""

    def __init__(self, proc: asyncio.subprocess.Process, argv: list[str], kill_inside):
        super().__init__(proc, argv)
        self.pid: int | None = None
        self._kill_inside = kill_inside  # pid -> awaitable: SIGKILL it in the container
        self._stderr = bytearray()
        self._drain = asyncio.create_task(self._drain_stderr())

    async def announced(self, timeout: float) -> None:
        """Read the pid line the wrapper writes before the command starts."""
        line = await asyncio.wait_for(self._proc.stdout.readline(), timeout)
        if not line.strip().isdigit():
            raise SandboxError(f"`{' '.join(self._argv)}` did not start in the container: "
                               f"{line[:200]!r} {self.stderr_tail().strip()}")
        self.pid = int(line)

    async def _drain_stderr(self) -> None:
        while chunk := await self._proc.stderr.read(65536):
            self._stderr += chunk
            del self._stderr[: -(1 << 16)]  # keep the tail only

    async def close(self) -> None:
        """EOF ends a well-behaved server; else its process (and what it started) is killed in the container,
        and the CLI.
        Never waits on stdout's EOF: a reader that stopped (a line over its limit) leaves it unread."""
        if self._closed:
            return
        self._closed = True
        if self._proc.returncode is None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
            if not await _exited(self._proc, 2.0):
                if self.pid is not None:
                    with contextlib.suppress(Exception):
                        await self._kill_inside(self.pid)
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
                await _exited(self._proc, 2.0)
        transport = getattr(self._proc, "_transport", None)
        if transport is not None:
            transport.close()  # drop what nobody will read
        await asyncio.wait([self._drain], timeout=1.0)
        if not self._drain.done():
            self._drain.cancel()

    def stderr_tail(self, limit: int = 4000) -> str:
        return self._stderr[-limit:].decode(errors="replace")


async def _exited(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    # Polls returncode: Process.wait() also waits for the pipes' EOF.
    deadline = time.monotonic() + timeout
    while proc.returncode is None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return proc.returncode is not None


class DockerSandbox:
    """The docker backend (see sandboxes/base.py Backend): a container per sandbox."""

    config = DockerConfig
    pools = True

    def __init__(self, cfg: DockerConfig, labels: dict[str, str]):
        self.cfg = cfg
        identity = ContainerIdentity(labels)
        self.id, self.name, self.workspace, self.labels = identity.id, identity.name, identity.workspace, identity.labels
        self._cid: str | None = None
        self._life = StartOnce()
        self._pipes: list[DockerPipe] = []
        self._residents: list[DockerPipe] = []

    @staticmethod
    def remove_leftovers(cfg: DockerConfig, run: str | None = None, *, run_id: str | None = None) -> int:
        """Force-remove managed containers (label synth.managed=1; of one run dir (`run_id`) or of every
        run named `run`, when given)."""
        import docker.errors

        labels = ["synth.managed=1"] + ([f"synth.run_id={run_id}"] if run_id else [f"synth.run={run}"] if run else [])
        removed = 0
        for container in client().api.containers(all=True, filters={"label": labels}):
            try:
                remove_container(container["Id"])
                removed += 1
            except docker.errors.APIError:
                pass  # gone meanwhile, or the engine refused: the next gc tries again
        return removed

    @staticmethod
    def promises(cfg: DockerConfig) -> str:
        return (f"docker (no network, uid {cfg.user.split(':')[0]}, read-only root, {cfg.memory_mb} MiB, "
                f"{cfg.pids_limit} processes)")

    @staticmethod
    def provenance(cfg: DockerConfig) -> tuple[str, str]:
        """The image the episodes ran in: the config's, else the default build tag."""
        try:
            from sandboxes.image.build import image_tag

            return "docker", cfg.image or image_tag(cfg.variant)
        except Exception:  # the image build module is optional at export time; the config still names the tag
            return "docker", cfg.image or ""

    async def start(self) -> None:
        await self._life.start(self.name, self._start)

    async def is_alive(self) -> bool:
        """One engine inspect (this is on a warm pool's acquire path)."""
        if self._cid is None or self._life.stopped:
            return False

        def running() -> bool:
            try:
                return bool(client().api.inspect_container(self.name)["State"].get("Running"))
            except Exception:  # gone, or the engine did not answer: either way not usable now
                return False

        return await asyncio.to_thread(running)

    async def _start(self) -> None:
        from sandboxes.image.build import image_tag

        image = self.cfg.image or image_tag(self.cfg.variant)
        async with _start_slot(self.cfg.start_concurrency):
            self._cid = await _run(self._create, image)

    def _create(self, image: str) -> str:
        import docker.errors

        uid, _, gid = self.cfg.user.partition(":")
        owner, mb = f"uid={uid},gid={gid or uid}", self.cfg.memory_mb
        try:
            container = client().containers.create(
                image, ["sleep", "infinity"], name=self.name, labels=self.labels, user=self.cfg.user,
                working_dir=WORKSPACE, environment=self.cfg.env, network_mode="none", read_only=True,
                tmpfs={
                    WORKSPACE: f"rw,exec,nosuid,nodev,size={self.cfg.workspace_mb}m,{owner},mode=0755",
                    "/home/sandbox": f"rw,nosuid,nodev,size=64m,{owner},mode=0700",
                    "/tmp": "rw,nosuid,nodev,size=64m,mode=1777",
                },
                mem_limit=f"{mb}m", memswap_limit=f"{mb}m", pids_limit=self.cfg.pids_limit,
                nano_cpus=int(self.cfg.cpus * 1e9), init=True, cap_drop=["ALL"],
                security_opt=["no-new-privileges"], detach=True,
            )  # fmt: skip
        except docker.errors.ImageNotFound as e:
            build = "synth sandboxes build-image" + (f" --variant {self.cfg.variant}" if self.cfg.variant != "python" else "")
            msg = f"sandbox image {image} not found: build it with `{build}` (no registry is used)"
            raise SandboxError(msg) from e
        except docker.errors.APIError as e:
            raise SandboxError(f"cannot create container {self.name} from {image}: {e.explanation or e}") from e
        try:
            container.start()
        except docker.errors.APIError as e:
            remove_container(container.id)
            raise SandboxError(f"cannot start container {self.name}: {e.explanation or e}") from e
        return container.id

    async def stop(self) -> None:
        if not await self._life.begin_stop():  # a start in progress finishes first: its container must exist
            return
        try:
            await _run(remove_container, self.name)
        except Exception as e:  # never raise from cleanup; `synth sandboxes gc` finds what is left
            log.warning("could not remove container %s: %s", self.name, e)
        pipes, self._pipes, self._residents = self._pipes + self._residents, [], []
        for pipe in pipes:  # after the removal their processes are gone, so this is quick
            await pipe.close()

    async def reset(self) -> None:
        self._residents = [p for p in self._residents if p.alive and p.pid is not None]
        result = await self.exec(["sh", "-c", _RESET, "sh", *(str(p.pid) for p in self._residents)], timeout=30.0)
        pipes, self._pipes = self._pipes, []
        await asyncio.gather(*(p.close() for p in pipes), return_exceptions=True)  # quick: their processes are dead
        if result.exit_code != 0:
            raise SandboxError(f"reset of sandbox {self.name} failed (exit {result.exit_code}): "
                               f"{result.stderr[-500:].strip()}")

    def _container(self) -> str:
        if self._cid is None or self._life.stopped:
            raise SandboxError(f"sandbox {self.name} is not running (not started, or stopped)")
        return self._cid

    def _dead(self) -> SandboxError | None:
        """A SandboxError describing the container if it is no longer running."""
        import docker.errors

        try:
            state = client().api.inspect_container(self._cid)["State"]
        except docker.errors.NotFound:
            return SandboxError(f"container {self.name} is gone (removed from outside?)")
        if state.get("Running"):
            return None
        return SandboxError(
            f"container {self.name} is not running: status {state.get('Status')}, exit code "
            f"{state.get('ExitCode')}, OOMKilled={state.get('OOMKilled')} {state.get('Error') or ''}".rstrip()
        )

    async def exec(self, argv: list[str], timeout: float = 60.0) -> ExecResult:
        timeout = min(timeout, self.cfg.exec_timeout_s)
        cid = self._container()
        start = time.monotonic()
        # docker exec has no timeout of its own: `timeout` enforces it inside the container and,
        # without --foreground, kills the command's whole process group (forks included).
        wrapped = ["timeout", "-k", "2", f"{timeout:g}", *argv]
        try:
            code, out, err = await asyncio.wait_for(_run(self._exec, cid, wrapped, None), timeout + _OUTER_SLACK_S)
        except asyncio.TimeoutError:
            raise SandboxError(f"exec in {self.name} still running {timeout + _OUTER_SLACK_S:g}s on: engine stuck?")
        elapsed = time.monotonic() - start
        # 124: timeout fired; 137 after the deadline: it fired and the command needed the KILL.
        timed_out = code == 124 or (code == 137 and elapsed >= timeout)
        if code == 137 and not timed_out:
            if dead := await _run(self._dead):
                raise dead
            err += f"\n[killed by SIGKILL before the timeout: out of memory? limit {self.cfg.memory_mb} MB]".encode()
        return ExecResult(
            exit_code=code, stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"),
            timed_out=timed_out, duration_s=elapsed,
        )  # fmt: skip

    def _exec(self, cid: str, cmd: list[str], stdin: bytes | None, limit=_OUTPUT_LIMIT) -> tuple[int, bytes, bytes]:
        """Blocking: run cmd in the container, feeding stdin if given; (exit code, stdout, stderr)."""
        import docker.errors
        import requests
        from docker.utils.socket import consume_socket_output, frames_iter

        api = client().api
        try:
            exec_id = api.exec_create(cid, cmd, user=self.cfg.user, workdir=WORKSPACE, stdin=stdin is not None)["Id"]
            if stdin is None:
                out, err = _capped(api.exec_start(exec_id, stream=True, demux=True), limit)
            else:
                sock = api.exec_start(exec_id, socket=True)
                raw = getattr(sock, "_sock", sock)
                try:
                    raw.sendall(stdin)
                    raw.shutdown(socket.SHUT_WR)  # EOF on the command's stdin
                    out, err = consume_socket_output(frames_iter(sock, tty=False), demux=True)
                finally:
                    sock.close()
            code = api.exec_inspect(exec_id)["ExitCode"]
        except docker.errors.APIError as e:
            raise self._dead() or SandboxError(f"exec in {self.name} failed: {e.explanation or e}") from e
        except (docker.errors.DockerException, requests.RequestException) as e:  # the engine went away
            raise SandboxError(f"exec in {self.name} failed, is `dockerd` still running? {e}") from e
        if code is None:  # the exec never finished: the container died under it
            raise self._dead() or SandboxError(f"exec in {self.name} ended without an exit code")
        return code, out or b"", err or b""

    async def spawn(self, argv: list[str], *, resident: bool = False) -> DockerPipe:
        cid = self._container()  # the container's env (cfg.env included) is inherited by exec'd processes
        proc = await asyncio.create_subprocess_exec(
            "docker", "exec", "-i", "-u", self.cfg.user, "-w", WORKSPACE, cid, "sh", "-c", _ANNOUNCE, "sh", *argv,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            limit=1 << 24,  # readline() limit: one MCP message can be large
        )  # fmt: skip
        pipe = DockerPipe(proc, argv, self._kill_inside)
        (self._residents if resident else self._pipes).append(pipe)  # before the wait: stop() ends it either way
        try:
            await pipe.announced(timeout=min(60.0, self.cfg.exec_timeout_s))
        except BaseException:
            await pipe.close()
            raise
        return pipe

    async def _kill_inside(self, pid: int) -> None:
        """SIGKILL `pid` and everything it started, in the container (its docker exec client dying ends
        none of them)."""
        await self.exec(["sh", "-c", _KILL_TREE, "sh", str(pid)], timeout=10.0)

    async def read_file(self, path: str) -> bytes:
        # Via exec, not get_archive: the archive API does not see tmpfs mounts (tried).
        cmd = ["cat", "--", workspace_path(path)]
        code, out, err = await _run(self._exec, self._container(), cmd, None, _FILE_LIMIT)
        if code != 0:
            raise SandboxError(f"cannot read {path!r} in {self.name}: {err.decode(errors='replace').strip()}")
        return out

    async def write_file(self, path: str, data: bytes) -> None:
        script = 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1"'
        cmd = ["sh", "-c", script, "sh", workspace_path(path)]
        code, _, err = await _run(self._exec, self._container(), cmd, data)
        if code != 0:
            raise SandboxError(f"cannot write {path!r} in {self.name}: {err.decode(errors='replace').strip()}")


def _capped(frames, limit: int) -> tuple[bytes, bytes]:
    """Collect demuxed (stdout, stderr) frames, keeping at most `limit` bytes of each."""
    out, err = bytearray(), bytearray()
    for o, e in frames:
        if o and len(out) < limit:
            out += o[: limit - len(out)]
        if e and len(err) < limit:
            err += e[: limit - len(err)]
    return bytes(out), bytes(err)


def remove_stale_images() -> int:
    """Remove synth-sandbox images other than the current build of each variant (unless in use)."""
    import docker.errors

    from sandboxes.image.build import DEBIAN_PACKAGES, REPO, image_tag

    current = {image_tag(variant) for variant in DEBIAN_PACKAGES}
    removed = 0
    for image in client().images.list(name=REPO):
        if not current & set(image.tags):
            try:
                client().images.remove(image.id)
                removed += 1
            except docker.errors.APIError:
                pass  # a container still uses it
    return removed
