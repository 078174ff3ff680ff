"""Rollouts: the user simulator drives the agent, whose tool calls run in a per-episode sandbox.

An episode is all or nothing: it returns one Trajectory, or raises and is recorded as an error and
redone whole on resume. No half trajectory is ever written.

Several tool calls in one agent message run concurrently (their results keep the message's
order); each call has its own time limit (`rollout.tool_timeout_s`), and a call that runs out is
an error result the agent sees, not a failed episode. `pass_report` turns the N samples per task
and their verdicts into pass@k and pass^k.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from math import comb
from contextlib import AsyncExitStack
from typing import Any, Awaitable, Callable, Iterable

from sandboxes import provision
from sandboxes.pool import WarmPool
from synth.core.hashing import content_hash
from synth.context import Context
from synth.core.units import StageStats, Unit, run_units
from synth.core.shard import in_shard
from synth.core.records import Agent, Implementation, Task, ToolCallTrace, ToolSpec, Trajectory, Verdict
from synth.user_sim import PREMATURE_STOP, UserSimulator, count_usage, premature_stop
from synth.workers import run_in_workers
from tools.executable import warm_hosts
from tools.runtime import ToolRuntime, call_tool
from tools.serving import Serving, tool_runtime

# Always present in Trajectory.usage. Tool-simulator calls go through LLM.structured, which does not
# return token counts: they are in the stage's usage in manifest.json, not here.
USAGE_KEYS = ("agent_calls", "user_calls", "cached_calls", "prompt_tokens", "completion_tokens")


async def make_rollouts(ctx: Context, pool: WarmPool | None = None, *, only: set[str] | None = None,
                        ready: Callable[[], Awaitable[None]] | None = None) -> StageStats:
    """The rollout stage. `pool`: a started warm pool to borrow sandboxes from (the caller's to close);
    by default one of `rollout.sandbox.pool_size` is started here when there is work left, with the
    tool hosts of its sandboxes when episodes will run executable toolsets. With `rollout.workers`
    > 1 the episodes are spread over worker processes (synth/workers.py), each of which calls this
    with `only` (its units) and `ready` (awaited once its pool is warm, before its first episode)."""
    serving = Serving.of(ctx.store)
    tools = serving.tools
    agents = {a.id: a for a in ctx.store.read("agents")}
    units = [
        Unit(content_hash([task.id, sample]), (task, sample))
        for task in ctx.store.read("tasks")
        for sample in range(ctx.cfg.rollout.samples_per_task)
    ]
    if ctx.shard:  # only rollouts are split; tools, agents and tasks repeat identically in every shard
        units = [u for u in units if in_shard(u.id, *ctx.shard)]
    if only is not None:
        units = [u for u in units if u.id in only]
    elif ctx.cfg.rollout.workers > 1:
        return await run_in_workers(ctx, "rollout", "trajectories", units)

    def served_by(task: Task) -> Implementation | None:
        return serving.implementation(agents[task.agent_id])

    async with AsyncExitStack() as stack:
        done = ctx.store.done_units("trajectories")
        pending = [u for u in units if u.id not in done]  # a resumed, finished stage starts no pool
        if pool is None and _pool_size(ctx) and pending:
            pool = await stack.enter_async_context(_warm_pool(ctx))
            executable = sum(served_by(u.payload[0]) is not None for u in pending)
            await warm_hosts(pool, min(pool.size, executable))
        if ready is not None:
            await ready()

        async def work(unit: Unit[tuple[Task, int]]) -> list[Trajectory]:
            task, sample = unit.payload
            agent = agents[task.agent_id]
            specs = [tools[i] for i in agent.tool_ids if i in tools]
            return [await run_episode(ctx, unit.id, task, agent, specs, sample, served_by(task), pool=pool)]

        return await run_units(ctx, "rollout", "trajectories", units, work, ctx.cfg.rollout.concurrency)


def _pool_size(ctx: Context) -> int:
    return ctx.cfg.rollout.sandbox.pool_size  # 0 where the backend does not pool (k8s)


def _warm_pool(ctx: Context) -> WarmPool:
    return WarmPool(ctx.cfg.rollout.sandbox, size=_pool_size(ctx), labels={"synth.run": ctx.cfg.name})


async def run_episode(ctx: Context, unit_id: str, task: Task, agent: Agent, specs: list[ToolSpec],
                      sample: int, impl: Implementation | None = None, pool: WarmPool | None = None) -> Trajectory:
    cfg = ctx.cfg.rollout
    seed = ctx.seed_for("episode", task.id, sample)
    usage: Counter[str] = Counter({key: 0 for key in USAGE_KEYS})
    started = time.monotonic()
    async with asyncio.timeout(cfg.episode_timeout_s):
        async with (provision(cfg.sandbox, labels={"synth.run": ctx.cfg.name, "synth.episode": unit_id},
                              pool=pool) as sandbox,
                    tool_runtime(specs, sandbox, impl=impl, llm=ctx.llm, seed=seed, fault_rate=cfg.fault_rate,
                                 process=cfg.tool_process) as runtime):
            await runtime.reset(task.initial_state)
            episode = _Episode(ctx, agent, specs, runtime, seed, usage)
            user = UserSimulator(ctx.llm, task, seed=seed, usage=usage)
            episode.messages.append({"role": "user", "content": await user.opening()})
            stopped, turns = False, 0
            while turns < cfg.max_turns:
                turns += 1
                await episode.agent_turn(turns)
                text, stopped = await user.reply(episode.messages[1:])
                if stopped or turns == cfg.max_turns:
                    break  # the closing user message is not kept: nothing answers it
                episode.messages.append({"role": "user", "content": text})
            final_state = await runtime.finish()
    flags = list(user.flags)
    if premature_stop(task, specs, episode.traces, stopped):
        flags.append(PREMATURE_STOP)
    return Trajectory(
        unit=unit_id, task_id=task.id, agent_id=agent.id, sample=sample, seed=seed, messages=episode.messages,
        tools=[s.to_openai() for s in specs], tool_calls=episode.traces, final_state=final_state,
        user_stopped=stopped, turns=turns, duration_s=round(time.monotonic() - started, 3),
        user_flags=flags, usage=dict(usage),
    )


class _Episode:
    """The agent side of one episode: messages so far and the trace of tool calls."""

    def __init__(self, ctx: Context, agent: Agent, specs: list[ToolSpec], runtime: ToolRuntime, seed: int,
                 usage: Counter[str]):
        self.ctx, self.runtime, self.seed, self.usage = ctx, runtime, seed, usage
        self.tools = [s.to_openai() for s in specs]
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": agent.system_prompt}]
        self.traces: list[ToolCallTrace] = []

    async def agent_turn(self, turn: int) -> None:
        """Agent steps until it answers in text; after max_tool_steps it must answer without tools."""
        for step in range(self.ctx.cfg.rollout.max_tool_steps + 1):
            offer = self.tools if step < self.ctx.cfg.rollout.max_tool_steps else None
            message = await self._agent_step(offer)
            self.messages.append(message)
            if not message.get("tool_calls"):
                return
            # All calls of one message run at once; every one completes (or times out) before the
            # first failure is raised, so no call outlives the episode's sandbox.
            results = await asyncio.gather(*(self._run_tool(c, turn) for c in message["tool_calls"]),
                                           return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            for tool_message, trace in results:  # type: ignore[misc]
                self.messages.append(tool_message)
                self.traces.append(trace)

    async def _agent_step(self, offer: list[dict[str, Any]] | None) -> dict[str, Any]:
        """One agent reply. An empty one (no text, no call: small models do this when offered tools)
        is asked again once without tools, so the conversation gets an answer it can go on from."""
        for tools in (offer, None) if offer else (None,):
            reply = await self.ctx.llm.chat(self.messages, tools=tools, seed=self.seed + len(self.messages))
            count_usage(self.usage, reply, "agent_calls")
            message = self._assistant_message(reply.message)
            if message["content"].strip() or message.get("tool_calls"):
                break
        return message

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

    async def _run_tool(self, call: dict[str, Any], turn: int) -> tuple[dict[str, Any], ToolCallTrace]:
        name, raw_args = call["function"]["name"], call["function"]["arguments"]
        started = time.monotonic()
        outcome = await call_tool(self.runtime, name, raw_args, self.ctx.cfg.rollout.tool_timeout_s)
        trace = ToolCallTrace(call_id=call["id"], name=name, arguments=raw_args, result=outcome.text,
                              is_error=outcome.is_error, fault=outcome.fault,
                              latency_s=round(time.monotonic() - started, 4), turn=turn)
        return {"role": "tool", "tool_call_id": call["id"], "name": name, "content": outcome.text}, trace


# ---------------------------------------------------------------- pass@k over samples per task


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chance that at least one of k samples passes, given c of n passed (Chen et al. 2021, unbiased)."""
    _check(n, c, k)
    return 1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """Chance that all k samples pass, given c of n passed (tau-bench's pass^k): C(c,k) / C(n,k)."""
    _check(n, c, k)
    return comb(c, k) / comb(n, k)


def _check(n: int, c: int, k: int) -> None:
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")


def pass_report(trajectories: Iterable[Trajectory], verdicts: Iterable[Verdict]) -> dict[str, Any]:
    """pass@k and pass^k per task and their means over tasks, k = 1..samples; a sample passes when
    its verdict keeps it. Trajectories without a verdict (judge failed) are left out and counted."""
    kept = {v.trajectory_id: v.keep for v in verdicts}
    outcomes: dict[str, list[bool]] = {}
    unjudged = 0
    for trajectory in trajectories:
        if trajectory.id in kept:
            outcomes.setdefault(trajectory.task_id, []).append(kept[trajectory.id])
        else:
            unjudged += 1
    metrics = {"pass@k": pass_at_k, "pass^k": pass_hat_k}
    exact = {task_id: {name: [f(len(o), sum(o), k) for k in range(1, len(o) + 1)] for name, f in metrics.items()}
             for task_id, o in sorted(outcomes.items())}
    ks = list(range(1, max((len(o) for o in outcomes.values()), default=0) + 1))
    # A task counts towards the mean at k only when it has at least k judged samples.
    mean = {name: {str(k): round(_mean([v[name][k - 1] for v in exact.values() if len(v[name]) >= k]), 4)
                   for k in ks} for name in metrics}
    tasks = {task_id: {"n": len(outcomes[task_id]), "c": sum(outcomes[task_id]),
                       **{name: {str(k): round(v, 4) for k, v in enumerate(values, 1)} for name, values in m.items()}}
             for task_id, m in exact.items()}
    return {"tasks_judged": len(tasks), "unjudged_trajectories": unjudged, "k": ks, "mean": mean, "tasks": tasks}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
