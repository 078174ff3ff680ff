"""The LLM judge: each rubric criterion pass/fail with a reason and the turn it rests on.

Two modes (`judge.mode`): "rubric" asks for one verdict per criterion; "single" asks for one
holistic 0-10 score with a reason. With `judge.samples` > 1 the judge is asked several times with
different seeds and the samples are combined: a per-criterion majority (ties fail), or the mean score.

The judge is informed (judges/judge_context.py): it reads the agent's system prompt, the user's goal
and hidden facts, the offered tools' schemas and what the episode changed in the state, beside the
conversation. It runs on the `judge` role's model (`llm.roles.judge`), which may be another model
than the agent's. The criteria come in an order shuffled per sample (seeded by the sample's seed,
so a rerun repeats it) and the results are mapped back to the rubric's order: a position bias of
the judge then spreads over the criteria instead of always favouring the first ones.
"""

from __future__ import annotations

import random
from typing import Annotated

from pydantic import BaseModel, Field

from judges.config import JudgeConfig
from judges.judge_context import state_report, system_prompt, tool_schemas, transcript, user_knowledge
from synth.core.hashing import content_hash
from synth.core.llm import LLM
from synth.core.prompts import render
from synth.core.records import Criterion, CriterionResult, Task, Trajectory

SINGLE_INDEX = -1  # a single-mode verdict is stored as one CriterionResult that no rubric index matches
NO_TURN = -1  # a criterion no turn bears on (a pitfall that never happened); stored as turn None


class CriterionJudgment(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=200)]  # reason first: the verdict follows from it
    passed: bool
    # -1 is allowed: judges write it for a criterion nothing in the conversation bears on (Qwen2.5-Coder-1.5B
    # did so for 2 of 4 quickstart trajectories, and with `ge=0` those verdicts were lost as parse errors).
    turn: int = Field(ge=NO_TURN, le=200)


class SingleJudgment(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=300)]
    score: int = Field(ge=0, le=10)


def judgment_model(count: int) -> type[BaseModel]:
    class Judgment(BaseModel):
        results: list[CriterionJudgment] = Field(min_length=count, max_length=count)

    return Judgment


class JudgeOutcome(BaseModel):
    """Combined results and normalized score, plus every sample's results, score and seed (same order)."""

    results: list[CriterionResult]
    score: float
    samples: list[list[CriterionResult]]
    scores: list[float]
    seeds: list[int]


def sample_seeds(seed: int, count: int) -> list[int]:
    """The first sample keeps `seed` (so samples=1 repeats earlier runs and their cache); others derive from it."""
    return [seed] + [int(content_hash([seed, i], 8), 16) for i in range(1, count)]


def criteria_order(count: int, seed: int) -> list[int]:
    """The rubric indexes in the order one judge sample sees them: a permutation seeded by its seed."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return order


def _criteria(task: Task, order: list[int]) -> str:
    return "\n".join(f"{n}. [{task.rubric[i].kind}] {task.rubric[i].text}" for n, i in enumerate(order, 1))


def judge_prompt(prompt: str, task: Task, trajectory: Trajectory, order: list[int]) -> str:
    """The judge's prompt (judge.md or single.md) over what it reads, criteria in `order`."""
    return render(__file__, prompt, system=system_prompt(trajectory), user=user_knowledge(task),
                  tools=tool_schemas(trajectory), state=state_report(task, trajectory),
                  transcript=transcript(trajectory.messages, trajectory.user_stopped), criteria=_criteria(task, order))


async def judge_trajectory(llm: LLM, task: Task, trajectory: Trajectory, *, seed: int,
                           temperature: float = 0.0) -> list[CriterionResult]:
    """One verdict per criterion, asked in a seeded order and returned in the rubric's order."""
    order = criteria_order(len(task.rubric), seed)
    prompt = judge_prompt("judge", task, trajectory, order)
    reply = await llm.structured([{"role": "user", "content": prompt}], judgment_model(len(task.rubric)),
                                 seed=seed, temperature=temperature, call="judge")
    results = [CriterionResult(index=i, passed=r.passed, reason=r.reason, turn=None if r.turn == NO_TURN else r.turn)
               for i, r in zip(order, reply.results, strict=True)]
    return sorted(results, key=lambda r: r.index)


async def judge_single(llm: LLM, task: Task, trajectory: Trajectory, *, seed: int,
                       temperature: float = 0.0) -> tuple[float, str]:
    """One holistic score in [0, 1] (the 0-10 reply divided by 10) and its reason."""
    prompt = judge_prompt("single", task, trajectory, criteria_order(len(task.rubric), seed))
    reply = await llm.structured([{"role": "user", "content": prompt}], SingleJudgment, seed=seed,
                                 temperature=temperature, call="judge")
    return reply.score / 10, reply.reason


async def judge_once(llm: LLM, cfg: JudgeConfig, task: Task, trajectory: Trajectory, *, seed: int,
                     temperature: float) -> tuple[list[CriterionResult], float]:
    """One judge call in the configured mode: (results, normalized score)."""
    if cfg.mode == "single":
        score, reason = await judge_single(llm, task, trajectory, seed=seed, temperature=temperature)
        return [CriterionResult(index=SINGLE_INDEX, passed=score >= cfg.keep_threshold, reason=reason)], score
    results = await judge_trajectory(llm, task, trajectory, seed=seed, temperature=temperature)
    return results, rubric_score(task.rubric, results)


async def judge(llm: LLM, cfg: JudgeConfig, task: Task, trajectory: Trajectory, *, seed: int) -> JudgeOutcome:
    """`cfg.samples` judge calls (sequential: the stage already runs trajectories concurrently), combined."""
    temperature = 0.0 if cfg.samples == 1 else cfg.sample_temperature
    seeds, samples, scores = sample_seeds(seed, cfg.samples), [], []
    for s in seeds:
        results, score = await judge_once(llm, cfg, task, trajectory, seed=s, temperature=temperature)
        samples.append(results)
        scores.append(score)
    if cfg.mode == "single":
        score = sum(scores) / len(scores)
        combined = [CriterionResult(index=SINGLE_INDEX, passed=score >= cfg.keep_threshold,
                                    reason=samples[0][0].reason + _tally(scores, score >= cfg.keep_threshold, cfg))]
    else:
        combined = majority(samples)
        score = rubric_score(task.rubric, combined)
    return JudgeOutcome(results=combined, score=score, samples=samples, scores=scores, seeds=seeds)


def _tally(scores: list[float], kept: bool, cfg: JudgeConfig) -> str:
    if len(scores) == 1:
        return ""
    return f" ({sum((s >= cfg.keep_threshold) == kept for s in scores)}/{len(scores)} samples agree)"


def majority(samples: list[list[CriterionResult]]) -> list[CriterionResult]:
    """Per criterion: passed when more than half the samples pass it (a tie fails: the conservative side).

    The reason and turn come from the first sample that agrees with the majority, with the tally appended.
    """
    if len(samples) == 1:
        return list(samples[0])
    by_index: dict[int, list[CriterionResult]] = {}
    for results in samples:
        for r in results:
            by_index.setdefault(r.index, []).append(r)
    combined = []
    for index in sorted(by_index):
        votes = by_index[index]
        passed = sum(r.passed for r in votes) * 2 > len(samples)
        agree = [r for r in votes if r.passed == passed]
        first = agree[0] if agree else votes[0]
        combined.append(CriterionResult(index=index, passed=passed, turn=first.turn,
                                        reason=f"{first.reason} ({len(agree)}/{len(samples)} samples agree)"))
    return combined


def rubric_score(rubric: list[Criterion], results: list[CriterionResult]) -> float:
    """sum(w_i * c_i) / sum(w_i) over positive criteria; a pitfall that happened subtracts its weight."""
    passed = {r.index: r.passed for r in results}
    positive = sum(c.weight for c in rubric if c.kind != "pitfall")
    if positive == 0:
        return 0.0
    gained = sum(c.weight for i, c in enumerate(rubric) if c.kind != "pitfall" and passed.get(i))
    lost = sum(c.weight for i, c in enumerate(rubric) if c.kind == "pitfall" and passed.get(i))
    return max(0.0, min(1.0, (gained - lost) / positive))
