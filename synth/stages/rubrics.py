"""The rubric step of the tasks stage: one request per task, after the task (and its gold replay).

Written from the task, the tool schemas and a reference solution: the gold actions (with the
assertions they satisfy) where there are any; else the writer sketches a reference solution first,
in the same reply, and writes the items against it (Rubrics-as-Rewards: rubrics written against a
reference are better). The item count follows the difficulty (`tasks.rubric_items`); the writer
picks each item's kind and the weight comes from the kind table (`tasks.rubric_weights`), so a
failed essential always outweighs a passed optional. The rubric is validated
(judges/rubric_rules.py); one that fails is asked again with its problems shown
(`tasks.rubric_repairs` times), and one that still fails keeps its problems on the task
(`Task.rubric_problems`): the rubric is rejected with a named reason.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from judges.rubric_rules import rubric_problems
from judges.text_checks import ECHO_N, shingles, template_shingles
from synth.config import TasksConfig
from synth.core.llm import LLM
from synth.core.prompts import render
from synth.core.records import Agent, Criterion, Task, ToolSpec

STATE_SHOWN = 1500  # characters of the initial state shown to the writer
# Completion budget: a whole rubric must fit (a cut reply is a parse failure), whatever llm.max_tokens says.
TOKENS_PER_ITEM, TOKENS_SKETCH, TOKENS_BASE = 60, 200, 120


class ItemDraft(BaseModel):
    text: Annotated[str, Field(min_length=10, max_length=160)]
    kind: Literal["essential", "important", "optional", "pitfall"]


def rubric_model(count: int, sketch: bool) -> type[BaseModel]:
    """The reply schema: `count` items, after a sketched reference solution (`approach`) when the task
    has no gold actions. (llama.cpp's grammar writes an object's keys in alphabetical order:
    `approach` sorts before `rubric`, so the sketch comes first there too.)"""
    if sketch:
        class SketchedRubric(BaseModel):
            approach: list[Annotated[str, Field(min_length=5, max_length=120)]] = Field(min_length=1, max_length=5)
            rubric: list[ItemDraft] = Field(min_length=count, max_length=count)

        return SketchedRubric

    class Rubric(BaseModel):
        rubric: list[ItemDraft] = Field(min_length=count, max_length=count)

    return Rubric


def tool_lines(specs: list[ToolSpec], decoys: set[str]) -> str:
    return "\n".join(f"- {s.name}: {s.description}{' (decoy: no task needs it)' if s.id in decoys else ''}\n"
                     f"  parameters: {json.dumps(s.input_schema, sort_keys=True)}" for s in specs)


def reference_text(task: Task) -> str:
    if not task.gold_actions:
        return ("There is no reference solution yet: first sketch one in `approach` (the steps and tool calls "
                "that solve the task, in order), then write the items against it.")
    calls = "\n".join(f"{n}. {a.tool}({a.arguments})" for n, a in enumerate(task.gold_actions, 1))
    checks = "\n".join(f"- {a.path} {a.op} {a.value}".rstrip() for a in task.assertions)
    return f"A reference solution (it was run and works):\n{calls}\nAfter it, the state satisfies:\n{checks}\n"


@functools.cache
def prompt_runs() -> frozenset[tuple[str, ...]]:
    """The rubric prompt's literal word runs (its placeholders' values are the task's, not the prompt's)."""
    runs = template_shingles([(Path(__file__).parent / "prompts" / "rubric.md").read_text(encoding="utf-8")])
    # Only full runs: a short literal piece ("State before the conversation") is also what an honest item says.
    return frozenset(run for run in runs if len(run) >= ECHO_N)


def task_runs(task: Task, specs: list[ToolSpec], system_prompt: str) -> frozenset[tuple[str, ...]]:
    """Word runs of the task's own text: an item may repeat these even where the prompt has them too."""
    text = "\n".join([system_prompt, task.goal, *task.user_facts, *(f"{s.name} {s.description}" for s in specs)])
    return frozenset(shingles(text))


def examples(task: Task, specs: list[ToolSpec], decoys: set[str]) -> tuple[str, str]:
    """An essential and a pitfall item in this task's own terms: the form to follow, and harmless when
    a small model copies them (they name this task's tool, not another domain's)."""
    used = [s for s in specs if s.id not in decoys] or specs
    if not used:
        return ("The assistant tells the user what it did and what it found",
                "The assistant claims a result that no tool call returned")
    tool = used[0]
    params = list((tool.input_schema.get("properties") or {}))
    what = f"the {params[0].replace('_', ' ')} the user gave" if params else "what the user asked for"
    return (f"The assistant calls {tool.name} with {what}",
            f"The assistant tells the user {tool.name} succeeded although no {tool.name} call succeeded")


def anchors(task: Task, specs: list[ToolSpec]) -> list[str]:
    """What an item may name to be checkable: tools, state collections, the task's facts."""
    return [*(s.name for s in specs), *task.initial_state, *task.user_facts]


async def write_rubric(llm: LLM, cfg: TasksConfig, agent: Agent, specs: list[ToolSpec], task: Task, *,
                       seed: int, max_tokens: int = 512) -> Task:
    """`task` with its rubric (weights from the kind table), reference sketch and validation problems."""
    count = cfg.items_for(task.difficulty)
    weights = cfg.rubric_weights.model_dump()
    state = json.dumps(task.initial_state, sort_keys=True, ensure_ascii=False)
    decoys = set(agent.distractor_tool_ids)
    essential, pitfall = examples(task, specs, decoys)
    values = dict(system_prompt=agent.system_prompt, tools=tool_lines(specs, decoys),
                  example_essential=essential, example_pitfall=pitfall, goal=task.goal,
                  facts="; ".join(task.user_facts) or "(nothing)", difficulty=task.difficulty,
                  state=(state[:STATE_SHOWN] + " ...") if len(state) > STATE_SHOWN else state or "{}",
                  reference=reference_text(task), count=count)
    schema = rubric_model(count, sketch=not task.gold_actions)
    budget = max(max_tokens, TOKENS_BASE + TOKENS_PER_ITEM * count + (TOKENS_SKETCH if not task.gold_actions else 0))
    repair, problems, rubric, reference = "", [], [], []
    own = task_runs(task, specs, agent.system_prompt)
    for attempt in range(cfg.rubric_repairs + 1):
        prompt = render(__file__, "rubric", **values, repair=repair)
        reply = await llm.structured([{"role": "user", "content": prompt}], schema, seed=seed + attempt,
                                     max_tokens=budget)
        rubric = [Criterion(text=i.text.strip(), kind=i.kind, weight=weights[i.kind]) for i in reply.rubric]
        reference = list(getattr(reply, "approach", []))
        problems = rubric_problems(rubric, expected=count, anchors=anchors(task, specs), weights=weights,
                                   prompt_runs=prompt_runs(), exempt_runs=own)
        if not problems:
            break
        repair = ("Your last rubric was rejected:\n" + "\n".join(f"- {p}" for p in problems)
                  + "\nWrite a rubric without these problems.\n")
    return Task.model_validate({**task.model_dump(exclude={"id"}), "rubric": [c.model_dump() for c in rubric],
                                "reference": reference, "rubric_problems": problems})
