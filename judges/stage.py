"""The judge stage: score each trajectory against its task's rubric, run the checks, keep or drop."""

from __future__ import annotations

from synth.pipeline import Context, StageStats, Unit, run_units
from synth.records import Trajectory, Verdict
from judges.filters import drop_reasons
from judges.judge import judge
from judges.state_check import structural_checks, task_checks


async def judge_all(ctx: Context) -> StageStats:
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
                        checks=checks, score=round(outcome.score, 4), keep=not reasons, reasons=reasons)]

    return await run_units(ctx, "judge", "verdicts", units, work, ctx.cfg.concurrency)
