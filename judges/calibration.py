"""Calibration of the LLM judge against verifiable checks, and its stability across seeds.

- Agreement: the judge's keep decision (essential criteria, pitfalls, threshold; checks left out)
  against the checks' decision (the keep rules over every check of judges/checks.py: structure,
  junk, the user simulator's flags that drop, the task's state checks). Keep is the positive
  class; every one of the k judge calls counts as one decision.
- State agreement: the same over trajectories whose task has a state check (final-state
  assertions, a gold final state), against those state checks alone: the judge's word on what
  was done against what the state shows.
- Per criterion kind: for each kind (essential, important, optional, pitfall), the judge's "every
  criterion of this kind passed" (pitfall: "none happened") against the checks' decision, over
  trajectories whose rubric has that kind: which kind of criterion the judge gets right.
- Stability: the same trajectory judged k times with different seeds: the fraction whose keep
  decision is identical across the k calls, and the mean per-criterion pairwise agreement.
  Judge samples stored on the run's verdicts (`judge.samples` >= k, same mode) stand in for the k
  calls, so a run judged with several samples is calibrated without new LLM calls.
- Self-agreement (`self_agreement`): the same figures over the samples stored by the judge stage,
  for the manifest; no LLM call at all.
- Planted defects (`--planted`, judges/planted.py): known defects planted in copies of kept
  trajectories, run through the whole filter; recall per defect kind.
"""

from __future__ import annotations

import asyncio
import json
from typing import Iterable, Sequence

from pydantic import BaseModel

from judges.checks import STATE_CHECKS, Subject, run_checks
from judges.config import JudgeConfig
from judges.filters import judge_reasons
from judges.reward import reward
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


KINDS = ("essential", "important", "optional", "pitfall")


class CalibrationReport(BaseModel):
    k: int
    mode: str
    judged: int
    failed: int
    reused: int = 0  # trajectories whose k calls were the judge stage's stored samples
    agreement: Agreement
    state_checked: int = 0  # trajectories whose task has a state check (STATE_CHECKS)
    state_agreement: Agreement | None = None  # judge keep vs the state checks alone, over those
    by_kind: dict[str, Agreement] = {}  # judge's per-kind verdict vs the checks' decision
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


def agent_decoys(store: RunStore) -> dict[str, frozenset[str]]:
    """agent id -> names of its decoy tools (for `distractor_tools_unused`)."""
    names = {t.id: t.name for t in store.read("tools")}
    return {a.id: frozenset(names[i] for i in a.distractor_tool_ids if i in names) for a in store.read("agents")}


def kind_passed(task: Task, results: list[CriterionResult], kind: str) -> bool:
    """Every criterion of this kind passed; for pitfalls: none happened."""
    passed = {r.index: r.passed for r in results}
    verdicts = [bool(passed.get(i)) for i, c in enumerate(task.rubric) if c.kind == kind]
    return not any(verdicts) if kind == "pitfall" else all(verdicts)


def write_section(root, **sections) -> dict:
    """Update calibration.json's sections (agreement, planted), keeping the others."""
    path = root / "calibration.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(sections)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data


async def calibrate(llm: LLM, store: RunStore, cfg: JudgeConfig, *, run_seed: int, concurrency: int, k: int = 3,
                    limit: int | None = None, reuse: bool = True) -> CalibrationReport:
    """Judge each trajectory k times with different seeds; save calibration.json in the run dir.

    With `reuse`, a verdict's stored judge samples stand in for the k calls when there are enough.
    """
    tasks = {t.id: t for t in store.read("tasks")}
    decoys = agent_decoys(store)
    trajectories = [t for t in store.read("trajectories") if t.task_id in tasks][:limit]
    verdicts = {v.trajectory_id: v for v in store.read("verdicts")} if reuse else {}
    gate = asyncio.Semaphore(concurrency)

    async def one(trajectory):
        task = tasks[trajectory.task_id]
        subject = Subject(trajectory, task, decoys.get(trajectory.agent_id, frozenset()))
        checks = run_checks(subject)
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
        state = [checks[name] for name in STATE_CHECKS if name in checks]
        kinds = {kind: [kind_passed(task, results, kind) for results, _ in calls]
                 for kind in KINDS if cfg.mode == "rubric" and any(c.kind == kind for c in task.rubric)}
        truth = reward(cfg, subject, checks).keep
        return keeps, [_passed(results) for results, _ in calls], truth, reused, (all(state) if state else None), kinds

    outcomes = await asyncio.gather(*(one(t) for t in trajectories))
    done = [o for o in outcomes if isinstance(o, tuple)]
    judge_keep = [keep for keeps, *_ in done for keep in keeps]
    check_keep = [truth for keeps, _, truth, *_ in done for _ in keeps]
    stated = [(keeps, state) for keeps, _, _, _, state, _ in done if state is not None]
    by_kind = {}
    for kind in KINDS:
        pairs = [(v, truth) for _, _, truth, _, _, kinds in done for v in kinds.get(kind, [])]
        if pairs:
            by_kind[kind] = agreement([v for v, _ in pairs], [t for _, t in pairs])
    report = CalibrationReport(
        k=k, mode=cfg.mode, judged=len(done), failed=sum(o == "failed" for o in outcomes),
        reused=sum(o[3] for o in done), agreement=agreement(judge_keep, check_keep),
        state_checked=len(stated),
        state_agreement=agreement([j for keeps, _ in stated for j in keeps],
                                  [state for keeps, state in stated for _ in keeps]) if stated else None,
        by_kind=by_kind,
        stability=stability([keeps for keeps, *_ in done], [passed for _, passed, *_ in done]))
    write_section(store.root, **report.model_dump())
    return report
