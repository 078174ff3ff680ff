"""Calibration of the LLM judge against verifiable checks, and its stability across seeds.

- Agreement: on trajectories that have verifiable checks, the judge's keep decision (essential
  criteria + threshold, checks left out) against the checks' decision (all pass). Keep is the
  positive class; every one of the k judge calls counts as one decision.
- Stability: the same trajectory judged k times with different seeds: the fraction whose keep
  decision is identical across the k calls, and the mean per-criterion pairwise agreement.
  Judge samples stored on the run's verdicts (`judge.samples` >= k, same mode) stand in for the k
  calls, so a run judged with several samples is calibrated without new LLM calls.
- Self-agreement (`self_agreement`): the same figures over the samples stored by the judge stage,
  for the manifest; no LLM call at all.
"""

from __future__ import annotations

import asyncio
import json
from typing import Iterable, Sequence

from pydantic import BaseModel

from judges.checks import STRUCTURAL, Subject, run_checks
from judges.config import JudgeConfig
from judges.filters import judge_reasons
from judges.judge import SINGLE_INDEX, judge_once, sample_seeds
from synth.core.errors import boundary
from synth.core.hashing import derive_seed
from synth.core.llm import LLM
from synth.core.records import CriterionResult, Task, Verdict
from synth.core.store import RunStore


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
    reused: int = 0  # trajectories whose k calls were the judge stage's stored samples
    agreement: Agreement
    stability: Stability


class SelfAgreement(BaseModel):
    """The judge's agreement with itself over the samples stored on a run's verdicts (None: nothing to compare)."""

    trajectories: int  # verdicts with 2 or more samples
    k: int  # the most samples on one verdict
    criteria: int  # (trajectory, criterion) pairs compared
    criteria_unanimous: float | None  # share of those where every sample gave the same pass/fail
    keep_identical: float | None  # share of trajectories whose samples all made the same keep decision
    criterion_agreement: float | None  # mean pairwise agreement per criterion, as in calibration.json


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


def criterion_votes(criteria: Sequence[Sequence[Sequence[bool]]]) -> list[list[bool]]:
    """criteria[t][i][c] -> one list of the k votes per (trajectory, criterion)."""
    return [[call[c] for call in calls] for calls in criteria if calls for c in range(min(map(len, calls)))]


def stability(keeps: Sequence[Sequence[bool]], criteria: Sequence[Sequence[Sequence[bool]]]) -> Stability:
    """keeps[t][i]: keep of call i on trajectory t; criteria[t][i][c]: criterion c passed in call i."""
    per_criterion = [pairwise_agreement(votes) for votes in criterion_votes(criteria)]
    return Stability(k=max((len(k) for k in keeps), default=0), trajectories=len(keeps),
                     keep_identical=_div(sum(len(set(k)) == 1 for k in keeps), len(keeps)),
                     criterion_agreement=_div(sum(per_criterion), len(per_criterion)))


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


def _passed(results: list[CriterionResult]) -> list[bool]:
    return [r.passed for r in sorted(results, key=lambda r: r.index)]


def self_agreement(verdicts: Iterable[Verdict]) -> SelfAgreement:
    """Unanimity per criterion and identical keep decisions across each verdict's stored judge samples."""
    sampled = [v for v in verdicts if len(v.samples) > 1]
    keeps = [[s.keep for s in v.samples] for v in sampled]
    criteria = [[_passed(s.results) for s in v.samples] for v in sampled]
    votes = criterion_votes(criteria)
    s = stability(keeps, criteria)
    return SelfAgreement(
        trajectories=len(sampled), k=s.k, criteria=len(votes),
        criteria_unanimous=sum(len(set(v)) == 1 for v in votes) / len(votes) if votes else None,
        keep_identical=s.keep_identical if sampled else None,
        criterion_agreement=s.criterion_agreement if votes else None)


def stored_calls(verdict: Verdict | None, task: Task, cfg: JudgeConfig,
                 k: int) -> list[tuple[list[CriterionResult], float]] | None:
    """The verdict's first k stored samples as (results, score) calls, if there are k made in the current mode."""
    samples = verdict.samples[:k] if verdict else []
    expected = [SINGLE_INDEX] if cfg.mode == "single" else list(range(len(task.rubric)))
    if len(samples) < k or any(sorted(r.index for r in s.results) != expected for s in samples):
        return None
    return [(s.results, s.score) for s in samples]


async def calibrate(llm: LLM, store: RunStore, cfg: JudgeConfig, *, run_seed: int, concurrency: int, k: int = 3,
                    limit: int | None = None, reuse: bool = True) -> CalibrationReport:
    """Judge each trajectory (with checks) k times with different seeds; save calibration.json in the run dir.

    With `reuse`, a verdict's stored judge samples stand in for the k calls when there are enough.
    """
    tasks = {t.id: t for t in store.read("tasks")}
    trajectories = [t for t in store.read("trajectories") if t.task_id in tasks][:limit]
    verdicts = {v.trajectory_id: v for v in store.read("verdicts")} if reuse else {}
    gate = asyncio.Semaphore(concurrency)

    async def one(trajectory):
        task, checks = tasks[trajectory.task_id], run_checks(Subject(trajectory), STRUCTURAL)
        if not checks:
            return None
        calls = stored_calls(verdicts.get(trajectory.id), task, cfg, k)
        reused = calls is not None
        if calls is None:
            async with gate:
                try:
                    calls = [await judge_once(llm, cfg, task, trajectory, seed=seed,
                                              temperature=cfg.sample_temperature)
                             for seed in sample_seeds(derive_seed(run_seed, "calibrate", trajectory.id), k)]
                except Exception as exc:
                    store.failure("calibrate", trajectory.id, boundary(exc))  # a bug raises
                    return "failed"
        keeps = [not judge_reasons(cfg, task, results, score) for results, score in calls]
        return keeps, [_passed(results) for results, _ in calls], all(checks.values()), reused

    outcomes = await asyncio.gather(*(one(t) for t in trajectories))
    done = [o for o in outcomes if isinstance(o, tuple)]
    judge_keep = [keep for keeps, *_ in done for keep in keeps]
    check_keep = [ok for keeps, _, ok, _ in done for _ in keeps]
    report = CalibrationReport(
        k=k, mode=cfg.mode, judged=len(done), failed=sum(o == "failed" for o in outcomes),
        reused=sum(reused for *_, reused in done), agreement=agreement(judge_keep, check_keep),
        stability=stability([keeps for keeps, *_ in done], [passed for _, passed, *_ in done]))
    (store.root / "calibration.json").write_text(json.dumps(report.model_dump(), indent=2) + "\n")
    return report
