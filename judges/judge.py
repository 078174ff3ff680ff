"""The LLM judge: each rubric criterion pass/fail with a reason and the turn it rests on."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, Field

from synth.llm import LLM
from synth.prompts import render
from synth.records import Criterion, CriterionResult, Task, Trajectory


class CriterionJudgment(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=200)]  # reason first: the verdict follows from it
    passed: bool
    turn: int = Field(ge=0, le=200)


def judgment_model(count: int) -> type[BaseModel]:
    class Judgment(BaseModel):
        results: list[CriterionJudgment] = Field(min_length=count, max_length=count)

    return Judgment


async def judge_trajectory(llm: LLM, task: Task, trajectory: Trajectory, *, seed: int) -> list[CriterionResult]:
    prompt = render(__file__, "judge", goal=task.goal, transcript=transcript(trajectory.messages),
                    criteria="\n".join(f"{i + 1}. [{c.kind}] {c.text}" for i, c in enumerate(task.rubric)))
    reply = await llm.structured([{"role": "user", "content": prompt}], judgment_model(len(task.rubric)),
                                 seed=seed, temperature=0.0)
    return [CriterionResult(index=i, passed=r.passed, reason=r.reason, turn=r.turn) for i, r in enumerate(reply.results)]


def rubric_score(rubric: list[Criterion], results: list[CriterionResult]) -> float:
    """sum(w_i * c_i) / sum(w_i) over positive criteria; a pitfall that happened subtracts its weight."""
    passed = {r.index: r.passed for r in results}
    positive = sum(c.weight for c in rubric if c.kind != "pitfall")
    if positive == 0:
        return 0.0
    gained = sum(c.weight for i, c in enumerate(rubric) if c.kind != "pitfall" and passed.get(i))
    lost = sum(c.weight for i, c in enumerate(rubric) if c.kind == "pitfall" and passed.get(i))
    return max(0.0, min(1.0, (gained - lost) / positive))


def transcript(messages: list[dict[str, Any]]) -> str:
    lines, turn = [], 0
    for message in messages:
        role = message["role"]
        if role == "system":
            continue
        if role == "user":
            turn += 1
            lines.append(f"[turn {turn}] USER: {message['content']}")
        elif role == "assistant":
            if message.get("content"):
                lines.append(f"[turn {turn}] ASSISTANT: {message['content']}")
            for call in message.get("tool_calls") or []:
                fn = call["function"]
                lines.append(f"[turn {turn}] ASSISTANT CALLS {fn['name']}({fn['arguments']})")
        elif role == "tool":
            lines.append(f"[turn {turn}] TOOL RESULT ({message.get('name', '')}): {message['content']}")
    return "\n".join(lines) if lines else json.dumps(messages)
