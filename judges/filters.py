"""Keep rules: essential criteria, a score threshold and a verifiable-check veto. Every drop says why."""

from __future__ import annotations

from synth.config import JudgeConfig
from synth.records import CriterionResult, Task, Trajectory


def drop_reasons(cfg: JudgeConfig, task: Task, trajectory: Trajectory, results: list[CriterionResult],
                 checks: dict[str, bool], score: float) -> list[str]:
    reasons = [f"check failed: {name}" for name, ok in checks.items() if not ok]
    passed = {r.index: r.passed for r in results}
    reasons += [f"essential criterion failed: {c.text}" for i, c in enumerate(task.rubric)
                if c.kind == "essential" and not passed.get(i)]
    if score < cfg.keep_threshold:
        reasons.append(f"score {score:.2f} below threshold {cfg.keep_threshold:.2f}")
    if cfg.require_user_stop and not trajectory.user_stopped:
        reasons.append("cut off by max_turns before the user ended the conversation")
    return reasons
