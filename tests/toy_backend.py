"""A toy sandbox backend, for tests only (never shipped): a directory per sandbox, plain subprocesses.

It shows what a new backend is: one module with its config class and its sandbox class (the
`Backend` of sandboxes/base.py), plus one line in `sandboxes.BACKENDS`, which the tests add with
monkeypatch. tests/test_sandbox_contract.py runs the same contract on it as on local, docker and k8s.
No isolation at all: never point it at anything hostile.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Literal

from pydantic import Field

from sandboxes.base import BackendConfig, ExecResult
from sandboxes.pipe import SubprocessPipe
from synth.core.errors import SandboxError


class ToyConfig(BackendConfig):
    type: Literal["toy"] = "toy"
    root: str = Field(default_factory=tempfile.gettempdir, description="Where sandbox dirs are made.")
    pool_size: int = Field(0, ge=0)


class ToyPipe(SubprocessPipe):
    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        await self._proc.wait()


class ToySandbox:
    config = ToyConfig
    pools = True

    def __init__(self, cfg: ToyConfig, labels: dict[str, str]):
        self.cfg, self.labels = cfg, dict(labels)
        self.id = f"toy-{uuid.uuid4().hex[:12]}"
        self.workspace = ""
        self._pipes: list[ToyPipe] = []
        self._residents: list[ToyPipe] = []

    @staticmethod
    def remove_leftovers(cfg: ToyConfig, run: str | None = None, *, run_id: str | None = None) -> int:
        key, value = ("synth.run_id", run_id) if run_id is not None else ("synth.run", run)
        removed = 0
        for base in Path(cfg.root).glob("toy-*"):
            with suppress(OSError, ValueError):
                if value is None or json.loads((base / "labels.json").read_text()).get(key) == value:
                    shutil.rmtree(base)
                    removed += 1
        return removed

    @staticmethod
    def provenance(cfg: ToyConfig) -> tuple[str, str]:
        return "toy", ""

    @staticmethod
    def promises(cfg: ToyConfig) -> str:
        return "toy (a directory, no isolation)"

    async def start(self) -> None:
        if self.workspace:
            return
        base = Path(self.cfg.root, self.id)
        (base / "ws").mkdir(parents=True)
        (base / "labels.json").write_text(json.dumps(self.labels))
        self.workspace = str((base / "ws").resolve())

    async def stop(self) -> None:
        pipes, self._pipes, self._residents = self._pipes + self._residents, [], []
        for pipe in pipes:
            await pipe.close()
        if self.workspace:
            shutil.rmtree(Path(self.workspace).parent, ignore_errors=True)
            self.workspace = ""

    async def is_alive(self) -> bool:
        return bool(self.workspace) and os.path.isdir(self.workspace)

    async def reset(self) -> None:
        pipes, self._pipes = self._pipes, []
        for pipe in pipes:
            await pipe.close()
        for entry in Path(self._started()).iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()

    def _started(self) -> str:
        if not self.workspace:
            raise SandboxError(f"sandbox {self.id} is not started (or already stopped)")
        return self.workspace

    async def _launch(self, argv: list[str], **kw) -> asyncio.subprocess.Process:
        if not argv or not shutil.which(argv[0]):
            raise FileNotFoundError(argv[0] if argv else "empty argv")
        return await asyncio.create_subprocess_exec(*argv, cwd=self._started(), start_new_session=True,
                                                    env={"PATH": os.environ["PATH"], "HOME": self.workspace}, **kw)

    async def exec(self, argv: list[str], timeout: float = 60.0) -> ExecResult:
        start = time.monotonic()
        try:
            proc = await self._launch(argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                      stderr=asyncio.subprocess.PIPE)
        except FileNotFoundError as e:
            return ExecResult(exit_code=127, stdout="", stderr=f"{e}: not found")
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            return ExecResult(exit_code=137, stdout="", stderr="", timed_out=True, duration_s=time.monotonic() - start)
        return ExecResult(exit_code=proc.returncode, stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"),
                          duration_s=time.monotonic() - start)

    async def spawn(self, argv: list[str], *, resident: bool = False) -> ToyPipe:
        try:
            proc = await self._launch(argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                      stderr=asyncio.subprocess.DEVNULL)
        except FileNotFoundError as e:
            raise SandboxError(f"{e}: not found") from None
        pipe = ToyPipe(proc, argv)
        (self._residents if resident else self._pipes).append(pipe)
        return pipe

    def _resolve(self, path: str) -> str:
        full = os.path.realpath(os.path.join(self._started(), path))
        if full != self.workspace and not full.startswith(self.workspace + os.sep):
            raise SandboxError(f"path {path!r} resolves to {full!r}, outside the workspace")
        return full

    async def read_file(self, path: str) -> bytes:
        try:
            return Path(self._resolve(path)).read_bytes()
        except OSError as e:
            raise SandboxError(f"cannot read {path!r}: {e.strerror}") from e

    async def write_file(self, path: str, data: bytes) -> None:
        full = Path(self._resolve(path))
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(data)
