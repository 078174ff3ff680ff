"""Prompts live in .md files beside the code that uses them; `$name` placeholders are filled here."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from string import Template


@lru_cache(maxsize=None)
def _template(path: Path) -> Template:
    return Template(path.read_text(encoding="utf-8"))


def render(module_file: str, prompt: str, /, **values: object) -> str:
    """Fill prompts/<prompt>.md next to `module_file` (pass __file__). A missing value is a bug: it raises."""
    path = Path(module_file).parent / "prompts" / f"{prompt}.md"
    return _template(path).substitute({k: str(v) for k, v in values.items()}).strip()
