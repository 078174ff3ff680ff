"""Measured recall of planted defects (`synth judges calibrate --planted`).

Takes the run's trajectories that pass the filter (kept verdicts; or, with `source="checks"`,
those whose checks all pass today), plants each defect of judges/planted.py in a copy, and runs
every copy through the whole filter: the checks, then the judge (on the `judge` role's model)
when no check has dropped it already, combined by the keep rules (judges/reward.py). An untouched
copy of each goes through the same filter, so a defect's drop rate can be read against the
untouched one. Per defect kind the report says how many copies were planted, dropped and by which
reason kind, how many a check is built to catch (`by_check`) and how many of those were dropped
(`by_check_dropped`: a deterministic defect must be caught every time), and how many only the
judge caught. Nothing is written to the run's records; the report goes to calibration.json
(`planted`) and from there to the dataset card.
"""

from __future__ import annotations

import asyncio
import random
from typing import Literal

from pydantic import BaseModel, Field

from judges.calibration import agent_decoys, write_section
from judges.checks import Subject, run_checks
from judges.config import JudgeConfig
from judges.filters import from_judge, reason_kind
from judges.judge import judge
from judges.planted import PLANTERS, Planted
from judges.reward import reward
from synth.core.errors import boundary
from synth.core.hashing import derive_seed
from synth.core.llm import LLM
from synth.core.records import Task, Trajectory
from synth.core.store import RunStore

Source = Literal["kept", "checks"]


class KindRecall(BaseModel):
    planted: int = 0
    not_applicable: int = Field(0, description="Source trajectories the defect could not be planted in.")
    dropped: int = 0
    by_check: int = Field(0, description="Copies a check is built to catch (deterministic defects).")
    by_check_dropped: int = Field(0, description="Of those, dropped: must equal by_check.")
    caught_by_checks: int = Field(0, description="Copies a check (or another rule than the judge's) dropped.")
    caught_by_judge_only: int = Field(0, description="Copies the checks kept and the judge dropped.")
    failed: int = Field(0, description="Copies whose judge call failed (errors.jsonl, stage calibrate).")
    reasons: dict[str, int] = Field(default_factory=dict, description="Drop reason kind -> copies.")
    examples: list[str] = Field(default_factory=list, description="What was planted, in the first copies.")


class UntouchedRecall(BaseModel):
    judged: int = 0
    kept: int = 0
    failed: int = 0
    reasons: dict[str, int] = Field(default_factory=dict)


class PlantedReport(BaseModel):
    source: Source
    trajectories: int
    judged: bool = Field(description="Whether the judge ran (copies the checks kept were judged).")
    kinds: dict[str, KindRecall]
    untouched: UntouchedRecall


class _Filtered(BaseModel):
    keep: bool
    reasons: list[str]
    failed: bool = False


async def run_filter(llm: LLM | None, cfg: JudgeConfig, subject: Subject, *, seed: int) -> _Filtered:
    """The whole filter on one trajectory: checks, then the judge unless a check already dropped it."""
    assert subject.task is not None
    checks = run_checks(subject)
    decided = reward(cfg, subject, checks)
    if not decided.keep or llm is None:
        return _Filtered(keep=decided.keep, reasons=decided.reasons)
    outcome = await judge(llm, cfg, subject.task, subject.trajectory, seed=seed)
    decided = reward(cfg, subject, checks, outcome)
    return _Filtered(keep=decided.keep, reasons=decided.reasons)


def sources(store: RunStore, tasks: dict[str, Task], decoys: dict[str, frozenset[str]], cfg: JudgeConfig,
            source: Source) -> list[Trajectory]:
    trajectories = [t for t in store.read("trajectories") if t.task_id in tasks]
    if source == "kept":
        kept = {v.trajectory_id for v in store.read("verdicts") if v.keep}
        return [t for t in trajectories if t.id in kept]
    return [t for t in trajectories
            if reward(cfg, s := Subject(t, tasks[t.task_id], decoys.get(t.agent_id, frozenset())), run_checks(s)).keep]


async def planted_recall(llm: LLM | None, store: RunStore, cfg: JudgeConfig, *, run_seed: int, concurrency: int,
                         source: Source = "kept", kinds: list[str] | None = None,
                         limit: int | None = None) -> PlantedReport:
    """Plant every defect kind in copies of the source trajectories and filter them; save the report.
    `llm` None: checks only (judge-dependent defects then count as missed)."""
    tasks = {t.id: t for t in store.read("tasks")}
    decoys = agent_decoys(store)
    chosen = sources(store, tasks, decoys, cfg, source)[:limit]
    kinds = kinds or list(PLANTERS)
    gate = asyncio.Semaphore(concurrency)
    recall = {kind: KindRecall() for kind in kinds}
    untouched = UntouchedRecall()

    async def filtered(trajectory: Trajectory, kind: str) -> _Filtered:
        subject = Subject(trajectory, tasks[trajectory.task_id], decoys.get(trajectory.agent_id, frozenset()))
        async with gate:
            try:
                return await run_filter(llm, cfg, subject, seed=derive_seed(run_seed, "planted", kind, trajectory.id))
            except Exception as exc:
                store.failure("calibrate", f"planted:{kind}:{trajectory.id}", boundary(exc))  # a bug raises
                return _Filtered(keep=True, reasons=[], failed=True)

    async def control(trajectory: Trajectory) -> None:
        result = await filtered(trajectory, "untouched")
        if result.failed:
            untouched.failed += 1
            return
        untouched.judged += 1
        untouched.kept += result.keep
        _count(untouched.reasons, result.reasons)

    async def plant(trajectory: Trajectory, kind: str) -> None:
        rng = random.Random(derive_seed(run_seed, "plant", kind, trajectory.id))
        planted = PLANTERS[kind](trajectory, tasks[trajectory.task_id], rng)
        entry = recall[kind]
        if planted is None:
            entry.not_applicable += 1
            return
        result = await filtered(planted.trajectory, kind)
        _tally(entry, planted, result)

    await asyncio.gather(*(control(t) for t in chosen), *(plant(t, kind) for t in chosen for kind in kinds))
    report = PlantedReport(source=source, trajectories=len(chosen), judged=llm is not None, kinds=recall,
                           untouched=untouched)
    write_section(store.root, planted=report.model_dump())
    return report


def _count(counts: dict[str, int], reasons: list[str]) -> None:
    for kind in dict.fromkeys(reason_kind(r) for r in reasons):
        counts[kind] = counts.get(kind, 0) + 1


def _tally(entry: KindRecall, planted: Planted, result: _Filtered) -> None:
    if result.failed:
        entry.failed += 1
        return
    entry.planted += 1
    if len(entry.examples) < 3:
        entry.examples.append(planted.detail[:200])
    by_checks = not all(from_judge(r) for r in result.reasons)
    entry.by_check += planted.by == "check"
    if not result.keep:
        entry.dropped += 1
        entry.by_check_dropped += planted.by == "check"
        entry.caught_by_checks += by_checks
        entry.caught_by_judge_only += not by_checks
        _count(entry.reasons, result.reasons)
