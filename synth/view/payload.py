"""The data the page's script reads: a small index for lists and filters, and everything else as gzip'd
JSON blobs the page inflates only when it needs them (DecompressionStream, which works on file://).

A run of 10,000 trajectories is tens of megabytes of JSON; the page must not parse that to show a
list. Trajectory details go in chunks of CHUNK: opening one inflates one chunk; a chunk keeps
neighbours' repeated text (system prompts, tool schemas) in one gzip window.

Index rows use short keys to stay small (the script in assets/ reads the same names):
trajectory  i index, id, task, ag agent name, dom domain, ts toolsets, d difficulty, st strategy,
            k kept (true/false, null when not judged), s score, r drop-reason kinds, f user flags,
            tu turns, c tool calls, e tool errors, fa injected faults, g goal, q more search text
            (ids, agent, tools called, reasons whose detail their kind drops)
task        id, ag, dom, ts, d, g, n rubric criteria, ga gold actions, as assertions, v validated,
            tr indexes of its trajectories
error       i, st stage, ty error type, m message, u unit
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from typing import Any

from synth.view.diff import state_diff
from synth.view.joins import Row, Run
from synth.view.summary import reason_kind, reason_kinds

CHUNK = 50
GOAL_CHARS = 200
REASON_CHARS = 120
MESSAGE_CHARS = 240


@dataclass
class Payload:
    index: dict[str, Any]
    chunks: list[bytes]  # gzip'd JSON list of trajectory details, CHUNK per chunk
    tables: bytes  # gzip'd {"tasks": {id: task}, "agents": {id: agent}, "tools": {id: tool}}
    errors: bytes  # gzip'd JSON list of error records, raw replies included


def build_payload(run: Run) -> Payload:
    trajectories = run.files["trajectories"]
    rows = [trajectory_row(run, i, t) for i, t in enumerate(trajectories)]
    details = [trajectory_detail(run, t) for t in trajectories]
    chunks = [pack(details[start:start + CHUNK]) for start in range(0, len(details), CHUNK)]
    positions: dict[str, list[int]] = {}
    for row in rows:
        positions.setdefault(row["task"], []).append(row["i"])
    errors = run.files["errors"]
    index = {
        "chunk": CHUNK,
        "trajectories": rows,
        "tasks": [task_row(run, task, positions.get(task.get("id", ""), [])) for task in run.files["tasks"]],
        "errors": [error_row(i, e) for i, e in enumerate(errors)],
    }
    tables = {"tasks": run.tasks, "agents": run.agents,
              "tools": {i: {k: t.get(k) for k in ("name", "toolset", "domain", "kind", "description")}
                        for i, t in run.tools.items()}}
    return Payload(index=index, chunks=chunks, tables=pack(tables), errors=pack(errors))


def trajectory_row(run: Run, index: int, trajectory: Row) -> dict[str, Any]:
    task, agent = run.task_of(trajectory), run.agent_of(trajectory)
    verdict = run.verdicts.get(trajectory.get("id", ""))
    calls = trajectory.get("tool_calls", [])
    toolsets = run.toolsets_of(agent)
    kinds = reason_kinds(verdict) if verdict else []
    flags = [str(f) for f in trajectory.get("user_flags", [])]
    goal = str(task.get("goal", ""))
    # what the free-text filter searches besides the goal, domain, toolsets, flags and reason kinds (shown fields)
    searchable = [trajectory.get("id", ""), trajectory.get("task_id", ""), agent.get("name", ""),
                  *dict.fromkeys(str(c.get("name", "")) for c in calls),
                  *(str(r)[:REASON_CHARS] for r in (verdict or {}).get("reasons", []) if reason_kind(str(r)) != str(r))]
    return {
        "i": index, "id": trajectory.get("id", ""), "task": trajectory.get("task_id", ""), "ag": agent.get("name", ""),
        "dom": run.domain_of(trajectory), "ts": toolsets, "d": task.get("difficulty", ""),
        "st": agent.get("strategy", "single") if agent else "",
        "k": bool(verdict.get("keep")) if verdict else None,
        "s": verdict.get("score") if verdict else None, "r": kinds, "f": flags,
        "tu": trajectory.get("turns", 0), "c": len(calls), "e": sum(bool(c.get("is_error")) for c in calls),
        "fa": sum(bool(c.get("fault")) for c in calls), "g": goal[:GOAL_CHARS],
        "q": " ".join(map(str, searchable)).lower(),
    }


def trajectory_detail(run: Run, trajectory: Row) -> dict[str, Any]:
    task = run.task_of(trajectory)
    changes, more = state_diff(task.get("initial_state", {}), trajectory.get("final_state", {}))
    runtimes = {str(c.get("call_id", "")): run.call_runtime(trajectory, c) for c in trajectory.get("tool_calls", [])}
    return {"t": trajectory, "v": run.verdicts.get(trajectory.get("id", "")), "d": changes, "dm": more,
            "rt": {call_id: {"runtime": rt, "traced": traced} for call_id, (rt, traced) in runtimes.items()}}


def task_row(run: Run, task: Row, trajectories: list[int]) -> dict[str, Any]:
    agent = run.agent_of(task)
    return {"id": task.get("id", ""), "ag": agent.get("name", ""), "dom": run.domain_of(task),
            "ts": run.toolsets_of(agent), "d": task.get("difficulty", ""), "g": str(task.get("goal", ""))[:GOAL_CHARS],
            "n": len(task.get("rubric", [])), "ga": len(task.get("gold_actions", [])),
            "as": len(task.get("assertions", [])), "v": bool(task.get("validated")), "tr": trajectories}


def error_row(index: int, error: Row) -> dict[str, Any]:
    return {"i": index, "st": error.get("stage", ""), "ty": error.get("error_type", ""),
            "m": str(error.get("message", ""))[:MESSAGE_CHARS], "u": error.get("unit", "")}


def pack(data: Any) -> bytes:
    # mtime=0: the same run gives the same bytes
    return gzip.compress(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode(), compresslevel=6, mtime=0)
