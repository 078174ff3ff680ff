"""The judge stage (`synth judge`): score each trajectory against its task's rubric, run the checks,
keep or drop.

With several judge samples each one is stored on the verdict (results, score, seed, its own keep
decision). Its manifest sections, over every verdict of the run (resumed ones included): the
judge's agreement with itself (`judge_agreement`) and pass@k / pass^k per task (`pass_k`).
"""

from __future__ import annotations

from synth.config import JudgeConfig
from synth.context import Context
from synth.core.units import StageStats, Unit, run_units
from synth.core.records import JudgeSample, Task, Trajectory, Verdict
from judges.calibration import self_agreement
from judges.filters import drop_reasons, judge_reasons
from judges.judge import JudgeOutcome, judge
from judges.metrics import pass_report
from judges.state_check import structural_checks, task_checks


async def run(ctx: Context) -> StageStats:
    tasks = {t.id: t for t in ctx.store.read("tasks")}
    names = {t.id: t.name for t in ctx.store.read("tools")}
    decoys = {a.id: {names[i] for i in a.distractor_tool_ids if i in names} for a in ctx.store.read("agents")}
    units = [Unit(t.id, t) for t in ctx.store.read("trajectories") if t.task_id in tasks]
    cfg = ctx.cfg.judge

    async def work(unit: Unit[Trajectory]) -> list[Verdict]:
        trajectory = unit.payload
        task = tasks[trajectory.task_id]
        outcome = await judge(ctx.llm, cfg, task, trajectory, seed=ctx.seed_for("judge", trajectory.id))
        checks = structural_checks(trajectory) | task_checks(task, trajectory, decoys.get(trajectory.agent_id, set()))
        reasons = drop_reasons(cfg, task, trajectory, outcome.results, checks, outcome.score)
        return [Verdict(unit=unit.id, trajectory_id=trajectory.id, task_id=task.id, results=outcome.results,
                        checks=checks, score=round(outcome.score, 4), keep=not reasons, reasons=reasons,
                        samples=judge_samples(cfg, task, outcome))]

    stats = await run_units(ctx, "judge", "verdicts", units, work, ctx.cfg.concurrency)
    verdicts = ctx.store.read("verdicts")
    stats.manifest["judge_agreement"] = self_agreement(verdicts).model_dump()
    stats.manifest["pass_k"] = pass_report(ctx.store.read("trajectories"), verdicts)
    return stats


def judge_samples(cfg: JudgeConfig, task: Task, outcome: JudgeOutcome) -> list[JudgeSample]:
    """Each sample when there are several; none for one, which `results` already is (keeps the record compact)."""
    if len(outcome.samples) < 2:
        return []
    return [JudgeSample(seed=seed, score=round(score, 4), keep=not judge_reasons(cfg, task, results, score),
                        results=results)
            for seed, score, results in zip(outcome.seeds, outcome.scores, outcome.samples, strict=True)]
