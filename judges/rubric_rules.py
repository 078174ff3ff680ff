"""What a valid rubric is (Rubrics-as-Rewards, arXiv 2507.17746): enough items for the task's
difficulty, at least one essential and one pitfall, each item self-contained and checkable on its
own, weights that follow the kind table. The tasks stage's rubric step (synth/stages/rubrics.py)
records the problems on the task (`Task.rubric_problems`); a rubric with any is rejected.

Each problem is one line that names the rule and the item, so a reader (or a drop reason) can say
what was wrong without the rubric at hand. The heuristics are deliberately plain:
- checkable: the item names who or what it checks (the assistant, the user, a tool, the state or
  one of its collections, or a value from the task) and is at least four words;
- self-contained: it does not lean on another item ("as above", "the previous criterion", "item 3");
- distinct: no two items say the same (token Jaccard >= 0.8);
- written, not copied: an item sharing a run of words with the rubric prompt's own literal text
  (`prompt_runs`, judges/text_checks.py template_shingles) restates the instructions or copies
  their example. Small models do both (Qwen2.5-Coder-1.5B wrote the example's "cancels booking
  B-1001 with cancel_booking" into a rubric for a star catalogue).
"""

from __future__ import annotations

import re
from typing import Iterable

from judges.text_checks import echoed
from synth.core.records import Criterion

KINDS = ("essential", "important", "optional", "pitfall")
ACTORS = frozenset("assistant agent user tool tools state record records call calls".split())
_CROSS_REFERENCE = re.compile(
    r"\b(as (above|before|below|stated)|(the )?(previous|preceding|following|above|next|other) (item|criteri\w*|point|rule)"
    r"|same as|see (item|criteri\w*)|(item|criterion|point) #?\d+)\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9_]+")
MIN_WORDS = 4
SAME_ITEM_JACCARD = 0.8


def weight_problems(rubric: list[Criterion], weights: dict[str, float]) -> list[str]:
    return [f"item {n} ({c.kind}) has weight {c.weight:g}, the kind table gives {weights[c.kind]:g}"
            for n, c in enumerate(rubric, 1) if c.kind in weights and c.weight != weights[c.kind]]


def rubric_problems(rubric: list[Criterion], *, expected: int, anchors: Iterable[str] = (),
                    weights: dict[str, float] | None = None,
                    prompt_runs: frozenset[tuple[str, ...]] = frozenset(),
                    exempt_runs: frozenset[tuple[str, ...]] = frozenset()) -> list[str]:
    """Why `rubric` is not a valid rubric, or [] when it is. `expected`: the item count for the
    task's difficulty; `anchors`: names an item may check (tool names, state collections, values
    of the task's facts); `prompt_runs`: the writer's prompt's literal word runs, which an item
    must not repeat unless they are also in `exempt_runs` (the task's own text)."""
    problems = []
    if len(rubric) != expected:
        problems.append(f"rubric has {len(rubric)} items, expected {expected} for this difficulty")
    kinds = {c.kind for c in rubric}
    if "essential" not in kinds:
        problems.append("rubric has no essential item")
    if "pitfall" not in kinds:
        problems.append("rubric has no pitfall item")
    names = {a.lower() for a in anchors if a}
    parts = {w for a in names for w in _WORD.findall(a) if len(w) > 3}
    for n, c in enumerate(rubric, 1):
        problems += [f"item {n} {p}: {c.text[:80]!r}" for p in item_problems(c.text, names, parts)]
        if prompt_runs and (runs := echoed(c.text, prompt_runs, set(exempt_runs))):
            problems.append(f"item {n} copies the instructions instead of checking this task ({runs[0]!r}): "
                            f"{c.text[:80]!r}")
    seen: list[tuple[int, set[str]]] = []
    for n, c in enumerate(rubric, 1):
        tokens = set(_WORD.findall(c.text.lower()))
        for m, other in seen:
            if tokens and len(tokens & other) / len(tokens | other) >= SAME_ITEM_JACCARD:
                problems.append(f"items {m} and {n} say the same thing")
                break
        seen.append((n, tokens))
    if weights is not None:
        problems += weight_problems(rubric, weights)
    return problems


def item_problems(text: str, anchors: set[str], anchor_words: set[str]) -> list[str]:
    lowered = text.lower()
    words = _WORD.findall(lowered)
    problems = []
    if len(words) < MIN_WORDS:
        problems.append(f"is not checkable: fewer than {MIN_WORDS} words")
    elif not (ACTORS & set(words) or any(a in lowered for a in anchors) or anchor_words & set(words)):
        problems.append("is not checkable: it names no actor (the assistant, the user, a tool, the state) "
                        "and no tool, record or value of the task")
    if _CROSS_REFERENCE.search(text):
        problems.append("is not self-contained: it refers to another item")
    return problems
