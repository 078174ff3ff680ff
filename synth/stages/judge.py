"""The judge stage (`synth judge`): score each trajectory against its task's rubric (on the `judge`
role's model), run the checks, keep or drop (judges/verdict.py).

With several judge samples each one is stored on the verdict (results, score, seed, its own keep
decision). Its manifest sections, over every verdict of the run (resumed ones included): the
judge's agreement with itself (`judge_agreement`) and pass@k / pass^k per task (`pass_k`).
"""

from __future__ import annotations

from judges.calibration import self_agreement
from judges.checks import Subject, run_checks
from judges.judge import judge
from judges.metrics import pass_report, state_check_report
from judges.verdict import verdict
from synth.context import Context
from synth.core.records import Trajectory, Verdict
from synth.core.units import StageStats, Unit, run_units


async def run(ctx: Context) -> StageStats:
    tasks = {t.id: t for t in ctx.store.read("tasks")}
    names = {t.id: t.name for t in ctx.store.read("tools")}
    decoys = {a.id: frozenset(names[i] for i in a.distractor_tool_ids if i in names) for a in ctx.store.read("agents")}
    units = [Unit(t.id, t) for t in ctx.store.read("trajectories") if t.task_id in tasks]
    cfg = ctx.cfg.judge

    async def work(unit: Unit[Trajectory]) -> list[Verdict]:
        trajectory = unit.payload
        task = tasks[trajectory.task_id]
        outcome = await judge(ctx.llm.role("judge"), cfg, task, trajectory, seed=ctx.seed_for("judge", trajectory.id))
        checks = run_checks(Subject(trajectory, task, decoys.get(trajectory.agent_id, frozenset())))
        return [verdict(cfg, task, trajectory, outcome, checks, unit=unit.id)]

    stats = await run_units(ctx, "judge", "verdicts", units, work, ctx.cfg.concurrency,
                            kept=lambda records: any(v.keep for v in records))
    verdicts = ctx.store.read("verdicts")
    stats.manifest["judge_agreement"] = self_agreement(verdicts).model_dump()
    stats.manifest["pass_k"] = pass_report(ctx.store.read("trajectories"), verdicts)
    stats.manifest["state_checks"] = state_check_report(verdicts)
    return stats
