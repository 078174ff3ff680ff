"""The run directory: append-only JSONL per record kind, errors.jsonl, manifest.json, config.yaml.

Records of one unit of work are appended with a single write and flushed, so a SIGKILL leaves at
most one torn last line, which the next open trims. A unit with records is done; resume skips it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, TypeVar

from pydantic import BaseModel, ConfigDict

from synth.core.errors import ConfigError, Failure
from synth.core.records import RECORD_FILES, ErrorRecord, Record

R = TypeVar("R", bound=Record)
M = TypeVar("M", bound=BaseModel)


class _Keys(BaseModel):
    """What resume needs of a record, parsed without the rest: 7x faster than whole trajectories
    (20k of them, 137 MB: 0.28 s against 2.0 s), and it keeps only the ids in memory."""

    model_config = ConfigDict(extra="ignore")
    id: str = ""
    unit: str = ""


class RunStore:
    def __init__(self, root: Path, *, shared: bool = False):
        """`shared`: the view of a rollout worker process (synth/workers.py). Its parent holds the
        lock and handed it units not done yet, and other workers append to the same files at the
        same time: so it neither reads what it appends to (done_units is empty, appends are not
        deduplicated against the file) nor trims a tail another worker may be writing."""
        self.root = Path(root)
        self.shared = shared
        self._lock_fd: int | None = None
        self._ids: dict[str, set[str]] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def open(self, config_yaml: str, config_hash: str) -> None:
        """Create or reopen the run dir; refuse one made with a different config."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._check_and_record(config_yaml, config_hash)
        except BaseException:
            self.close()
            raise

    def _check_and_record(self, config_yaml: str, config_hash: str) -> None:
        manifest = self.manifest()
        previous = manifest.get("config_hash")
        if previous and previous != config_hash:
            raise ConfigError(
                f"{self.root} was made with a different config (hash {previous}, now {config_hash}); "
                "resume it with its own config.yaml, or give this run a new name (--name)"
            )
        (self.root / "config.yaml").write_text(config_yaml)
        manifest.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        manifest["config_hash"] = config_hash
        self.write_manifest(manifest)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _lock(self) -> None:
        fd = os.open(self.root / ".lock", os.O_CREAT | os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"another synth process is using {self.root}; wait for it or use another --name") from None
        self._lock_fd = fd

    # -- records ---------------------------------------------------------------------------
    def path(self, kind: str) -> Path:
        return self.root / f"{kind}.jsonl"

    def read(self, kind: str, model: type[R] | None = None) -> list[R]:
        return self._parse(kind, model or RECORD_FILES[kind])  # type: ignore[arg-type]

    def done_units(self, kind: str) -> set[str]:
        return set() if self.shared else {k.unit for k in self._parse(kind, _Keys)}

    def _parse(self, kind: str, model: type[M]) -> list[M]:
        path = self.path(kind)
        if not path.exists():
            return []
        self._trim_torn_tail(path)
        records = []
        with path.open("rb") as fh:
            for lineno, line in enumerate(fh, 1):
                try:
                    records.append(model.model_validate_json(line))
                except ValueError as exc:
                    name = RECORD_FILES[kind].__name__
                    raise ConfigError(f"{path}:{lineno} is not a valid {name} record ({exc}); "
                                      "move the file away to redo that stage") from None
        return records

    def forget(self, kind: str) -> None:
        """Drop what this store remembers of `kind`'s ids: other processes appended to it."""
        self._ids.pop(kind, None)

    def append(self, kind: str, records: Iterable[Record]) -> int:
        """Append records not already present (by id) in one write; returns how many were new."""
        ids = self._known_ids(kind)
        fresh = [r for r in records if r.id not in ids]
        if not fresh:
            return 0
        blob = "".join(r.model_dump_json(by_alias=True) + "\n" for r in fresh).encode()
        fd = os.open(self.path(kind), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            # One write() reaches the kernel whole, so a killed process never loses a finished
            # unit. No fsync: a power cut may lose the tail, and resume redoes those units.
            os.write(fd, blob)
        finally:
            os.close(fd)
        ids.update(r.id for r in fresh)
        return len(fresh)

    def error(self, stage: str, unit: str, exc: BaseException, raw: str = "") -> ErrorRecord:
        """Record `exc` (a Rejected item, a failed call) as a failure of `unit`."""
        return self.failure(stage, unit, Failure.of(exc, raw))

    def failure(self, stage: str, unit: str, failure: Failure) -> ErrorRecord:
        record = ErrorRecord(unit=unit, stage=stage, error_type=failure.error_type, message=failure.message,
                             raw=failure.raw)
        self.append("errors", [record])
        return record

    def _known_ids(self, kind: str) -> set[str]:
        if kind not in self._ids:
            self._ids[kind] = set() if self.shared else {k.id for k in self._parse(kind, _Keys)}
        return self._ids[kind]

    @staticmethod
    def _trim_torn_tail(path: Path) -> None:
        # A line without its newline was cut by a kill mid-write: drop it, its unit is redone.
        with path.open("rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if size == 0:
                return
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            fh.seek(0)
            data = fh.read()
            fh.truncate(data.rfind(b"\n") + 1)

    # -- manifest --------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        path = self.root / "manifest.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        path = self.root / "manifest.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)

    def update_manifest(self, **sections: Any) -> dict[str, Any]:
        manifest = self.manifest()
        manifest.update(sections)
        self.write_manifest(manifest)
        return manifest
