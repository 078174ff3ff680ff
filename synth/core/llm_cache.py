"""Content-addressed LLM response cache: sha256(request body) -> response JSON.

A rerun of a finished run answers every call from here and sends no request. Keys cover only
the request body (model, messages, params, seed), never the endpoint URL or the API key.

Layout: append-only segments, `cache/<segment>.jsonl`, one line per response: `<key>\\t<json>\\n`.
Each process appends to a segment of its own, one write() per response. (One file per response,
the layout before, cost 0.1-0.4 ms of file creation per put: a fifth of the harness's CPU per LLM
call in bench/rollout.py.) The index, key -> (segment, offset, length), is read from every segment
at first use without parsing the JSON. A kill -9 can only tear the last line of a segment, which has
no newline and is skipped. Responses in the older layout (`cache/<xx>/<key>.json`) are still read.
Segments never change once their process ends, so `synth merge` merges them file by file.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

from synth.core.hashing import canonical_json

KEY_LENGTH = 64  # sha256 hex


def request_bytes(body: dict) -> bytes:
    """A request body serialized once (canonical JSON): hashed for the key and sent as the HTTP body."""
    return canonical_json(body).encode()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ResponseCache:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._index: dict[str, tuple[str, int, int]] | None = None  # key -> (segment path, offset, length)
        self._old_layout = False  # set at load: files of the one-file-per-response layout are present
        self._readers: dict[str, int] = {}  # segment path -> fd open for reading
        self._segment: str | None = None  # this process's segment, created at the first put
        self._fd: int | None = None
        self._size = 0

    def key(self, body: dict) -> str:
        return digest(request_bytes(body))

    def path(self, key: str) -> Path:
        """Where the older layout kept a response."""
        return self.root / key[:2] / f"{key}.json"

    def has(self, key: str) -> bool:
        return key in self._loaded() or (self._old_layout and self.path(key).exists())

    def keys(self) -> set[str]:
        """Every cached key (both layouts)."""
        return set(self._loaded()) | {p.stem for p in self.root.glob("*/*.json")}

    def get(self, key: str) -> dict | None:
        where = self._loaded().get(key)
        if where is None:
            return self._get_file(key) if self._old_layout else None
        segment, offset, length = where
        fd = self._readers.get(segment)
        if fd is None:
            fd = self._readers[segment] = os.open(segment, os.O_RDONLY)
        try:
            return json.loads(os.pread(fd, length, offset))
        except ValueError:
            return None  # damaged from outside: a miss, and the fresh response is appended

    def put(self, key: str, response: dict) -> None:
        line = f"{key}\t".encode() + json.dumps(response, ensure_ascii=False).encode() + b"\n"
        if self._fd is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._segment = str(self.root / f"{uuid.uuid4().hex}.jsonl")
            self._fd = os.open(self._segment, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk: leave no half line that a later write would extend
            os.ftruncate(self._fd, self._size)
            raise OSError(f"short write to the response cache {self._segment} ({written} of {len(line)} bytes)")
        self._loaded()[key] = (self._segment, self._size + KEY_LENGTH + 1, len(line) - KEY_LENGTH - 2)
        self._size += len(line)

    def close(self) -> None:
        for fd in [*self._readers.values(), *([self._fd] if self._fd is not None else [])]:
            os.close(fd)
        self._readers, self._fd, self._segment, self._size = {}, None, None, 0

    def _loaded(self) -> dict[str, tuple[str, int, int]]:
        if self._index is None:
            self._index = {}
            for segment in sorted(self.root.glob("*.jsonl")):
                self._index.update(_scan(str(segment)))
            self._old_layout = any(p.is_dir() and len(p.name) == 2 for p in self.root.glob("??"))
        return self._index

    def _get_file(self, key: str) -> dict | None:
        try:
            with open(self.path(key), "rb") as fh:
                return json.loads(fh.read())
        except (FileNotFoundError, ValueError):
            return None


def _scan(segment: str) -> dict[str, tuple[str, int, int]]:
    """key -> (segment, offset, length) of every whole line of one segment."""
    index = {}
    with open(segment, "rb") as fh:
        data = fh.read()
    start = 0
    while (end := data.find(b"\n", start)) != -1:
        if end - start > KEY_LENGTH + 1 and data[start + KEY_LENGTH] == 0x09:  # tab
            index[data[start:start + KEY_LENGTH].decode()] = (segment, start + KEY_LENGTH + 1, end - start - KEY_LENGTH - 1)
        start = end + 1
    return index
