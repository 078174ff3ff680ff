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

    def key(self, body: dict) -> str:
        return digest(canonical_json(body))

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            return json.loads(self.path(key).read_bytes())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            return None  # a torn file from outside our atomic writes: treat as a miss

    def put(self, key: str, response: dict) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Unique temp name + os.replace: concurrent writers and kills never leave a torn file.
        tmp = path.with_name(f".{key}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(json.dumps(response, ensure_ascii=False).encode())
        os.replace(tmp, path)
