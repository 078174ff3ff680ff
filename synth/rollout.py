"""Rollouts: the user simulator drives the agent, whose tool calls run in a per-episode sandbox.

An episode is all or nothing: it returns one Trajectory, or raises and is recorded as an error and
redone whole on resume. No half trajectory is ever written.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from sandboxes.base import provision
from synth.hashing import content_hash
from synth.pipeline import Context, StageStats, Unit, run_units
from synth.records import Agent, Task, ToolCallTrace, Trajectory
from synth.user_sim import UserSimulator
from tools.simulator import SimulatedToolset, ToolOutcome
from tools.spec import ToolSpec


async def make_rollouts(ctx: Context) -> StageStats:
    tools = {t.id: t for t in ctx.store.read("tools")}
    agents = {a.id: a for a in ctx.store.read("agents")}
    units = [
        Unit(content_hash([task.id, sample]), (task, sample))
        for task in ctx.store.read("tasks")
        for sample in range(ctx.cfg.rollout.samples_per_task)
    ]

    async def work(unit: Unit[tuple[Task, int]]) -> list[Trajectory]:
        task, sample = unit.payload
        agent = agents[task.agent_id]
        specs = [tools[i] for i in agent.tool_ids if i in tools]
        return [await run_episode(ctx, unit.id, task, agent, specs, sample)]

    return await run_units(ctx, "rollout", "trajectories", units, work, ctx.cfg.rollout.concurrency)


async def run_episode(ctx: Context, unit_id: str, task: Task, agent: Agent, specs: list[ToolSpec],
                      sample: int) -> Trajectory:
    cfg = ctx.cfg.rollout
    seed = ctx.seed_for("episode", task.id, sample)
    started = time.monotonic()
    async with asyncio.timeout(cfg.episode_timeout_s):
        async with provision(cfg.sandbox, labels={"synth.run": ctx.cfg.name, "synth.episode": unit_id}) as sandbox:
            runtime = SimulatedToolset(ctx.llm, specs, sandbox, seed=seed)
            await runtime.reset(task.initial_state)
            episode = _Episode(ctx, agent, specs, runtime, seed)
            user = UserSimulator(ctx.llm, task, seed=seed)
            episode.messages.append({"role": "user", "content": await user.opening()})
            stopped, turns = False, 0
            while turns < cfg.max_turns:
                turns += 1
                await episode.agent_turn(turns)
                text, stopped = await user.reply(episode.messages[1:])
                if stopped or turns == cfg.max_turns:
                    break  # the closing user message is not kept: nothing answers it
                episode.messages.append({"role": "user", "content": text})
            final_state = await runtime.snapshot()
    return Trajectory(
        unit=unit_id, task_id=task.id, agent_id=agent.id, sample=sample, seed=seed, messages=episode.messages,
        tools=[s.to_openai() for s in specs], tool_calls=episode.traces, final_state=final_state,
        user_stopped=stopped, turns=turns, duration_s=round(time.monotonic() - started, 3),
    )


class _Episode:
    """The agent side of one episode: messages so far and the trace of tool calls."""

    def __init__(self, ctx: Context, agent: Agent, specs: list[ToolSpec], runtime: SimulatedToolset, seed: int):
        self.ctx, self.runtime, self.seed = ctx, runtime, seed
        self.tools = [s.to_openai() for s in specs]
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": agent.system_prompt}]
        self.traces: list[ToolCallTrace] = []

    async def agent_turn(self, turn: int) -> None:
        """Agent steps until it answers in text; after max_tool_steps it must answer without tools."""
        for step in range(self.ctx.cfg.rollout.max_tool_steps + 1):
            offer = self.tools if step < self.ctx.cfg.rollout.max_tool_steps else None
            reply = await self.ctx.llm.chat(self.messages, tools=offer, seed=self.seed + len(self.messages))
            message = self._assistant_message(reply.message)
            self.messages.append(message)
            if not message.get("tool_calls"):
                return
            for call in message["tool_calls"]:
                self.messages.append(await self._run_tool(call, turn))

    def _assistant_message(self, raw: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": raw.get("content") or ""}
        calls = []
        for call in raw.get("tool_calls") or []:
            function = call.get("function") or {}
            arguments = function.get("arguments")
            calls.append({
                "id": f"call_{len(self.traces) + len(calls)}",  # unique per trajectory; servers' ids may repeat
                "type": "function",
                "function": {"name": function.get("name", ""),
                             "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments or {})},
            })
        if calls:
            message["tool_calls"] = calls
        return message

    async def _run_tool(self, call: dict[str, Any], turn: int) -> dict[str, Any]:
        name, raw_args = call["function"]["name"], call["function"]["arguments"]
        started = time.monotonic()
        try:
            arguments = json.loads(raw_args or "{}")
        except json.JSONDecodeError as exc:
            outcome = ToolOutcome(text=f"Error: arguments are not valid JSON ({exc.msg})", is_error=True)
        else:
            outcome = await self.runtime.call(name, arguments)
        self.traces.append(ToolCallTrace(call_id=call["id"], name=name, arguments=raw_args, result=outcome.text,
                                         is_error=outcome.is_error, fault=outcome.fault,
                                         latency_s=round(time.monotonic() - started, 4), turn=turn))
        return {"role": "tool", "tool_call_id": call["id"], "name": name, "content": outcome.text}
