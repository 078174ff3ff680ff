"""Stable content hashes: the ids of records and the keys of caches."""

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content_hash(value: Any, length: int = 16) -> str:
    """Short sha256 of a JSON-able value; equal content gives equal ids across runs and machines."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


def derive_seed(seed: int, *parts: Any) -> int:
    """A 32-bit seed from a run's seed and what it is for: samples differ, reruns repeat."""
    return int(content_hash([seed, *parts], 8), 16)
