"""The numbers of the overview: funnel, drop reasons, yields, score histogram, user flags, tool runtime
mix and tool coverage. Plain data (no HTML), computed from the files rather than copied from the
manifest, so the report is true to what is on disk even for a run killed before its manifest was
updated."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from synth.view.joins import Row, Run

CHECK_FAILED = "check failed: "
ESSENTIAL_FAILED = "essential criterion failed"
PITFALL_HAPPENED = "pitfall happened"
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def reason_kind(reason: str) -> str:
    """The countable kind of a drop reason (the judge's filters write stable prefixes): a failed check keeps
    its name; a criterion's text and a score do not split a kind. Unknown reasons count as they are,
    numbers masked, so a reason added later still groups."""
    if reason.startswith(CHECK_FAILED):
        return reason
    for prefix in (ESSENTIAL_FAILED, PITFALL_HAPPENED):
        if reason.startswith(prefix):
            return prefix
    if reason.startswith("score ") and " below threshold " in reason:
        return "score below threshold"
    return _NUMBER.sub("N", reason)[:120]


def reason_kinds(verdict: Row) -> list[str]:
    return list(dict.fromkeys(reason_kind(str(r)) for r in verdict.get("reasons", [])))


@dataclass
class Yield:
    judged: int = 0
    kept: int = 0
    trajectories: int = 0

    @property
    def rate(self) -> float | None:
        return self.kept / self.judged if self.judged else None


@dataclass
class ToolUse:
    name: str
    toolset: str = ""
    domain: str = ""
    kind: str = ""
    in_pool: bool = True
    calls: int = 0
    errors: int = 0
    faults: int = 0

    @property
    def ok(self) -> int:
        return self.calls - self.errors


@dataclass
class Summary:
    funnel: list[tuple[str, int]]
    failed_units: dict[str, int]
    drop_reasons: list[tuple[str, int]]
    dropped: int
    yields: dict[str, dict[str, Yield]]
    score_bins: list[tuple[float, float, int, int]]  # (low, high, kept, dropped)
    user_flags: list[tuple[str, int]]
    trajectories: int
    runtime_mix: dict[str, int]
    runtime_from_traces: bool
    tools: list[ToolUse] = field(default_factory=list)


def summarize(run: Run, bins: int = 10) -> Summary:
    trajectories = run.files["trajectories"]
    verdicts = run.verdicts
    judged = [v for t in trajectories if (v := verdicts.get(t.get("id", ""))) is not None]
    kept = sum(bool(v.get("keep")) for v in judged)
    funnel = [("tools", len(run.files["tools"])), ("agents", len(run.files["agents"])),
              ("tasks", len(run.files["tasks"])), ("trajectories", len(trajectories)),
              ("judged", len(judged)), ("kept", kept)]
    reasons = Counter(kind for v in judged if not v.get("keep") for kind in reason_kinds(v))
    flags = Counter(flag for t in trajectories for flag in dict.fromkeys(map(str, t.get("user_flags", []))))
    mix, from_traces = runtime_mix(run)
    return Summary(
        funnel=funnel,
        failed_units=dict(sorted(Counter(str(e.get("stage", "?")) for e in run.files["errors"]).items())),
        drop_reasons=reasons.most_common(), dropped=len(judged) - kept,
        yields={name: yields(run, key) for name, key in YIELD_KEYS.items()},
        score_bins=score_histogram(judged, bins), user_flags=flags.most_common(), trajectories=len(trajectories),
        runtime_mix=mix, runtime_from_traces=from_traces, tools=tool_coverage(run))


YIELD_KEYS: dict[str, Callable[[Run, Row], list[str]]] = {
    "domain": lambda run, t: [run.domain_of(t) or "(none)"],
    "difficulty": lambda run, t: [str(run.task_of(t).get("difficulty") or "(none)")],
    "strategy": lambda run, t: [str(run.agent_of(t).get("strategy") or "single")],
    "toolset": lambda run, t: run.toolsets_of(run.agent_of(t)) or ["(none)"],
}


def yields(run: Run, key: Callable[[Run, Row], list[str]]) -> dict[str, Yield]:
    """Kept / judged per group; a trajectory of a mixed agent counts in each of its toolsets."""
    groups: dict[str, Yield] = {}
    for trajectory in run.files["trajectories"]:
        verdict = run.verdicts.get(trajectory.get("id", ""))
        for name in key(run, trajectory):
            group = groups.setdefault(name, Yield())
            group.trajectories += 1
            if verdict is not None:
                group.judged += 1
                group.kept += bool(verdict.get("keep"))
    return dict(sorted(groups.items(), key=lambda item: (-item[1].trajectories, item[0])))


def score_histogram(verdicts: list[Row], bins: int) -> list[tuple[float, float, int, int]]:
    kept, dropped = [0] * bins, [0] * bins
    for verdict in verdicts:
        score = verdict.get("score")
        if not isinstance(score, (int, float)):
            continue
        index = min(bins - 1, max(0, int(float(score) * bins)))
        (kept if verdict.get("keep") else dropped)[index] += 1
    return [(i / bins, (i + 1) / bins, kept[i], dropped[i]) for i in range(bins)]


def runtime_mix(run: Run) -> tuple[dict[str, int], bool]:
    """Tool calls per runtime (real / executable / simulated); True when every call's trace said which."""
    mix: Counter[str] = Counter()
    every_traced = True
    for trajectory in run.files["trajectories"]:
        for call in trajectory.get("tool_calls", []):
            runtime, traced = run.call_runtime(trajectory, call)
            mix[runtime] += 1
            every_traced &= traced
    return dict(mix.most_common()), every_traced and bool(mix)


def tool_coverage(run: Run) -> list[ToolUse]:
    """Every pool tool with its calls, errors and injected faults; calls to names no agent was offered
    (an invented tool) are listed too, outside the pool."""
    uses: dict[tuple[str, str], ToolUse] = {}
    for tool in run.files["tools"]:
        key = (tool.get("toolset_id", ""), tool.get("name", ""))
        uses[key] = ToolUse(name=tool.get("name", ""), toolset=tool.get("toolset", ""), domain=tool.get("domain", ""),
                            kind=tool.get("kind", ""))
    for trajectory in run.files["trajectories"]:
        offered = {t.get("name", ""): (t.get("toolset_id", ""), t.get("name", ""))
                   for t in run.agent_tools(run.agent_of(trajectory))}
        for call in trajectory.get("tool_calls", []):
            name = str(call.get("name", ""))
            key = offered.get(name) or ("", name)
            use = uses.get(key)
            if use is None:
                use = uses[key] = ToolUse(name=name, in_pool=False)
            use.calls += 1
            use.errors += bool(call.get("is_error"))
            use.faults += bool(call.get("fault"))
    return sorted(uses.values(), key=lambda u: (not u.in_pool, u.domain, u.toolset, -u.calls, u.name))


def usage_rows(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """LLM usage per stage from manifest.json (requests, tokens, and cost once the manifest carries it)."""
    usage = manifest.get("usage")
    if not isinstance(usage, dict):
        return []
    return [(stage, row) for stage, row in usage.items() if isinstance(row, dict)]
