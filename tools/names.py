"""Identifiers a model wrote (tool, parameter and toolset names) made to fit `^[a-z][a-z0-9_]...$`.

A weak model writes "Check Please", "getUser" or "list-orders" where a snake_case name is asked
for; dropping its whole toolset for that hides usable output. `snake_case` repairs a name when
the repair is unambiguous (the words are kept, only case and separators change) and returns None
when it is not (nothing left, no leading letter, out of the length bounds). A collision between two
repaired names is the caller's to detect: only it knows the names' siblings.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Word boundaries inside camelCase / PascalCase: "getUser" -> get|User, "HTTPServer" -> HTTP|Server.
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class NameRule:
    """The pattern `^[a-z][a-z0-9_]{lo,hi}$` as bounds on the whole name's length."""

    min_len: int
    max_len: int

    @property
    def pattern(self) -> str:
        return rf"^[a-z][a-z0-9_]{{{self.min_len - 1},{self.max_len - 1}}}$"

    def fits(self, name: str) -> bool:
        return re.fullmatch(self.pattern, name) is not None


TOOL_NAME = NameRule(3, 41)
PARAMETER_NAME = NameRule(1, 31)


def snake_case(name: str, rule: NameRule) -> str | None:
    """`name` in snake_case fitting `rule`, or None when that cannot be done without guessing."""
    if rule.fits(name):
        return name
    ascii_text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    words = _SEPARATORS.split(_CAMEL.sub("_", ascii_text.strip()).lower())
    candidate = "_".join(w for w in words if w)
    return candidate if rule.fits(candidate) else None


@dataclass(frozen=True)
class Repair:
    """One identifier changed to fit its pattern: where (`field`, e.g. "tool" or "parameter"), from, to."""

    field: str
    original: str
    repaired: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "from": self.original, "to": self.repaired}
