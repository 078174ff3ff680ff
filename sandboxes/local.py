"""The local backend: a per-episode workspace directory; children run under bubblewrap when it works.

Layout: `<root>/synth-<id>-XXXX/ws` is the workspace (bound read-write at the same path inside bwrap,
so paths mean the same inside and out) and `.../logs` holds spawned children's stderr, outside the
sandbox's view. Children never inherit the host's environment (API keys stay out).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
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

from sandboxes.base import BackendConfig, ExecResult
from sandboxes.pipe import SubprocessPipe
from synth.core.errors import SandboxError

log = logging.getLogger(__name__)


class LocalConfig(BackendConfig):
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


_OUTPUT_LIMIT = 1 << 20  # bytes of stdout/stderr an exec keeps; the rest is drained and dropped
_LINE_LIMIT = 1 << 24  # longest line readline() accepts: one MCP message can be large
_GRACE_S = 2.0

# Root in a container keeps every capability inside bwrap unless told otherwise, and with them could
# remount the read-only binds read-write (tested): so a user namespace, no nested ones, no caps.
_BWRAP_FLAGS = [
    "--unshare-user", "--disable-userns", "--cap-drop", "ALL",
    "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", "sandbox",
    "--die-with-parent", "--new-session",
]  # fmt: skip

_probed: dict[tuple[str, ...], str] = {}  # bwrap argv prefix -> "" if it works, else why not


def _bwrap_prefix(bwrap: str, ro_paths: list[str]) -> list[str]:
    """bwrap argv up to the workspace bind: system dirs and the Python install read-only, /tmp a tmpfs."""
    # Mounts apply in order: the fresh /tmp first, so binds below it stay visible.
    args = [bwrap, *_BWRAP_FLAGS, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    args += ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):  # merged-/usr systems: /bin -> usr/bin
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    paths = [sys.base_prefix, sys.prefix, *ro_paths]  # pyenv/venv pythons live outside /usr
    for bound in dict.fromkeys(p for path in paths for p in (os.path.abspath(path), os.path.realpath(path))):
        args += ["--ro-bind", bound, bound]
    return args


async def _probe(prefix: list[str], env: dict[str, str]) -> str:
    """Run `true` under bwrap once per process; "" if it works, else bwrap's complaint."""
    key = tuple(prefix)
    if key not in _probed:
        proc = await asyncio.create_subprocess_exec(*prefix, "--", "true", env=env, stdout=DEVNULL, stderr=PIPE)
        _, err = await proc.communicate()
        _probed[key] = "" if proc.returncode == 0 else err.decode(errors="replace").strip() or f"exit {proc.returncode}"
    return _probed[key]


@functools.cache
def _warn_unisolated(reason: str) -> None:
    msg = (
        f"LocalSandbox: tool processes are NOT isolated ({reason}): they can read and write this "
        "machine's files and reach the network. Install bubblewrap (apt-get install bubblewrap) "
        "or use the docker backend."
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

    def __init__(self, proc: Process, argv: list[str], stderr_path: str):
        super().__init__(proc, argv)
        self._stderr_path = stderr_path

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
        self._prefix: list[str] = []  # argv before the command: prlimit, bwrap
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
        ws = os.path.join(base, "ws")
        os.mkdir(ws)
        os.mkdir(os.path.join(base, "logs"))
        # Outside the workspace, so tools cannot forge it; lets a later run find what a kill -9 left.
        Path(base, "labels.json").write_text(json.dumps(self.labels))
        path = f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin"
        self._env = {"PATH": path, "HOME": ws, "LANG": "C.UTF-8", **self.cfg.env}
        try:
            self._prefix = self._limits() + await self._isolation(ws)
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            raise
        self._dir, self.workspace = base, ws

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

    async def is_alive(self) -> bool:
        return bool(self._dir) and os.path.isdir(self.workspace)

    def _limits(self) -> list[str]:
        limits = [f"--as={self.cfg.memory_mb << 20}"] if self.cfg.memory_mb else []
        limits += [f"--cpu={self.cfg.cpu_s}"] if self.cfg.cpu_s else []
        if not limits:
            return []
        if not (prlimit := shutil.which("prlimit")):
            raise SandboxError("memory_mb/cpu_s need `prlimit` (apt-get install util-linux)")
        return [prlimit, *limits, "--"]

    async def _isolation(self, ws: str) -> list[str]:
        if self.cfg.isolation == "none":
            _warn_unisolated("isolation: none")
            return []
        bwrap = shutil.which("bwrap")
        prefix = _bwrap_prefix(bwrap, self.cfg.ro_paths) if bwrap else []
        why = await _probe(prefix, self._env) if bwrap else "bwrap is not installed"
        if not why:
            self.isolated = True
            return [*prefix, "--bind", ws, ws, "--chdir", ws, "--"]
        if self.cfg.isolation == "bwrap":
            raise SandboxError(f"isolation: bwrap, but bubblewrap fails here ({why}); fix: apt-get install bubblewrap")
        _warn_unisolated(why)
        return []

    async def stop(self) -> None:
        pipes, self._pipes, self._residents = self._pipes + self._residents, [], []
        await self._end(pipes)
        if self._dir:
            base, self._dir = self._dir, None
            await asyncio.to_thread(shutil.rmtree, base, ignore_errors=True)

    async def reset(self) -> None:
        """Each pipe's process group goes with it (with bwrap, its whole pid namespace); residents stay."""
        pipes, self._pipes = self._pipes, []
        self._residents = [p for p in self._residents if p.alive]
        await self._end(pipes)
        self._started()
        await asyncio.to_thread(_empty_dir, self.workspace)

    async def _end(self, pipes: list[ProcessPipe]) -> None:
        await asyncio.gather(*(p.close() for p in pipes), return_exceptions=True)
        for proc in list(self._running):
            _killpg(proc, signal.SIGKILL)
            await _exited(proc, _GRACE_S)  # the exec awaiting it forgets it

    def _started(self) -> str:
        if not self._dir:
            raise SandboxError(f"sandbox {self.id} is not started (or already stopped)")
        return self._dir

    async def _launch(self, argv: list[str], **kw) -> Process:
        return await asyncio.create_subprocess_exec(
            *self._prefix, *argv, cwd=self.workspace, env=self._env, start_new_session=True, limit=_LINE_LIMIT, **kw
        )

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
        proc = await self._launch(argv, stdin=DEVNULL, stdout=PIPE, stderr=PIPE)
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
            proc = await self._launch(argv, stdin=PIPE, stdout=PIPE, stderr=stderr)
        finally:
            os.close(stderr)  # the child keeps its own copy
        pipe = ProcessPipe(proc, argv, stderr_path)
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


def _empty_dir(path: str) -> None:
    """Remove everything inside `path` (symlinks are removed, never followed)."""
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
    if os.listdir(path):
        raise SandboxError(f"reset left files in {path}: {os.listdir(path)[:5]}")


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # O_NOFOLLOW: a symlink swapped in after the check above still cannot redirect the write.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with open(fd, "wb") as f:
        f.write(data)
