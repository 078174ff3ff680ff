"""Keep rules: the verifiable-check veto, then every essential criterion passes and no pitfall
happened, then the score threshold. Every drop says why.

Reasons are plain strings with stable prefixes, so `reason_kind` can count them by kind in the
funnel without losing the detail (which criterion, which check, which score) in verdicts.jsonl:

- `check failed: <name>`: a check of judges/checks.py failed (a user-simulator check only when
  its flag is in `judge.drop_user_flags`);
- `essential criterion failed: <text>`: the judge found an essential criterion unmet;
- `pitfall happened: <text>`: the judge found a pitfall's mistake in the conversation;
- `score S below threshold T`: the weighted rubric score (or the single-mode score) is below
  `judge.keep_threshold`;
- the cut-off reason, with `judge.require_user_stop`.
"""

from __future__ import annotations

from judges.checks import USER_FLAG_OF
from judges.config import JudgeConfig
from synth.core.records import CriterionResult, Task, Trajectory

CHECK_FAILED = "check failed: "
ESSENTIAL_FAILED = "essential criterion failed: "
PITFALL_HAPPENED = "pitfall happened: "
CUT_OFF = "cut off by max_turns before the user ended the conversation"


def drops(cfg: JudgeConfig, check: str) -> bool:
    """Whether a failed check drops: all do, but a user-simulator check only when its flag is listed."""
    flag = USER_FLAG_OF.get(check)
    return flag is None or flag in cfg.drop_user_flags


def drop_reasons(cfg: JudgeConfig, task: Task, trajectory: Trajectory, results: list[CriterionResult],
                 checks: dict[str, bool], score: float) -> list[str]:
    reasons = [f"{CHECK_FAILED}{name}" for name, ok in checks.items() if not ok and drops(cfg, name)]
    reasons += judge_reasons(cfg, task, results, score)
    if cfg.require_user_stop and not trajectory.user_stopped:
        reasons.append(CUT_OFF)
    return reasons


def judge_reasons(cfg: JudgeConfig, task: Task, results: list[CriterionResult], score: float) -> list[str]:
    """The judge's own drop reasons (essential criteria, pitfalls, threshold): what one judge sample decides alone."""
    reasons = []
    if cfg.mode == "rubric":  # a single holistic score says nothing about one criterion
        passed = {r.index: r.passed for r in results}
        reasons += [f"{ESSENTIAL_FAILED}{c.text}" for i, c in enumerate(task.rubric)
                    if c.kind == "essential" and not passed.get(i)]
        reasons += [f"{PITFALL_HAPPENED}{c.text}" for i, c in enumerate(task.rubric)
                    if c.kind == "pitfall" and passed.get(i)]
    if score < cfg.keep_threshold:
        reasons.append(f"score {score:.2f} below threshold {cfg.keep_threshold:.2f}")
    return reasons


def from_judge(reason: str) -> bool:
    """A reason only the judge gives (an essential criterion, a pitfall, the score), not a check."""
    return reason_kind(reason) in (ESSENTIAL_FAILED.rstrip(": "), PITFALL_HAPPENED.rstrip(": "), "score below threshold")


def reason_kind(reason: str) -> str:
    """The countable kind of a drop reason: the check's name is kept, the criterion's text and score are not."""
    if reason.startswith(CHECK_FAILED):
        return reason
    for prefix in (ESSENTIAL_FAILED, PITFALL_HAPPENED):
        if reason.startswith(prefix):
            return prefix.rstrip(": ")
    if reason.startswith("score ") and " below threshold " in reason:
        return "score below threshold"
    return reason
