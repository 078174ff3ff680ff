"""Words and runs of words, for the detectors that ask whether one text repeats another (the tool
simulator refusing a result that echoes its instructions, the judge's prompt-echo check)."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-case runs of letters and digits; punctuation and case do not hide a repetition."""
    return _WORD.findall(text.lower())


def word_runs(text: str, n: int) -> set[tuple[str, ...]]:
    """Every run of n consecutive words of `text`."""
    found = words(text)
    return {tuple(found[i:i + n]) for i in range(len(found) - n + 1)}
