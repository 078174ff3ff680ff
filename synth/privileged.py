"""Privileged information for distillation: what the student will not have at test time.

Sources (`export.privileged.include`): the user's hidden facts; reference actions, which are the
task's gold actions when it has them, else the successful calls of the best *other* kept sample of
the same task (never the trajectory's own calls: that hint would be circular for SFT); and the
task's initial state. Formats (`export.privileged.format`, after pi-Distill):
- `tools`: the tool names of the reference actions, in order: `Tools to use: search, book`
- `calls`: the calls with their full arguments: `1. search({"city": "Oslo"}) 2. book({"flight": 7})`
- `compact`: calls with long argument values cut, facts and state shortened (the default)
Each part is one line starting with its label, so a trainer can splice the hint into a prompt or
drop a part; `privileged_source` says where the actions came from (`gold`, `sample:<trajectory id>`
or `none`).
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from judges.checks import successful_calls
from synth.config import PrivilegedConfig
from synth.core.records import Task, Trajectory

COMPACT_VALUE_CHARS = 40
COMPACT_STATE_CHARS = 300


def reference_actions(task: Task, samples: Iterable[Trajectory], scores: dict[str, tuple[bool, float]],
                      exclude: str = "") -> tuple[list[tuple[str, dict[str, Any]]], str]:
    """(calls as (name, arguments), source): gold actions, else the best other kept sample's calls."""
    if task.gold_actions:
        return [(a.tool, _arguments(a.arguments)) for a in task.gold_actions], "gold"
    kept = [t for t in samples if t.id != exclude and scores.get(t.id, (False, 0.0))[0]]
    if not kept:
        return [], "none"
    best = max(kept, key=lambda t: (scores[t.id][1], -t.sample))
    return [(name, _arguments(arguments)) for name, arguments in successful_calls(best)], f"sample:{best.id}"


def privileged_hint(task: Task, samples: Iterable[Trajectory], scores: dict[str, tuple[bool, float]],
                    cfg: PrivilegedConfig, exclude: str = "") -> tuple[str, str]:
    """(hint text, source of its actions) for one SFT row (exclude: its own trajectory) or one RL row."""
    actions, source = reference_actions(task, samples, scores, exclude)
    compact = cfg.format == "compact"
    lines = []
    if "facts" in cfg.include and task.user_facts:
        lines.append("Facts the user knows: " + "; ".join(_cut(f, compact) for f in task.user_facts))
    if "state" in cfg.include and task.initial_state:
        state = json.dumps(task.initial_state, ensure_ascii=False, sort_keys=True)
        lines.append("Initial state: " + (_cut(state, True, COMPACT_STATE_CHARS) if compact else state))
    if "actions" in cfg.include and actions:
        if cfg.format == "tools":
            lines.append("Tools to use: " + ", ".join(name for name, _ in actions))
        else:
            lines.append("Reference actions: " + " ".join(
                f"{n}. {name}({_render_arguments(arguments, compact)})" for n, (name, arguments) in enumerate(actions, 1)))
    if "actions" not in cfg.include:
        source = "none"
    return "\n".join(lines), source if actions else "none"


def _arguments(text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _render_arguments(arguments: dict[str, Any], compact: bool) -> str:
    if not compact:
        return json.dumps(arguments, ensure_ascii=False)
    return ", ".join(f"{k}={_cut(json.dumps(v, ensure_ascii=False), True)}" for k, v in arguments.items())


def _cut(text: str, compact: bool, limit: int = COMPACT_VALUE_CHARS) -> str:
    return text if not compact or len(text) <= limit else text[: limit - 1] + "…"
