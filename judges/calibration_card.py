"""calibration.json as the dataset card's "Judge calibration" section (Markdown), from the JSON alone:
the judge's agreement with the checks (overall, on state-checked tasks, per criterion kind) and
the planted-defect recall table. Empty when the run was never calibrated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _agreement(label: str, a: dict[str, Any] | None) -> str:
    if not a or not a.get("n"):
        return f"| {label} | 0 | - | - | - | - |"
    return (f"| {label} | {a['n']} | {a['accuracy']:.2f} | {a['kappa']:.2f} | {a['precision']:.2f} | "
            f"{a['recall']:.2f} |")


def agreement_table(data: dict[str, Any]) -> str:
    lines = ["| judge keep vs | decisions | accuracy | kappa | precision of keep | recall of keep |",
             "|---|---|---|---|---|---|",
             _agreement("every check", data.get("agreement"))]
    if data.get("state_agreement"):
        lines.append(_agreement(f"state checks ({data.get('state_checked', 0)} trajectories)", data["state_agreement"]))
    for kind, a in (data.get("by_kind") or {}).items():
        lines.append(_agreement(f"{kind} criteria", a))
    return "\n".join(lines)


def planted_table(planted: dict[str, Any]) -> str:
    lines = ["| defect | planted | dropped | a check is built to catch / dropped of those | caught by checks | "
             "by the judge only | top reasons |", "|---|---|---|---|---|---|---|"]
    for kind, k in planted["kinds"].items():
        reasons = ", ".join(f"{r} ({n})" for r, n in sorted(k["reasons"].items(), key=lambda x: -x[1])[:3]) or "-"
        lines.append(f"| {kind} | {k['planted']} | {k['dropped']} | {k['by_check']} / {k['by_check_dropped']} | "
                     f"{k['caught_by_checks']} | {k['caught_by_judge_only']} | {reasons} |")
    u = planted["untouched"]
    reasons = ", ".join(f"{r} ({n})" for r, n in sorted(u["reasons"].items(), key=lambda x: -x[1])[:3]) or "-"
    lines.append(f"| (untouched copies) | {u['judged']} | {u['judged'] - u['kept']} | - | - | - | {reasons} |")
    return "\n".join(lines)


def calibration_markdown(root: Path) -> str:
    path = Path(root) / "calibration.json"
    if not path.is_file():
        return ("Not calibrated: `synth judges calibrate` (agreement with the checks) and `synth judges calibrate "
                "--planted` (recall of planted defects) fill this section.")
    data = json.loads(path.read_text())
    parts = []
    if "agreement" in data:
        parts.append(f"The judge's keep decision against the checks' ({data.get('judged', 0)} trajectories x "
                     f"{data.get('k', 0)} calls, {data.get('mode', '')} mode):\n\n{agreement_table(data)}")
    if planted := data.get("planted"):
        judged = "checks, then the judge" if planted.get("judged") else "checks only (no judge)"
        parts.append(f"Recall of planted defects: copies of {planted['trajectories']} trajectories that pass "
                     f"(source: {planted['source']}), each with one known defect, through the whole filter "
                     f"({judged}):\n\n{planted_table(planted)}")
    return "\n\n".join(parts) or f"calibration.json holds nothing to show: {json.dumps(sorted(data))}"
