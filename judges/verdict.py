"""A trajectory's verdict from what judged it: the LLM judge's outcome (judges/judge.py), the checks
(judges/checks.py) and the keep rules (judges/filters.py)."""

from __future__ import annotations

from judges.config import JudgeConfig
from judges.checks import Subject
from judges.filters import judge_reasons
from judges.judge import JudgeOutcome
from judges.reward import reward
from synth.core.records import JudgeSample, Task, Trajectory, Verdict


def verdict(cfg: JudgeConfig, task: Task, trajectory: Trajectory, outcome: JudgeOutcome, checks: dict[str, bool],
            *, unit: str) -> Verdict:
    """Kept when no drop reason remains; every reason is kept on the record. The decision is
    judges/reward.py's, the one the RL environments reward with."""
    decided = reward(cfg, Subject(trajectory, task), checks, outcome)
    return Verdict(unit=unit, trajectory_id=trajectory.id, task_id=task.id, results=outcome.results,
                   checks=checks, score=round(outcome.score, 4), keep=decided.keep, reasons=decided.reasons,
                   samples=judge_samples(cfg, task, outcome))


def judge_samples(cfg: JudgeConfig, task: Task, outcome: JudgeOutcome) -> list[JudgeSample]:
    """Each sample when there are several; none for one, which `results` already is (keeps the record compact)."""
    if len(outcome.samples) < 2:
        return []
    return [JudgeSample(seed=seed, score=round(score, 4), keep=not judge_reasons(cfg, task, results, score),
                        results=results)
            for seed, score, results in zip(outcome.seeds, outcome.scores, outcome.samples, strict=True)]
