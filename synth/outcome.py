"""Did a run make anything? The first stage that produced nothing (0 toolsets, 0 trajectories, 0 kept
...) with its top error from errors.jsonl, and how many names the tools stage repaired.

A run that ends with "kept 0 of 0" used to exit 0, so a script (or CI) took an empty dataset for a
result. `synth run` prints what `empty_stage` finds under the summary and exits with
EMPTY_EXIT_CODE unless `--allow-empty` is given.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from synth.core.store import RunStore

EMPTY_EXIT_CODE = 4  # 1 errors, 2 config, 3 budget stop (when llm.budget lands), 130 interrupted

# What each stage makes, in pipeline order: the record kind, and the word for it in the message.
STAGE_OUTPUTS: dict[str, tuple[str, str]] = {
    "tools": ("tools", "toolsets"),
    "agents": ("agents", "agents"),
    "tasks": ("tasks", "tasks"),
    "rollout": ("trajectories", "trajectories"),
    "judge": ("verdicts", "verdicts"),
}


@dataclass(frozen=True)
class EmptyStage:
    stage: str
    made: str  # "0 trajectories", "0 kept of 3 judged"
    cause: str  # the top error of the stage (or top drop reason), with its share

    def message(self) -> str:
        return (f"NOTHING MADE: the {self.stage} stage produced {self.made}; {self.cause}. "
                "Later stages had nothing to work on. Fix the cause (see errors.jsonl), or pass "
                "--allow-empty to accept an empty result.")


def empty_stage(store: RunStore, stages: list[str]) -> EmptyStage | None:
    """The first of `stages` (as run, in order) whose output in the run dir is empty, else None.
    After the judge stage, 0 kept trajectories counts as empty too."""
    errors = store.read("errors")
    for stage in stages:
        if stage not in STAGE_OUTPUTS:
            continue
        kind, word = STAGE_OUTPUTS[stage]
        records = store.read(kind)
        count = len({r.toolset_id or r.id for r in records}) if kind == "tools" else len(records)
        if count == 0:
            return EmptyStage(stage, f"0 {word}", top_error(errors, stage))
        if stage == "judge" and not any(v.keep for v in records):
            reasons = Counter(r for v in records for r in v.reasons)
            (reason, n), = reasons.most_common(1) or [("no reason recorded", 0)]
            return EmptyStage(stage, f"0 kept of {count} judged trajectories",
                              f"top drop reason ({n} of {count}): {reason}")
    return None


def top_error(errors: list, stage: str) -> str:
    """The most common error of `stage` in errors.jsonl, as 'top error (n of m): Type: message'."""
    own = [e for e in errors if e.stage == stage]
    if not own:
        return "no error recorded for it in errors.jsonl (its input was empty, or every reply was unusable)"
    counts = Counter((e.error_type, _head(e.message)) for e in own)
    (error_type, message), n = counts.most_common(1)[0]
    return f"top error ({n} of {len(own)} {stage} errors): {error_type}: {message}"


def repaired_names(store: RunStore) -> int:
    """Identifiers of evolved tools repaired to snake_case (tools/names.py): a toolset's name once per
    toolset (every one of its tools records it), a tool's or parameter's once per tool."""
    return len({(t.toolset_id if r["field"] == "toolset" else t.id, r["field"], r["from"])
                for t in store.read("tools") for r in (t.provenance or {}).get("repaired", [])})


def _head(message: str, limit: int = 200) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
