"""Keep rules: essential criteria, a score threshold and a verifiable-check veto. Every drop says why.

Reasons are plain strings with stable prefixes, so `reason_kind` can count them by kind in the
funnel without losing the detail (which criterion, which check, which score) in verdicts.jsonl.
"""

from __future__ import annotations

from judges.config import JudgeConfig
from synth.core.records import CriterionResult, Task, Trajectory

CHECK_FAILED = "check failed: "
ESSENTIAL_FAILED = "essential criterion failed: "
CUT_OFF = "cut off by max_turns before the user ended the conversation"


def drop_reasons(cfg: JudgeConfig, task: Task, trajectory: Trajectory, results: list[CriterionResult],
                 checks: dict[str, bool], score: float) -> list[str]:
    reasons = [f"{CHECK_FAILED}{name}" for name, ok in checks.items() if not ok]
    reasons += judge_reasons(cfg, task, results, score)
    if cfg.require_user_stop and not trajectory.user_stopped:
        reasons.append(CUT_OFF)
    return reasons


def judge_reasons(cfg: JudgeConfig, task: Task, results: list[CriterionResult], score: float) -> list[str]:
    """The judge's own drop reasons (essential criteria, threshold): what one judge sample decides alone."""
    reasons = []
    if cfg.mode == "rubric":  # a single holistic score says nothing about one criterion
        passed = {r.index: r.passed for r in results}
        reasons += [f"{ESSENTIAL_FAILED}{c.text}" for i, c in enumerate(task.rubric)
                    if c.kind == "essential" and not passed.get(i)]
    if score < cfg.keep_threshold:
        reasons.append(f"score {score:.2f} below threshold {cfg.keep_threshold:.2f}")
    return reasons


def reason_kind(reason: str) -> str:
    """The countable kind of a drop reason: the check's name is kept, the criterion's text and score are not."""
    if reason.startswith(CHECK_FAILED):
        return reason
    if reason.startswith(ESSENTIAL_FAILED):
        return ESSENTIAL_FAILED.rstrip(": ")
    if reason.startswith("score ") and " below threshold " in reason:
        return "score below threshold"
    return reason
