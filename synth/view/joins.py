"""Link the raw records of a run: which task, agent, domain, toolsets and verdict a trajectory has.

Everything is read with `.get` and a default: a record of an older version (or a newer one) that
lacks a field still shows, with that field blank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from synth.view.rundir import RunFiles

Row = dict[str, Any]


@dataclass
class Run:
    files: RunFiles
    _toolsets: dict[str, list[str]] = field(default_factory=dict, repr=False)  # by agent id

    @cached_property
    def tools(self) -> dict[str, Row]:
        return _by_id(self.files["tools"])

    @cached_property
    def agents(self) -> dict[str, Row]:
        return _by_id(self.files["agents"])

    @cached_property
    def tasks(self) -> dict[str, Row]:
        return _by_id(self.files["tasks"])

    @cached_property
    def verdicts(self) -> dict[str, Row]:
        """By trajectory id (a later line wins, as a rerun's would)."""
        return {v.get("trajectory_id", v.get("unit", "")): v for v in self.files["verdicts"]}

    @cached_property
    def passing_tool_ids(self) -> set[str]:
        """Tools some passing implementation covers."""
        return {t for i in self.files["implementations"] if i.get("passed") for t in i.get("tool_ids", [])}

    @cached_property
    def trajectories_by_task(self) -> dict[str, list[Row]]:
        grouped: dict[str, list[Row]] = {}
        for trajectory in self.files["trajectories"]:
            grouped.setdefault(trajectory.get("task_id", ""), []).append(trajectory)
        return grouped

    def task_of(self, trajectory: Row) -> Row:
        return self.tasks.get(trajectory.get("task_id", ""), {})

    def agent_of(self, record: Row) -> Row:
        """The agent of a trajectory or a task (both carry agent_id)."""
        return self.agents.get(record.get("agent_id", ""), {})

    def agent_tools(self, agent: Row) -> list[Row]:
        return [self.tools[i] for i in agent.get("tool_ids", []) if i in self.tools]

    def toolsets_of(self, agent: Row) -> list[str]:
        """The toolsets an agent serves (decoy tools are not its toolsets)."""
        key = agent.get("id", "")
        if key not in self._toolsets:
            self._toolsets[key] = self._toolsets_of(agent)
        return self._toolsets[key]

    def _toolsets_of(self, agent: Row) -> list[str]:
        decoys = set(agent.get("distractor_tool_ids", []))
        names = [t.get("toolset", "") for t in self.agent_tools(agent) if t.get("id") not in decoys]
        names = list(dict.fromkeys(n for n in names if n))
        if names:
            return names
        return [n.strip() for n in str(agent.get("toolset", "")).split(" + ") if n.strip()]

    def domain_of(self, record: Row) -> str:
        agent = self.agent_of(record)
        if agent.get("domain"):
            return agent["domain"]
        tools = self.agent_tools(agent)
        return tools[0].get("domain", "") if tools else ""

    def inferred_runtime(self, agent: Row) -> str:
        """What a rollout of this agent ran on when traces did not say, by the rollout's rule: executable
        when passing implementations cover every tool it was offered (decoys included), else the LLM
        simulator. (Not seen from the files: a composite refused for a tool name two parts share.)"""
        tools = agent.get("tool_ids", [])
        return "executable" if tools and set(tools) <= self.passing_tool_ids else "simulated"

    def call_runtime(self, trajectory: Row, call: Row) -> tuple[str, bool]:
        """(runtime of one tool call, whether the trace said so rather than it being inferred)."""
        if call.get("runtime"):
            return str(call["runtime"]), True
        return self.inferred_runtime(self.agent_of(trajectory)), False


def _by_id(rows: list[Row]) -> dict[str, Row]:
    return {row.get("id", ""): row for row in rows}
