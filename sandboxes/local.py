"""The local backend: a per-episode workspace directory; children run under bubblewrap.

Layout: `<root>/synth-<id>-XXXX/ws` is the workspace (bound read-write at the same path inside bwrap,
so paths mean the same inside and out); `tmp/` and `shm/` beside it are the sandbox's /tmp and
/dev/shm; `logs/` holds spawned children's stderr, outside the sandbox's view. What the code sees and
who it runs as: sandboxes/bwrap.py. Children never inherit the host's environment (API keys stay
out), and run with per-process limits (memory, CPU time, processes, file size: prlimit, applied
inside the sandbox after the uid drop, so the process count is the sandbox's own).

`isolation: auto` is bubblewrap or an error that says how to get it: nothing runs unisolated unless
`isolation: none` is chosen, and then loudly. A reset ends every process of the episode: a closed
pipe's bwrap takes its whole pid namespace along; a resident (the tool host) is kept only while it is
alone in its namespace, else it is closed too and the next episode starts a new one.
Then the workspace, /tmp and /dev/shm are emptied.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import uuid
import warnings
from asyncio.subprocess import DEVNULL, PIPE, Process
from contextlib import suppress
from pathlib import Path
from typing import Literal

from pydantic import Field

from sandboxes import bwrap as bwrap_cmd
from sandboxes import seccomp
from sandboxes.base import BackendConfig, ExecResult
from sandboxes.pipe import SubprocessPipe
from synth.core.errors import SandboxError

log = logging.getLogger(__name__)


class LocalConfig(BackendConfig):
    """A per-episode workspace directory on this machine; what runs in it runs under bubblewrap."""

    type: Literal["local"] = "local"
    isolation: Literal["auto", "bwrap", "none"] = Field(
        "auto", description="auto and bwrap: bubblewrap (no network, own pid/ipc/mount namespaces, read-only "
        "system dirs, only what a Python needs of /etc, an unprivileged uid of its own when synth runs as root); "
        "if it cannot run, starting the sandbox fails and says how to fix it (never a silent fallback). "
        "none: a plain subprocess with this machine's files, network and user: only for code you trust; "
        "the run's summary and dataset card say so.")
    root: str | None = Field(None, description="Where workspaces are created (default: a temp dir).")
    memory_mb: int | None = Field(2048, gt=0, description="Address-space limit (RLIMIT_AS) of each process, in MiB "
                                  "(Node.js servers reserve over 1 GiB of it at start); None: unlimited.")
    cpu_s: int | None = Field(
        600, gt=0, description="CPU-time limit (RLIMIT_CPU) of each process, in seconds (a resident tool host accrues "
        "it over its episodes; each episode's own process starts from zero); None: unlimited.")
    max_processes: int | None = Field(
        64, gt=0, description="Processes and threads the sandbox's code may have at once (RLIMIT_NPROC, counted in "
        "the sandbox's own uid or user namespace; bwrap only); None: unlimited.")
    file_mb: int | None = Field(256, gt=0, description="Largest file a process may write (RLIMIT_FSIZE), in MiB; "
                                "None: unlimited.")
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


_OUTPUT_LIMIT = 1 << 20  # bytes of stdout/stderr an exec keeps; the rest is drained and dropped
_LINE_LIMIT = 1 << 24  # longest line readline() accepts: one MCP message can be large
_GRACE_S = 2.0

_probed: dict[tuple, str] = {}  # (bwrap, as root, ro_paths) -> "" if it works, else why not
_UID_BASE, _UID_SPAN = 2_000_000_000, 100_000_000  # as root, each sandbox gets a uid of its own from here


async def _probe(key: tuple, argv: list[str], env: dict[str, str], pass_fds: tuple[int, ...]) -> str:
    """Run `true` under bwrap once per process and key; "" if it works, else bwrap's complaint."""
    if key not in _probed:
        proc = await asyncio.create_subprocess_exec(*argv, "true", env=env, stdout=DEVNULL, stderr=PIPE,
                                                    pass_fds=pass_fds)
        _, err = await proc.communicate()
        _probed[key] = "" if proc.returncode == 0 else err.decode(errors="replace").strip() or f"exit {proc.returncode}"
    return _probed[key]


def _refusal(why: str) -> SandboxError:
    return SandboxError(
        f"the local sandbox needs bubblewrap to isolate tool code, and it cannot run here ({why}). Fix: "
        "apt-get install bubblewrap (a user namespace-capable kernel, or run as root); or use the docker "
        "backend (rollout.sandbox: {type: docker}); or, only for code you trust, set isolation: none "
        "(the code then gets this machine's files, network and user)")


@functools.cache
def _warn_unisolated(reason: str) -> None:
    msg = (
        f"LocalSandbox: tool processes are NOT isolated ({reason}): they can read and write this "
        "machine's files, reach the network and see its processes. For code you did not write yourself, "
        "use isolation: auto (bubblewrap) or the docker backend."
    )
    log.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=4)


def _killpg(proc: Process, sig: int) -> None:
    # Every child leads its own process group; under bwrap, killing the outer bwrap takes the
    # whole pid namespace with it (--die-with-parent on its pid 1).
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def _exited(proc: Process, timeout: float) -> bool:
    # Polls returncode: Process.wait() also waits for pipe EOF, which an escaped grandchild can hold.
    deadline = time.monotonic() + timeout
    while proc.returncode is None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return proc.returncode is not None


async def _drain(stream: asyncio.StreamReader, buf: bytearray) -> None:
    # Fills a caller-owned buffer so a timeout still leaves the partial output.
    while chunk := await stream.read(65536):
        if len(buf) < _OUTPUT_LIMIT:
            buf += chunk[: _OUTPUT_LIMIT - len(buf)]


class ProcessPipe(SubprocessPipe):
    """stdin/stdout of a child; its stderr goes to a file, so the child never blocks on it."""

    def __init__(self, proc: Process, argv: list[str], stderr_path: str, inner_pid: int | None = None):
        super().__init__(proc, argv)
        self._stderr_path = stderr_path
        self.inner_pid = inner_pid  # under bwrap: the pid on this machine of its namespace's pid 1

    async def close(self) -> None:
        """Close stdin and give the child a moment to exit; then SIGTERM, then SIGKILL."""
        if self._closed:
            return
        self._closed = True
        with suppress(OSError):
            self._proc.stdin.close()
        if not await _exited(self._proc, 1.0):
            _killpg(self._proc, signal.SIGTERM)
            if not await _exited(self._proc, _GRACE_S):
                _killpg(self._proc, signal.SIGKILL)
                await _exited(self._proc, _GRACE_S)

    def stderr_tail(self, limit: int = 4000) -> str:
        try:
            with open(self._stderr_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self._stderr_path) - limit))
                return f.read().decode(errors="replace")
        except OSError:
            return ""


class LocalSandbox:
    """The local backend (see sandboxes/base.py Backend): a workspace directory per sandbox."""

    config = LocalConfig
    pools = True

    def __init__(self, cfg: LocalConfig, labels: dict[str, str]):
        self.cfg, self.labels = cfg, dict(labels)
        self.id = f"local-{uuid.uuid4().hex[:12]}"
        self.workspace = ""
        self.isolated = False
        self._dir: str | None = None
        self._layout: bwrap_cmd.Layout | None = None
        self._bwrap = ""  # the bwrap binary when isolated
        self._uid = os.getuid()
        self._env: dict[str, str] = {}
        self._running: set[Process] = set()
        self._pipes: list[ProcessPipe] = []
        self._residents: list[ProcessPipe] = []
        self._spawned = 0

    async def start(self) -> None:
        if self._dir:
            return
        os.makedirs(self.cfg.root or tempfile.gettempdir(), exist_ok=True)
        # The run's tag is in the name, which mkdtemp sets atomically: a kill -9 between creating the
        # directory and writing labels.json (it happened in tests/test_resume.py) still leaves it findable.
        run_tag = _run_tag(self.labels.get("synth.run_id") or self.labels.get("synth.run", ""))
        base = os.path.realpath(tempfile.mkdtemp(prefix=f"synth-{self.id}-{run_tag}-", dir=self.cfg.root))
        layout = bwrap_cmd.Layout(base)
        try:
            for path in (layout.ws, layout.tmp, layout.shm, os.path.join(base, "logs")):
                os.mkdir(path, 0o700)
            # Outside the workspace, so tools cannot forge it; lets a later run find what a kill -9 left.
            Path(base, "labels.json").write_text(json.dumps(self.labels))
            path = f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin"
            self._env = {"PATH": path, "HOME": layout.ws, "LANG": "C.UTF-8", **self.cfg.env}
            self._layout = layout
            if self.cfg.isolation == "none":
                _warn_unisolated("isolation: none")
            else:
                await self._isolate(layout)
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            raise
        self._dir, self.workspace = base, layout.ws

    async def _isolate(self, layout: bwrap_cmd.Layout) -> None:
        """Bubblewrap, or a SandboxError that says how to get it (auto never runs code unisolated)."""
        self._bwrap = shutil.which("bwrap") or ""
        if not self._bwrap:
            raise _refusal("bwrap is not installed")
        if os.geteuid() == 0:  # a uid of the sandbox's own: not root, and no process count shared with others
            self._uid = _UID_BASE + secrets.randbelow(_UID_SPAN)
            for path in (layout.ws, layout.tmp, layout.shm):  # 0755: bwrap enters them without capabilities
                os.chown(path, self._uid, self._uid)
                os.chmod(path, 0o755)
        os.mkdir(layout.etc, 0o755)
        for name, text in bwrap_cmd.etc_files(self._uid, layout.ws).items():
            Path(layout.etc, name).write_text(text)
        if seccomp.supported():
            Path(layout.seccomp).write_bytes(seccomp.program())
        key = (self._bwrap, os.geteuid() == 0, tuple(self.cfg.ro_paths))
        with self._descriptors() as (fds, _):
            if why := await _probe(key, self._prefix(fds), self._env, tuple(fds.values())):
                raise _refusal(why)
        self.isolated = True

    @contextlib.contextmanager
    def _descriptors(self, info: bool = False):
        """The seccomp program (and an info pipe for a resident) as descriptors bwrap inherits:
        ({name: fd}, the read end of the info pipe or None)."""
        fds: dict[str, int] = {}
        reader = None
        try:
            if self.isolated or self._bwrap:
                if os.path.exists(self._layout.seccomp):
                    fds["seccomp"] = os.open(self._layout.seccomp, os.O_RDONLY)
                if info:
                    reader, fds["info"] = os.pipe()
            yield fds, reader
        finally:
            for fd in fds.values():
                os.close(fd)

    def _prefix(self, fds: dict[str, int]) -> list[str]:
        """argv before the command: bwrap and setpriv when isolated, then the limits."""
        outer = bwrap_cmd.argv(self._bwrap, self._layout, self.cfg.ro_paths, self._uid, fds.get("seccomp"),
                               fds.get("info")) if self._bwrap else []
        return [*outer, *self._limits(nproc=bool(outer))]

    @staticmethod
    def remove_leftovers(cfg: LocalConfig, run: str | None = None, *, run_id: str | None = None) -> int:
        """Remove workspaces under cfg.root that a killed process left behind: those of one run dir
        (`run_id`; the caller holds its lock), of every run named `run`, or every one when both are
        None. A workspace is the run's by the tag in its name (the run id's when its labels had one,
        else the run name's), or by its labels.json."""
        key, value = ("synth.run_id", run_id) if run_id is not None else ("synth.run", run)
        removed, tag = 0, f"-{_run_tag(value)}-" if value is not None else ""
        for base in Path(cfg.root or tempfile.gettempdir()).glob("synth-local-*"):
            with suppress(OSError, ValueError):
                if tag in base.name or json.loads((base / "labels.json").read_text()).get(key) == value:
                    shutil.rmtree(base)
                    removed += 1
        return removed

    @staticmethod
    def provenance(cfg: LocalConfig) -> tuple[str, str]:
        return "local", ""

    @staticmethod
    def promises(cfg: LocalConfig) -> str:
        if cfg.isolation == "none":
            return "local, isolation: none: tool code was NOT isolated (it ran with this machine's files, network and user)"
        return "local, bubblewrap (no network; own pid, IPC and mount namespaces; an unprivileged uid; rlimits)"

    async def is_alive(self) -> bool:
        return bool(self._dir) and os.path.isdir(self.workspace)

    def _limits(self, nproc: bool) -> list[str]:
        """prlimit inside the sandbox, after the uid drop (RLIMIT_NPROC counts the sandbox's uid, or
        the user namespace's, only there; as root outside it would not count at all)."""
        cfg = self.cfg
        limits = [f"--as={cfg.memory_mb << 20}"] if cfg.memory_mb else []
        limits += [f"--cpu={cfg.cpu_s}"] if cfg.cpu_s else []
        limits += [f"--fsize={cfg.file_mb << 20}"] if cfg.file_mb else []
        limits += [f"--nproc={cfg.max_processes}"] if cfg.max_processes and nproc else []
        if not limits:
            return []
        if not (prlimit := shutil.which("prlimit")):
            raise SandboxError("memory_mb/cpu_s/max_processes/file_mb need `prlimit` (apt-get install util-linux)")
        return [prlimit, *limits, "--"]

    async def stop(self) -> None:
        pipes, self._pipes, self._residents = self._pipes + self._residents, [], []
        await self._end(pipes)
        if self._dir:
            base, self._dir = self._dir, None
            await asyncio.to_thread(shutil.rmtree, base, ignore_errors=True)

    async def reset(self) -> None:
        """End the episode's processes: each pipe's bwrap takes its pid namespace along; a resident stays
        only while it is alone in its namespace (else it is closed: its next user starts a new one). Then
        empty the workspace, /tmp and /dev/shm. (isolation: none has no namespace to look into.)"""
        pipes, self._pipes = self._pipes, []
        await self._end(pipes)
        self._started()
        layout, isolated = self._layout, self.isolated
        residents = [p for p in self._residents if p.alive]
        await asyncio.gather(*(p.close() for p in self._residents if not p.alive))  # ended on their own
        stubs = bwrap_cmd.tmp_stubs([*bwrap_cmd.python_paths(self.cfg.ro_paths), layout.ws]) if isolated else []

        def empty() -> None:
            _empty_dir(layout.ws)
            _empty_dir(layout.tmp, stubs)
            _empty_dir(layout.shm)

        def look_then_empty() -> list[bool]:  # one thread hop when all is well: this runs after every episode
            alone = [not isolated or _alone(p.inner_pid) for p in residents]
            if all(alone):
                empty()
            return alone

        alone = await asyncio.to_thread(look_then_empty)
        self._residents = [p for p, ok in zip(residents, alone) if ok]
        if not all(alone):  # close the company first, or what it writes meanwhile would stay
            await asyncio.gather(*(p.close() for p, ok in zip(residents, alone) if not ok))
            await asyncio.to_thread(empty)

    async def _end(self, pipes: list[ProcessPipe]) -> None:
        await asyncio.gather(*(p.close() for p in pipes), return_exceptions=True)
        for proc in list(self._running):
            _killpg(proc, signal.SIGKILL)
            await _exited(proc, _GRACE_S)  # the exec awaiting it forgets it

    def _started(self) -> str:
        if not self._dir:
            raise SandboxError(f"sandbox {self.id} is not started (or already stopped)")
        return self._dir

    async def _launch(self, argv: list[str], fds: dict[str, int], **kw) -> Process:
        return await asyncio.create_subprocess_exec(
            *self._prefix(fds), *argv, cwd=self.workspace, env=self._env, start_new_session=True, limit=_LINE_LIMIT,
            pass_fds=tuple(fds.values()), **kw)

    def _missing(self, argv: list[str]) -> str:
        """Why argv[0] cannot run, or "": checked outside, where the bound paths look the same."""
        if not argv:
            return "empty argv"
        exe, path = argv[0], self._env["PATH"]
        found = os.access(os.path.join(self.workspace, exe), os.X_OK) if "/" in exe else shutil.which(exe, path=path)
        return "" if found else f"{exe}: executable not found in the sandbox (PATH={path})"

    async def exec(self, argv: list[str], timeout: float = 60.0) -> ExecResult:
        if self.cfg.exec_timeout_s is not None:
            timeout = min(timeout, self.cfg.exec_timeout_s)
        start = time.monotonic()
        self._started()
        if why := self._missing(argv):
            return ExecResult(exit_code=127, stdout="", stderr=why)
        with self._descriptors() as (fds, _):
            proc = await self._launch(argv, fds, stdin=DEVNULL, stdout=PIPE, stderr=PIPE)
        self._running.add(proc)
        out, err = bytearray(), bytearray()
        timed_out = False
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(_drain(proc.stdout, out), _drain(proc.stderr, err))
                await proc.wait()
        except TimeoutError:
            timed_out = True
        finally:  # also on cancellation: the whole group goes
            if proc.returncode is None:
                _killpg(proc, signal.SIGKILL)
                await _exited(proc, _GRACE_S)
            self._running.discard(proc)
        code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
        return ExecResult(
            exit_code=code if code >= 0 else 128 - code,  # a signal as a shell reports it: SIGKILL -> 137
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
            timed_out=timed_out,
            duration_s=time.monotonic() - start,
        )

    async def spawn(self, argv: list[str], *, resident: bool = False) -> ProcessPipe:
        logs = os.path.join(self._started(), "logs")
        if why := self._missing(argv):
            raise SandboxError(why)
        self._spawned += 1
        stderr_path = os.path.join(logs, f"{self._spawned}-{os.path.basename(argv[0])}.stderr")
        stderr = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with self._descriptors(info=resident) as (fds, info):
                proc = await self._launch(argv, fds, stdin=PIPE, stdout=PIPE, stderr=stderr)
        finally:
            os.close(stderr)  # the child keeps its own copy
        inner = None
        if info is not None:
            try:
                inner = await asyncio.wait_for(asyncio.to_thread(_child_pid, info), 30)
            finally:
                os.close(info)
        pipe = ProcessPipe(proc, argv, stderr_path, inner)
        (self._residents if resident else self._pipes).append(pipe)
        return pipe

    def _resolve(self, path: str) -> str:
        self._started()
        full = os.path.realpath(os.path.join(self.workspace, path))  # an absolute path replaces the join
        if full != self.workspace and not full.startswith(self.workspace + os.sep):
            raise SandboxError(f"path {path!r} resolves to {full!r}, outside the workspace {self.workspace!r}")
        return full

    async def read_file(self, path: str) -> bytes:
        full = self._resolve(path)
        try:
            return await asyncio.to_thread(Path(full).read_bytes)
        except OSError as e:
            raise SandboxError(f"cannot read {path!r} in sandbox {self.id}: {e.strerror}") from e

    async def write_file(self, path: str, data: bytes) -> None:
        full = self._resolve(path)
        try:
            await asyncio.to_thread(_write, full, data)
        except OSError as e:
            raise SandboxError(f"cannot write {path!r} in sandbox {self.id}: {e.strerror}") from e


def _run_tag(run: str) -> str:
    return "run" + hashlib.sha256(run.encode()).hexdigest()[:12]


def _empty_dir(path: str, keep: list[str] = ()) -> None:
    """Remove everything inside `path` but the empty directories `keep` (symlinks are removed, never followed)."""
    for entry in os.scandir(path):
        if entry.name in keep and entry.is_dir(follow_symlinks=False) and not os.listdir(entry.path):
            continue  # a mount point in the sandbox (the way to the workspace), empty on this side
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
    if left := [name for name in os.listdir(path) if name not in keep]:
        raise SandboxError(f"reset left files in {path}: {left[:5]}")


def _child_pid(info_fd: int) -> int | None:
    """bwrap --info-fd: {"child-pid": N, ...}, written once the sandbox's namespaces exist."""
    data = b""
    while chunk := os.read(info_fd, 4096):
        data += chunk
        with suppress(ValueError):
            return int(json.loads(data)["child-pid"])
    return None


def _alone(pid: int | None) -> bool:
    """The sandbox whose pid 1 is `pid` (on this machine) holds nothing but its command: its /proc lists
    no other process."""
    if pid is None:
        return False
    try:
        return len([e for e in os.listdir(f"/proc/{pid}/root/proc") if e.isdigit()]) == bwrap_cmd.own_pids()
    except OSError:
        return False


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # O_NOFOLLOW: a symlink swapped in after the check above still cannot redirect the write.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with open(fd, "wb") as f:
        f.write(data)
