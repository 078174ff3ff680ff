"""Content-addressed LLM response cache: sha256(request body) -> response JSON, one file each.

A rerun of a finished run answers every call from here and sends no request. Keys cover only
the request body (model, messages, params, seed), never the endpoint URL or the API key.
"""

import hashlib
import json
import os
import uuid
from pathlib import Path

from synth import hashing


def canonical_json(body: dict) -> bytes:
    """The one serialization of a request body: hashed for the key and sent as the HTTP body."""
    return hashing.canonical_json(body).encode()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ResponseCache:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._dirs: set[str] = set()  # subdirectories known to exist: no mkdir syscall per put

    def key(self, body: dict) -> str:
        return digest(canonical_json(body))

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        # os-level calls, not pathlib: this runs on the event loop once per LLM call.
        try:
            with open(f"{self.root}/{key[:2]}/{key}.json", "rb") as fh:
                return json.loads(fh.read())
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # a torn file from outside our atomic writes: treat as a miss

    def put(self, key: str, response: dict) -> None:
        # ~0.1-0.4 ms, nearly all of it the kernel creating the file (measured in bench/llm_client.py).
        folder = f"{self.root}/{key[:2]}"
        if folder not in self._dirs:
            os.makedirs(folder, exist_ok=True)
            self._dirs.add(folder)
        # Unique temp name + os.replace: concurrent writers and kills never leave a torn file.
        tmp = f"{folder}/.{key}.{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, json.dumps(response, ensure_ascii=False).encode())
        finally:
            os.close(fd)
        os.replace(tmp, f"{folder}/{key}.json")
