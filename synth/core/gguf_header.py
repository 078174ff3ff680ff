"""Read the metadata of a GGUF file's header (the key/value section before the tensors).

Enough of the format to check what a file claims to be (`general.name`, `general.architecture`)
and to read its chat template, without loading the model or depending on a GGUF package. Arrays
(the tokenizer's vocabulary: 150k strings) are skipped and reported by length only.
Format: magic "GGUF", u32 version, u64 tensor count, u64 key/value count, then per key a
length-prefixed UTF-8 string, a u32 value type and the value; little-endian throughout.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_MAX_STRING = 16 << 20  # a chat template is a few kB; a bigger length means a corrupt header


class GGUFError(ValueError):
    """The file is not a GGUF file, or its header is cut off or corrupt."""


class ArrayInfo(NamedTuple):
    """An array value, skipped: its element type and length."""

    kind: int
    length: int


def _read(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise GGUFError("the header ends early (truncated file?)")
    return struct.unpack("<" + fmt, data)[0]


def _string(f: BinaryIO) -> str:
    n = _read(f, "Q")
    if n > _MAX_STRING:
        raise GGUFError(f"a string of {n} bytes in the header (corrupt file?)")
    data = f.read(n)
    if len(data) != n:
        raise GGUFError("the header ends early (truncated file?)")
    return data.decode("utf-8", errors="replace")


def _skip(f: BinaryIO, kind: int, count: int) -> None:
    if kind == _STRING:
        for _ in range(count):
            f.seek(_read(f, "Q"), 1)
    elif kind in _SCALARS:
        f.seek(struct.calcsize("<" + _SCALARS[kind]) * count, 1)
    else:
        raise GGUFError(f"array of unknown type {kind} in the header")


def _value(f: BinaryIO, kind: int) -> Any:
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item, count = _read(f, "I"), _read(f, "Q")
        _skip(f, item, count)
        return ArrayInfo(item, count)
    if kind in _SCALARS:
        return _read(f, _SCALARS[kind])
    raise GGUFError(f"value of unknown type {kind} in the header")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The header's key/value pairs (arrays as ArrayInfo), plus `gguf.version` and `gguf.tensor_count`."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFError(f"{path} is not a GGUF file (no GGUF magic at the start)")
        meta: dict[str, Any] = {"gguf.version": _read(f, "I"), "gguf.tensor_count": _read(f, "Q")}
        for _ in range(_read(f, "Q")):
            key = _string(f)
            meta[key] = _value(f, _read(f, "I"))
    return meta
