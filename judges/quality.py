"""Data-quality metrics of a finished run: pure functions over its files (bench/quality.py prints them).

Read as raw JSON (one dict per line), so a run written by an older or newer version is measured
without its records having to validate against today's classes. Each metric is a `Metric`: a
value, or "n/a (why)" when the run lacks what it needs; never a made-up 0.

Sections: yield (per stage, top drop reasons), ground truth (kept rows resting on a state check,
do-nothing pass rate), graders (judge vs state check: Cohen's kappa, precision/recall of keep;
re-judge stability; planted-defect recall), user simulator (flag rates over failed episodes),
diversity (near-duplicate tools, distinct tool-call sequences, largest domain share), cost
(requests, tokens and LLM seconds per kept trajectory, by stage; money if the manifest priced it).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from judges.assertions import assertion_failures
from judges.calibration import agreement
from judges.checks import STATE_CHECKS
from judges.filters import CHECK_FAILED, CUT_OFF, reason_kind
from synth.core.records import StateAssertion

NEAR_DUP_JACCARD = 0.8  # as tools/repository.py: name + description token Jaccard
COST_STAGES = ("tools", "implement", "agents", "tasks", "rollout", "judge")


@dataclass(frozen=True)
class Metric:
    section: str
    name: str
    value: float | int | str | None  # None: n/a
    shown: str  # the value as printed: "0.50 (2/4)", "n/a (no verdicts)"


def measured(section: str, name: str, value: float | int, shown: str | None = None) -> Metric:
    return Metric(section, name, value, shown if shown is not None else _fmt(value))


def na(section: str, name: str, why: str) -> Metric:
    return Metric(section, name, None, f"n/a ({why})")


def share(section: str, name: str, part: int, whole: int, why_none: str) -> Metric:
    if whole == 0:
        return na(section, name, why_none)
    return measured(section, name, part / whole, f"{part / whole:.2f} ({part}/{whole})")


# ------------------------------------------------------------------------------------- reading


@dataclass
class RunFiles:
    """What the metrics read: the run dir's JSONL files as dicts, and its manifest."""

    manifest: dict[str, Any]
    tools: list[dict]
    agents: list[dict]
    tasks: list[dict]
    trajectories: list[dict]
    verdicts: list[dict]
    errors: list[dict]
    implementations: list[dict]
    calibration: dict[str, Any] | None = None


def read_run(run_dir: Path | str) -> RunFiles:
    root = Path(run_dir)

    def lines(kind: str) -> list[dict]:
        path = root / f"{kind}.jsonl"
        if not path.is_file():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line of a run being written
        return out

    manifest = json.loads((root / "manifest.json").read_text()) if (root / "manifest.json").is_file() else {}
    calibration = root / "calibration.json"
    return RunFiles(manifest, *(lines(k) for k in ("tools", "agents", "tasks", "trajectories", "verdicts",
                                                    "errors", "implementations")),
                    calibration=json.loads(calibration.read_text()) if calibration.is_file() else None)


# ------------------------------------------------------------------------------------- sections


def yield_metrics(run: RunFiles) -> list[Metric]:
    s = "yield"
    toolsets = {t.get("toolset_id") or t["id"] for t in run.tools}
    passing = {i["toolset_id"] for i in run.implementations if i.get("passed")}
    implemented = {i["toolset_id"] for i in run.implementations}
    gold = [t for t in run.tasks if t.get("gold_actions")]
    kept = sum(bool(v.get("keep")) for v in run.verdicts)
    out = [measured(s, "toolsets", len(toolsets)),
           share(s, "executable share of toolsets", len(passing & toolsets), len(toolsets),
                 "no toolsets") if implemented else na(s, "executable share of toolsets", "implement stage not run"),
           measured(s, "agents", len(run.agents)),
           measured(s, "tasks", len(run.tasks)),
           share(s, "gold tasks valid", sum(bool(t.get("validated")) for t in gold), len(gold), "no gold tasks"),
           measured(s, "trajectories", len(run.trajectories)),
           share(s, "kept of judged", kept, len(run.verdicts), "no verdicts")]
    reasons = Counter(kind for v in run.verdicts for kind in {reason_kind(r) for r in v.get("reasons", [])})
    dropped = len(run.verdicts) - kept
    for i, (kind, n) in enumerate(reasons.most_common(3), 1):
        out.append(measured(s, f"drop reason {i}", n, f"{n}/{dropped} dropped: {kind}"))
    failures = Counter(e.get("stage", "?") for e in run.errors)
    for stage, n in failures.most_common():
        top, top_n = Counter(_head(e) for e in run.errors if e.get("stage") == stage).most_common(1)[0]
        out.append(measured(s, f"failed units: {stage}", n, f"{n} (top, {top_n}x: {top})"))
    return out


def ground_truth_metrics(run: RunFiles) -> list[Metric]:
    s = "ground truth"
    kept = [v for v in run.verdicts if v.get("keep")]
    on_state = sum(any(c in v.get("checks", {}) for c in STATE_CHECKS) for v in kept)
    out = [share(s, "kept rows resting on a state check", on_state, len(kept), "nothing kept")]
    checked = [t for t in run.tasks if t.get("assertions")]
    if not checked:
        out.append(na(s, "do-nothing pass rate (tasks with assertions)", "no task has final-state assertions"))
    else:
        # A conversation that calls nothing ends in the initial state: does it already satisfy the task?
        passes = sum(not assertion_failures(t.get("initial_state") or {},
                                            [StateAssertion.model_validate(a) for a in t["assertions"]])
                     for t in checked)
        out.append(share(s, "do-nothing pass rate (tasks with assertions)", passes, len(checked), ""))
    return out


def judge_keeps(verdict: dict) -> bool:
    """The judge's own decision: no drop reason of its own (checks and the user-stop rule left out)."""
    return not any(not r.startswith(CHECK_FAILED) and r != CUT_OFF for r in verdict.get("reasons", []))


def grader_metrics(run: RunFiles) -> list[Metric]:
    s = "graders"
    pairs = [(judge_keeps(v), all(v["checks"][c] for c in STATE_CHECKS if c in v["checks"]))
             for v in run.verdicts if any(c in v.get("checks", {}) for c in STATE_CHECKS)]
    if pairs:
        a = agreement([j for j, _ in pairs], [c for _, c in pairs])
        out = [measured(s, "judge vs state check: Cohen's kappa", a.kappa, f"{a.kappa:.2f} (n={a.n})"),
               share(s, "judge vs state check: precision of keep", a.tp, a.tp + a.fp, "the judge kept none"),
               share(s, "judge vs state check: recall of keep", a.tp, a.tp + a.fn, "no state check passed")]
    else:
        out = [na(s, f"judge vs state check: {m}", "no verdict has a state check")
               for m in ("Cohen's kappa", "precision of keep", "recall of keep")]
    stored = run.manifest.get("judge_agreement") or {}
    stability = (run.calibration or {}).get("stability") or {}
    if stored.get("keep_identical") is not None:
        out.append(measured(s, "re-judge stability (same keep)", stored["keep_identical"],
                            f"{stored['keep_identical']:.2f} ({stored.get('trajectories')} trajectories, "
                            f"k={stored.get('k')}, judge samples)"))
    elif stability.get("trajectories"):
        out.append(measured(s, "re-judge stability (same keep)", stability["keep_identical"],
                            f"{stability['keep_identical']:.2f} ({stability['trajectories']} trajectories, "
                            f"k={stability.get('k')}, calibration.json)"))
    else:
        out.append(na(s, "re-judge stability (same keep)", "one judge sample, no calibration.json"))
    # `synth judges calibrate --planted` (issue #13) writes calibration.json `planted.kinds`.
    kinds = ((run.calibration or {}).get("planted") or {}).get("kinds") or {}
    planted = run.manifest.get("planted_defects") or {}
    if kinds and (total := sum(k.get("planted", 0) for k in kinds.values())):
        dropped = sum(k.get("dropped", 0) for k in kinds.values())
        out.append(share(s, "planted-defect recall", dropped, total, ""))
    elif isinstance(planted, dict) and planted.get("recall") is not None:
        out.append(measured(s, "planted-defect recall", planted["recall"], f"{planted['recall']:.2f}"))
    else:
        out.append(na(s, "planted-defect recall", "not measured: no calibrate --planted in calibration.json"))
    return out


def user_sim_metrics(run: RunFiles) -> list[Metric]:
    s = "user simulator"
    if not run.trajectories:
        return [na(s, "failed episodes with any flag", "no trajectories")]
    if not all("user_flags" in t for t in run.trajectories):
        return [na(s, "failed episodes with any flag", "not measured: trajectories carry no user_flags")]
    keep = {v["trajectory_id"]: bool(v.get("keep")) for v in run.verdicts}
    failed = [t for t in run.trajectories if keep.get(t["id"]) is False]
    if not failed:
        return [na(s, "failed episodes with any flag", "no failed (judged and dropped) episode")]
    flags = Counter(f for t in failed for f in set(t["user_flags"]))
    out = [share(s, "failed episodes with any flag", sum(bool(t["user_flags"]) for t in failed), len(failed), "")]
    out += [share(s, f"flag: {flag}", n, len(failed), "") for flag, n in sorted(flags.items())]
    return out


def diversity_metrics(run: RunFiles) -> list[Metric]:
    s = "diversity"
    out, name = [], f"near-duplicate tools (token Jaccard >= {NEAR_DUP_JACCARD})"
    if len(run.tools) < 2:
        out.append(na(s, name, "fewer than 2 tools"))
    else:
        tokens = [frozenset(f"{t['name']} {t.get('description', '')}".lower().replace("_", " ").split())
                  for t in run.tools]
        dups = sum(any(_jaccard(tokens[i], tokens[j]) >= NEAR_DUP_JACCARD for j in range(i)) for i in range(len(tokens)))
        out.append(share(s, name, dups, len(run.tools), ""))
    sequences = [tuple(c["name"] for c in t.get("tool_calls", [])) for t in run.trajectories]
    out.append(share(s, "distinct tool-call sequences", len(set(sequences)), len(sequences), "no trajectories"))
    kept_ids = {v["trajectory_id"] for v in run.verdicts if v.get("keep")}
    agents = {a["id"]: a for a in run.agents}
    domains = Counter(agents.get(t["agent_id"], {}).get("domain", "?") for t in run.trajectories if t["id"] in kept_ids)
    if domains:
        domain, n = domains.most_common(1)[0]
        total = sum(domains.values())
        out.append(measured(s, "largest domain share of kept", n / total, f"{n / total:.2f} ({n}/{total}: {domain})"))
    else:
        out.append(na(s, "largest domain share of kept", "nothing kept"))
    return out


def cost_metrics(run: RunFiles) -> list[Metric]:
    s = "cost"
    usage = run.manifest.get("usage") or {}
    kept = sum(bool(v.get("keep")) for v in run.verdicts)
    if not usage:
        return [na(s, "LLM usage", "no usage in the manifest")]
    rows = {stage: row for stage, row in usage.items() if isinstance(row, dict)}
    total = {k: sum(r.get(k, 0) for r in rows.values()) for k in ("requests", "prompt_tokens", "completion_tokens",
                                                                   "seconds", "cached")}
    # Wall seconds per stage (manifest `stages`, summed over invocations) when the run recorded them;
    # else the LLM requests' own seconds, which overlap under concurrency.
    stages = run.manifest.get("stages") or {}
    wall = {st: e["seconds"] for st, e in stages.items() if isinstance(e, dict) and "seconds" in e}
    if not all(st in wall for st in usage if st in stages):
        wall = {}  # some stage's time is unknown: a partial sum would understate the run
    unit = "wall s" if wall else "LLM s"
    seconds = {st: (wall.get(st, 0.0) if wall else rows[st].get("seconds", 0.0)) for st in rows}
    total_s = sum(wall.values()) if wall else total["seconds"]
    out = [measured(s, "LLM requests (sent, all stages)", total["requests"],
                    f"{total['requests']} (+{total['cached']} from cache)"),
           measured(s, "tokens (prompt + completion)", total["prompt_tokens"] + total["completion_tokens"]),
           measured(s, "seconds, all stages", round(total_s, 1),
                    f"{total_s:.1f} {unit}" + ("" if wall else " (no stage wall times recorded)"))]
    if not kept:
        out.append(na(s, "per kept trajectory", "nothing kept"))
    else:
        for stage in [st for st in COST_STAGES if st in rows] + sorted(set(rows) - set(COST_STAGES)):
            r = rows[stage]
            out.append(measured(s, f"per kept trajectory: {stage}", r.get("requests", 0) / kept,
                                f"{r.get('requests', 0) / kept:.1f} req, "
                                f"{(r.get('prompt_tokens', 0) + r.get('completion_tokens', 0)) / kept:.0f} tok, "
                                f"{seconds[stage] / kept:.1f} {unit}"))
        out.append(measured(s, "per kept trajectory: all stages", total["requests"] / kept,
                            f"{total['requests'] / kept:.1f} req, "
                            f"{(total['prompt_tokens'] + total['completion_tokens']) / kept:.0f} tok, "
                            f"{total_s / kept:.1f} {unit}"))
    cost = run.manifest.get("cost") or {}
    if isinstance(cost, dict) and cost.get("total") is not None:
        per = cost.get("per_kept_trajectory")
        out.append(measured(s, "money", cost["total"], f"{cost['total']:.4f}"
                            + (f" ({per:.4f} per kept trajectory)" if per is not None else "")))
    else:
        out.append(na(s, "money", "no llm.prices: the manifest has no cost"))
    return out


SECTIONS = (yield_metrics, ground_truth_metrics, grader_metrics, user_sim_metrics, diversity_metrics, cost_metrics)


def quality_metrics(run: RunFiles) -> list[Metric]:
    return [m for section in SECTIONS for m in section(run)]


def quality_report(run_dir: Path | str) -> dict[str, Any]:
    """quality.json: the run, its model, and every metric (value None when n/a)."""
    run = read_run(run_dir)
    return {"run": Path(run_dir).name, "config_hash": run.manifest.get("config_hash"), "model": _model(Path(run_dir)),
            "metrics": [asdict(m) for m in quality_metrics(run)]}


# ------------------------------------------------------------------------------------- rendering


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"## Data quality: {report['run']} ({report['model']})", "", "| section | metric | value |", "|---|---|---|"]
    lines += [f"| {m['section']} | {m['name']} | {_cell(m['shown'])} |" for m in report["metrics"]]
    return "\n".join(lines) + "\n"


def render_side_by_side(reports: list[dict[str, Any]]) -> str:
    """One markdown table, a column per run (runs of one config on several models, say)."""
    names = list(dict.fromkeys((m["section"], m["name"]) for r in reports for m in r["metrics"]))
    shown = [{(m["section"], m["name"]): m["shown"] for m in r["metrics"]} for r in reports]
    models = [r["model"].removeprefix("embedded ") for r in reports]
    heads = [m if models.count(m) == 1 else f"{m} ({r['run']})" for m, r in zip(models, reports)]
    lines = ["| section | metric | " + " | ".join(_cell(h) for h in heads) + " |",
             "|---|---|" + "---|" * len(reports)]
    lines += [f"| {section} | {name} | " + " | ".join(_cell(s.get((section, name), "-")) for s in shown) + " |"
              for section, name in names]
    return "\n".join(lines) + "\n"


def render_text(report: dict[str, Any]) -> str:
    width = max(len(m["name"]) for m in report["metrics"]) + 2
    lines, section = [f"data quality of {report['run']} ({report['model']})"], None
    for m in report["metrics"]:
        if m["section"] != section:
            section = m["section"]
            lines.append(f"\n{section}")
        lines.append(f"  {m['name']:<{width}}{m['shown']}")
    return "\n".join(lines)


def _model(run_dir: Path) -> str:
    """The model the run used: its endpoint's model name, or the embedded preset, from config.yaml."""
    import yaml

    path = run_dir / "config.yaml"
    cfg = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    llm, embedded = cfg.get("llm") or {}, cfg.get("embedded") or {}
    if llm.get("base_url"):
        return f"endpoint model {llm.get('model', '?')}"
    return f"embedded {embedded.get('model') or embedded.get('model_file') or 'SmolLM2-135M'}"


def _head(error: dict, limit: int = 90) -> str:
    message = (error.get("message") or "").strip()
    line = f"{error.get('error_type', '?')}: {message.splitlines()[0] if message else ''}"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def _fmt(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.2f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
