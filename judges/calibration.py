"""Calibration of the LLM judge against verifiable checks, and its stability across seeds.

- Agreement: on trajectories that have verifiable checks, the judge's keep decision (essential
  criteria + threshold, checks left out) against the checks' decision (all pass). Keep is the
  positive class; every one of the k judge calls counts as one decision.
- Stability: the same trajectory judged k times with different seeds: the fraction whose keep
  decision is identical across the k calls, and the mean per-criterion pairwise agreement.
"""

from __future__ import annotations

import asyncio
import json
from typing import Sequence

from pydantic import BaseModel

from judges.filters import drop_reasons
from judges.judge import judge_once, sample_seeds
from judges.state_check import structural_checks
from synth.errors import RECORDED_ERRORS
from synth.pipeline import Context


class Agreement(BaseModel):
    n: int
    tp: int
    fp: int
    fn: int
    tn: int
    accuracy: float
    kappa: float
    precision: float
    recall: float


class Stability(BaseModel):
    k: int
    trajectories: int
    keep_identical: float
    criterion_agreement: float


class CalibrationReport(BaseModel):
    k: int
    mode: str
    judged: int
    failed: int
    agreement: Agreement
    stability: Stability


def agreement(judge_keep: Sequence[bool], check_keep: Sequence[bool]) -> Agreement:
    """Confusion counts (keep = positive, checks = truth), accuracy, Cohen's kappa, precision, recall."""
    pairs = list(zip(judge_keep, check_keep, strict=True))
    tp = sum(j and c for j, c in pairs)
    fp = sum(j and not c for j, c in pairs)
    fn = sum(c and not j for j, c in pairs)
    tn = len(pairs) - tp - fp - fn
    return Agreement(n=len(pairs), tp=tp, fp=fp, fn=fn, tn=tn, accuracy=_div(tp + tn, len(pairs)),
                     kappa=cohen_kappa(tp, fp, fn, tn), precision=_div(tp, tp + fp), recall=_div(tp, tp + fn))


def cohen_kappa(tp: int, fp: int, fn: int, tn: int) -> float:
    """(p_o - p_e) / (1 - p_e); 1.0 when both raters are constant and agree (p_e = 1), 0.0 on no data."""
    n = tp + fp + fn + tn
    if n == 0:
        return 0.0
    observed = (tp + tn) / n
    expected = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / n**2
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


def pairwise_agreement(votes: Sequence[bool]) -> float:
    """Share of ordered pairs of the k votes that agree (Fleiss' per-item agreement); 1.0 for k < 2."""
    k = len(votes)
    if k < 2:
        return 1.0
    yes = sum(votes)
    return (yes * (yes - 1) + (k - yes) * (k - yes - 1)) / (k * (k - 1))


def stability(keeps: Sequence[Sequence[bool]], criteria: Sequence[Sequence[Sequence[bool]]]) -> Stability:
    """keeps[t][i]: keep of call i on trajectory t; criteria[t][i][c]: criterion c passed in call i."""
    per_criterion = [pairwise_agreement([call[c] for call in calls])
                     for calls in criteria if calls for c in range(min(map(len, calls)))]
    return Stability(k=max((len(k) for k in keeps), default=0), trajectories=len(keeps),
                     keep_identical=_div(sum(len(set(k)) == 1 for k in keeps), len(keeps)),
                     criterion_agreement=_div(sum(per_criterion), len(per_criterion)))


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


async def calibrate(ctx: Context, k: int = 3, limit: int | None = None) -> CalibrationReport:
    """Judge each trajectory (with checks) k times with different seeds; save calibration.json in the run dir."""
    cfg = ctx.cfg.judge
    tasks = {t.id: t for t in ctx.store.read("tasks")}
    trajectories = [t for t in ctx.store.read("trajectories") if t.task_id in tasks][:limit]
    gate = asyncio.Semaphore(ctx.cfg.concurrency)

    async def one(trajectory):
        task, checks = tasks[trajectory.task_id], structural_checks(trajectory)
        if not checks:
            return None
        async with gate:
            try:
                calls = [await judge_once(ctx.llm, cfg, task, trajectory, seed=seed, temperature=cfg.sample_temperature)
                         for seed in sample_seeds(ctx.seed_for("calibrate", trajectory.id), k)]
            except RECORDED_ERRORS as exc:
                ctx.store.error("calibrate", trajectory.id, exc, raw=getattr(exc, "raw", ""))
                return "failed"
        keeps = [not drop_reasons(cfg, task, trajectory, results, {}, score) for results, score in calls]
        passed = [[r.passed for r in sorted(results, key=lambda r: r.index)] for results, _ in calls]
        return keeps, passed, all(checks.values())

    outcomes = await asyncio.gather(*(one(t) for t in trajectories))
    done = [o for o in outcomes if isinstance(o, tuple)]
    judge_keep = [keep for keeps, _, _ in done for keep in keeps]
    check_keep = [ok for keeps, _, ok in done for _ in keeps]
    report = CalibrationReport(
        k=k, mode=cfg.mode, judged=len(done), failed=sum(o == "failed" for o in outcomes),
        agreement=agreement(judge_keep, check_keep),
        stability=stability([keeps for keeps, _, _ in done], [passed for _, passed, _ in done]))
    (ctx.store.root / "calibration.json").write_text(json.dumps(report.model_dump(), indent=2) + "\n")
    return report
