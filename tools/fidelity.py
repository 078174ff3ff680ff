"""Simulator fidelity, measured against the real thing (`synth tools fidelity`).

For every real server a run's agents use, the same calls (each task's gold actions, and the tool
calls of its recorded trajectories, in order) are replayed from the task's seed through the real
server and through the LLM tool simulator (tools/simulator.py, with the seed as its state ledger),
and their answers compared per call:
- error agreement: both failed or both succeeded;
- structural agreement: the results have the same shape (JSON keys and value types; plain text
  counts as one shape of its own);
- value agreement: exact (after whitespace) where the real server is deterministic, that is, the
  call gave the same answer in two real replays; else a judged match (an LLM says whether the two
  answers state the same facts) when `judge` is on, else not counted.
The report gives these per tool and overall, with the worst disagreements as examples. It goes in
manifest.json (`tool_fidelity`) and the dataset card: it says how much simulated toolsets are worth.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Annotated, Any

from pydantic import BaseModel, Field

from sandboxes import provision
from synth.core.errors import ToolError
from synth.core.llm import LLM
from synth.core.records import Task
from synth.core.store import RunStore
from tools.launch import with_binds
from tools.real import RealToolset
from tools.runtime import ToolOutcome, call_tool
from tools.serving import RealPart, real_parts
from tools.simulator import SimulatedToolset

TIMEOUT_S = 60.0


class Case(BaseModel):
    """One sequence of calls to one real server, from one task's seed."""

    task_id: str
    source: str  # "gold" or a trajectory id
    part: RealPart
    seed: dict[str, Any]
    calls: list[tuple[str, str]]  # (tool, arguments as JSON text)


class CallComparison(BaseModel):
    tool: str
    arguments: str
    real: str
    simulated: str
    real_error: bool
    simulated_error: bool
    deterministic: bool
    error_agrees: bool
    structure_agrees: bool
    value_agrees: bool | None = Field(None, description="None: not compared (non-deterministic, no judge).")
    value_mode: str = Field("skipped", description="exact, judged or skipped")


class ToolFidelity(BaseModel):
    calls: int = 0
    error_agreement: float = 0.0
    structural_agreement: float = 0.0
    value_agreement: float | None = None
    values_compared: int = 0
    deterministic: int = 0


class FidelityReport(BaseModel):
    servers: list[str] = Field(default_factory=list)
    calls: int = 0
    overall: ToolFidelity = Field(default_factory=ToolFidelity)
    tools: dict[str, ToolFidelity] = Field(default_factory=dict)
    worst: list[CallComparison] = Field(default_factory=list)
    judged: bool = False
    simulator_model: str = ""
    failed_cases: list[str] = Field(default_factory=list)


class SameFacts(BaseModel):
    reason: Annotated[str, Field(max_length=200)]
    same: bool


def cases_of(store: RunStore, max_calls: int) -> list[Case]:
    """The call sequences to replay, gold first, up to `max_calls` calls in all."""
    tools = {t.id: t for t in store.read("tools")}
    agents = {a.id: a for a in store.read("agents")}
    by_task: dict[str, list[Any]] = defaultdict(list)
    for trajectory in store.read("trajectories"):
        by_task[trajectory.task_id].append(trajectory)
    cases: list[Case] = []
    for task in store.read("tasks"):
        agent = agents.get(task.agent_id)
        if agent is None:
            continue
        parts, rest = real_parts([tools[i] for i in agent.tool_ids if i in tools])
        for part in parts:
            names = {s.name for s in part.specs}
            seed = _part_seed(task, part, keyed=len(parts) > 1 or bool(rest))
            sequences = [("gold", [(a.tool, a.arguments) for a in task.gold_actions])]
            sequences += [(t.id, [(c.name, c.arguments) for c in t.tool_calls]) for t in by_task[task.id]]
            for source, calls in sequences:
                calls = [c for c in calls if c[0] in names]
                if calls:
                    cases.append(Case(task_id=task.id, source=source, part=part, seed=seed, calls=calls))
    out, total = [], 0
    for case in cases:
        if total >= max_calls:
            break
        case.calls = case.calls[: max_calls - total]
        total += len(case.calls)
        out.append(case)
    return out


def _part_seed(task: Task, part: RealPart, keyed: bool) -> dict[str, Any]:
    state = task.initial_state.get(part.key) if keyed else task.initial_state
    return state if isinstance(state, dict) else {}


async def _replay_real(case: Case, sandbox_cfg: Any) -> list[ToolOutcome]:
    async with provision(sandbox_cfg, labels={"synth.purpose": "fidelity"}) as sandbox:
        async with RealToolset(case.part.specs, sandbox, launch=case.part.launch, process="per_episode") as runtime:
            await runtime.reset(case.seed)
            return [await call_tool(runtime, name, args, TIMEOUT_S) for name, args in case.calls]


async def _replay_simulated(case: Case, sandbox_cfg: Any, llm: LLM) -> list[ToolOutcome]:
    async with provision(sandbox_cfg, labels={"synth.purpose": "fidelity"}) as sandbox:
        runtime = SimulatedToolset(llm, case.part.specs, sandbox, seed=0)
        await runtime.reset(case.seed)
        return [await call_tool(runtime, name, args, TIMEOUT_S) for name, args in case.calls]


def shape(text: str) -> Any:
    """The JSON shape of a result (keys and value types), or "text" when it is not JSON."""
    try:
        value = json.loads(text)
    except ValueError:
        return "text"
    return _shape(value)


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    return "number" if isinstance(value, (int, float)) else "string"


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


async def _judged(llm: LLM, tool: str, real: str, simulated: str, seed: int) -> bool:
    prompt = (f"Two answers of the tool `{tool}` to the same call. Do they state the same facts (ignore wording, "
              f"order and formatting)?\nA:\n{real[:1500]}\n\nB:\n{simulated[:1500]}\n\nReply with JSON: a short "
              "reason, then same (true or false).")
    reply = await llm.structured([{"role": "user", "content": prompt}], SameFacts, seed=seed, temperature=0.0)
    return reply.same


async def measure(store: RunStore, sandbox_cfg: Any, llm: LLM, *, max_calls: int = 40, judge: bool = False,
                  worst: int = 5) -> FidelityReport:
    """Replay the run's calls to real servers through both runtimes and compare (see the module docstring)."""
    cases = cases_of(store, max_calls)
    sandbox_cfg = with_binds(sandbox_cfg, [c.part.launch for c in cases])
    comparisons: list[CallComparison] = []
    failed: list[str] = []
    for n, case in enumerate(cases):
        try:
            first = await _replay_real(case, sandbox_cfg)
            second = await _replay_real(case, sandbox_cfg)
            simulated = await _replay_simulated(case, sandbox_cfg, llm)
        except (ToolError, ValueError) as e:  # a seed that does not build, a server that dies: named, not fatal
            failed.append(f"task {case.task_id} ({case.source}): {e}"[:300])
            continue
        for i, ((tool, args), r, r2, s) in enumerate(zip(case.calls, first, second, simulated)):
            deterministic = r.text == r2.text and r.is_error == r2.is_error
            same_structure = shape(r.text) == shape(s.text)
            value, mode = None, "skipped"
            if deterministic:
                value, mode = _normal(r.text) == _normal(s.text), "exact"
            elif judge:
                value, mode = await _judged(llm, tool, r.text, s.text, seed=n * 1000 + i), "judged"
            comparisons.append(CallComparison(
                tool=tool, arguments=args, real=r.text[:600], simulated=s.text[:600], real_error=r.is_error,
                simulated_error=s.is_error, deterministic=deterministic, error_agrees=r.is_error == s.is_error,
                structure_agrees=same_structure, value_agrees=value, value_mode=mode))
    by_tool: dict[str, list[CallComparison]] = defaultdict(list)
    for c in comparisons:
        by_tool[c.tool].append(c)
    ranked = sorted(comparisons, key=lambda c: (c.error_agrees, c.structure_agrees, c.value_agrees is not False))
    return FidelityReport(
        servers=sorted({c.part.launch.describe() for c in cases}), calls=len(comparisons),
        overall=_summary(comparisons), tools={t: _summary(cs) for t, cs in sorted(by_tool.items())},
        worst=[c for c in ranked if not (c.error_agrees and c.structure_agrees and c.value_agrees is not False)][:worst],
        judged=judge, simulator_model=llm.cfg.model or "", failed_cases=failed)


def _summary(calls: list[CallComparison]) -> ToolFidelity:
    n = len(calls)
    valued = [c for c in calls if c.value_agrees is not None]
    return ToolFidelity(
        calls=n, error_agreement=round(sum(c.error_agrees for c in calls) / n, 3) if n else 0.0,
        structural_agreement=round(sum(c.structure_agrees for c in calls) / n, 3) if n else 0.0,
        value_agreement=round(sum(bool(c.value_agrees) for c in valued) / len(valued), 3) if valued else None,
        values_compared=len(valued), deterministic=sum(c.deterministic for c in calls))

