"""The difference between a task's initial state and a trajectory's final state, path by path."""

from __future__ import annotations

import re
from typing import Any

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")  # as task assertions write paths: notes.1.title


def state_diff(before: Any, after: Any, limit: int = 400) -> tuple[list[dict[str, Any]], int]:
    """(changes, how many more were left out). A change is {path, op: added|removed|changed, before, after}.

    Dicts are compared key by key and lists index by index (an appended item is `added` at its
    index), so a created record shows as one added path with its whole value."""
    changes: list[dict[str, Any]] = []
    more = [0]

    def emit(path: str, op: str, old: Any = None, new: Any = None) -> None:
        if len(changes) < limit:
            change: dict[str, Any] = {"path": path or "(whole state)", "op": op}
            if op != "added":
                change["before"] = old
            if op != "removed":
                change["after"] = new
            changes.append(change)
        else:
            more[0] += 1

    def walk(path: str, old: Any, new: Any) -> None:
        if isinstance(old, dict) and isinstance(new, dict):
            for key in list(old) + [k for k in new if k not in old]:
                sub = _join(path, key)
                if key not in new:
                    emit(sub, "removed", old[key])
                elif key not in old:
                    emit(sub, "added", new=new[key])
                else:
                    walk(sub, old[key], new[key])
        elif isinstance(old, list) and isinstance(new, list):
            for index in range(max(len(old), len(new))):
                sub = f"{path}[{index}]"
                if index >= len(new):
                    emit(sub, "removed", old[index])
                elif index >= len(old):
                    emit(sub, "added", new=new[index])
                else:
                    walk(sub, old[index], new[index])
        elif old != new or isinstance(old, bool) != isinstance(new, bool):  # 1 == 1.0, but True is not 1
            emit(path, "changed", old, new)

    walk("", before, after)
    return changes, more[0]


def _join(path: str, key: Any) -> str:
    key = str(key)
    if _PLAIN_KEY.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"
