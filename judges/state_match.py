"""Whole-state comparison with the gold final state, and what may differ ("free" paths).

tau2-bench replays the gold actions and compares whole databases; ours does the same, less what a
correct conversation may legitimately change differently: ids a tool generates, timestamps. The
harness finds those itself, without trusting the task writer: it replays the gold actions twice
with different seeds (judges/gold.py) and every path where the two final states differ is free;
a changed value that reads as the current time is free as well (two replays a millisecond apart
may write the same second).

A free path is dot-separated like an assertion path, with `*` for any one key or list index; a
path ending in `{key}` names a dict whose keys are generated (the two replays stored the same
records under different keys): its records are matched by content, whatever their keys.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

from synth.core.records import StateAssertion

ANY = "*"
KEYS = "{key}"
NOW_WINDOW_S = 3 * 86400  # a changed value this close to the replay's clock is a timestamp


def _join(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _matches(pattern: list[str], path: tuple[str, ...]) -> bool:
    return len(pattern) == len(path) and all(p in (ANY, s) for p, s in zip(pattern, path))


class FreePaths:
    """The parsed free paths of a task: which values to ignore, which dicts have generated keys."""

    def __init__(self, paths: list[str]):
        self.values = [p.split(".") for p in paths if not p.endswith(KEYS)]
        self.keyed = [p.split(".")[:-1] for p in paths if p.endswith(KEYS)]

    def ignores(self, path: tuple[str, ...]) -> bool:
        return any(_matches(p, path) for p in self.values)

    def generated_keys(self, path: tuple[str, ...]) -> bool:
        return any(_matches(p, path) for p in self.keyed)


# ---------------------------------------------------------------- finding free paths


def free_paths_between(first: Any, second: Any) -> list[str]:
    """Where two replays of the same actions (different seeds, different times) differ."""
    found: list[str] = []
    _differences(first, second, (), found)
    return sorted(set(found))


def _differences(a: Any, b: Any, path: tuple[str, ...], found: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            if len(a) != len(b):
                found.append(_join(path))  # not even the same records: the whole value is free
                return
            # Same records under other keys: generated ids. Replays insert in the same order, so the
            # values pair up by position; their own differences are free under any key.
            found.append(_join(path + (KEYS,)))
            for x, y in zip(a.values(), b.values()):
                _differences(x, y, path + (ANY,), found)
            return
        for key in a:
            _differences(a[key], b[key], path + (str(key),), found)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            found.append(_join(path))
            return
        for i, (x, y) in enumerate(zip(a, b)):
            _differences(x, y, path + (str(i),), found)
    elif a != b or type(a) is not type(b):
        found.append(_join(path))


def timestamp_paths(initial: Any, final: Any, free: list[str], now: float | None = None) -> list[str]:
    """Values the replay changed that read as the current time (ISO date-time, epoch seconds or ms)."""
    now = time.time() if now is None else now
    rules = FreePaths(free)
    found: list[str] = []

    def walk(before: Any, after: Any, path: tuple[str, ...]) -> None:
        if rules.ignores(path):
            return
        if isinstance(after, dict):
            keyed = rules.generated_keys(path)
            for key, value in after.items():
                old = None if keyed or not isinstance(before, dict) else before.get(key)
                walk(old, value, path + ((ANY if keyed else str(key)),))
        elif isinstance(after, list):
            for i, value in enumerate(after):
                walk(before[i] if isinstance(before, list) and i < len(before) else None, value, path + (str(i),))
        elif after != before and _reads_as_now(after, now):
            found.append(_join(path))

    walk(initial, final, ())
    return sorted(set(found))


def _reads_as_now(value: Any, now: float) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return any(abs(value / scale - now) < NOW_WINDOW_S for scale in (1, 1000))
    if isinstance(value, str) and len(value) >= 16 and value[:4].isdigit():
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return False
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return abs(moment.timestamp() - now) < NOW_WINDOW_S + 86400  # a naive local time: a day either way
    return False


# ---------------------------------------------------------------- comparing with the gold final state


def state_mismatches(actual: Any, gold: Any, free: list[str], limit: int = 8) -> list[str]:
    """How `actual` differs from `gold` outside the free paths, one line per difference (at most `limit`)."""
    out: list[str] = []
    _compare(actual, gold, (), FreePaths(free), out)
    return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])


def _shown(value: Any) -> str:
    return json.dumps(value, sort_keys=True)[:120]


def _compare(actual: Any, gold: Any, path: tuple[str, ...], rules: FreePaths, out: list[str]) -> None:
    if rules.ignores(path):
        return
    where = _join(path) or "(the state)"
    if isinstance(actual, dict) and isinstance(gold, dict):
        if rules.generated_keys(path):
            _compare_records(actual, gold, path, rules, out)
            return
        for key in gold:
            if key not in actual and not rules.ignores(path + (str(key),)):
                out.append(f"{_join(path + (str(key),))} is missing (gold: {_shown(gold[key])})")
            elif key in actual:
                _compare(actual[key], gold[key], path + (str(key),), rules, out)
        for key in actual:
            if key not in gold and not rules.ignores(path + (str(key),)):
                out.append(f"{_join(path + (str(key),))} is not in the gold state (found: {_shown(actual[key])})")
    elif isinstance(actual, list) and isinstance(gold, list):
        if len(actual) != len(gold):
            out.append(f"{where} has {len(actual)} items, gold has {len(gold)}")
            return
        for i, (a, g) in enumerate(zip(actual, gold)):
            _compare(a, g, path + (str(i),), rules, out)
    elif actual != gold or type(actual) is not type(gold) and not _both_numbers(actual, gold):
        out.append(f"{where} is {_shown(actual)}, gold has {_shown(gold)}")


def _both_numbers(a: Any, b: Any) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))


def _compare_records(actual: dict, gold: dict, path: tuple[str, ...], rules: FreePaths, out: list[str]) -> None:
    """A dict with generated keys: every gold record must match one record of `actual` by content."""
    left = list(actual.values())
    for record in gold.values():
        for i, candidate in enumerate(left):
            trial: list[str] = []
            _compare(candidate, record, path + (ANY,), rules, trial)
            if not trial:
                del left[i]
                break
        else:
            out.append(f"{_join(path)} holds no record matching the gold record {_shown(record)}")
    for record in left:
        out.append(f"{_join(path)} holds a record the gold state does not: {_shown(record)}")


# ---------------------------------------------------------------- assertions from the gold diff


def derive_assertions(initial: dict[str, Any], final: dict[str, Any], free: list[str],
                      limit: int = 8) -> list[StateAssertion]:
    """Assertions that pin down what the gold replay changed (each fails on `initial` and holds on
    `final` by construction): a record or field it added or changed equals its new value, one it
    removed is absent. Free paths and dicts with generated keys are left to the whole-state match."""
    rules, out = FreePaths(free), []

    def walk(before: Any, after: Any, path: tuple[str, ...]) -> None:
        if rules.ignores(path) or rules.generated_keys(path) or len(out) >= limit or before == after:
            return
        if isinstance(before, dict) and isinstance(after, dict):
            for key in after:
                walk(before.get(key, _ABSENT), after[key], path + (str(key),))
            for key in before:
                if key not in after and not rules.ignores(path + (str(key),)):
                    out.append(StateAssertion(path=_join(path + (str(key),)), op="absent"))
        elif path and _no_free_below(rules, path):
            out.append(StateAssertion(path=_join(path), op="equals", value=json.dumps(after, sort_keys=True)))
        elif before is _ABSENT and isinstance(after, dict):
            out.append(StateAssertion(path=_join(path), op="exists"))
            for key, value in after.items():
                walk(_ABSENT, value, path + (str(key),))
        elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
            for i, (x, y) in enumerate(zip(before, after)):
                walk(x, y, path + (str(i),))

    walk(initial, final, ())
    return out[:limit]


_ABSENT = object()


def _no_free_below(rules: FreePaths, path: tuple[str, ...]) -> bool:
    n = len(path)
    return not any(len(p) > n and all(a in (ANY, b) for a, b in zip(p, path)) for p in rules.values + rules.keyed)
