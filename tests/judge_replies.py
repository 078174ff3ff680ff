"""Scripted judge replies for tests: the judge prompt lists the criteria in an order shuffled per
sample (judges/judge.py), so a scripted judge answers per criterion text, in the order shown."""

from __future__ import annotations

import re
from typing import Sequence

_CRITERION = re.compile(r"^\d+\. \[\w+\] (.+)$", re.MULTILINE)


def shown_order(prompt: str, texts: Sequence[str]) -> list[int]:
    """The rubric indexes in the order the prompt lists them ("N. [kind] text" lines)."""
    return [list(texts).index(m.group(1)) for m in _CRITERION.finditer(prompt)]


def shown_texts(prompt: str) -> list[str]:
    return [m.group(1) for m in _CRITERION.finditer(prompt)]
