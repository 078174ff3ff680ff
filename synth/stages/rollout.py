"""The rollout stage (`synth rollout`): one episode per (task, sample) unit (synth/episode.py), in
this process or spread over `rollout.workers` processes (synth/workers.py). Its manifest sections
`user_flags` (the user simulator's self-check flags) and `tool_runtimes` (tool calls answered by
real servers, executable implementations and the simulator) count over every trajectory of the run."""

from __future__ import annotations

from collections import Counter
from contextlib import AsyncExitStack
from typing import Any, Awaitable, Callable

from sandboxes.pool import WarmPool
from synth.context import Context
from synth.core.hashing import content_hash
from synth.core.records import Implementation, Task, Trajectory
from synth.core.shard import in_shard
from synth.core.units import StageStats, Unit, run_units
from synth.episode import run_episode
from synth.user_sim import user_flag_counts
from synth.workers import run_in_workers
from tools.executable import warm_hosts
from tools.launch import with_binds
from tools.real import warm_servers
from tools.serving import Serving


async def run(ctx: Context) -> StageStats:
    stats = await make_rollouts(ctx)
    trajectories = ctx.store.read("trajectories")
    stats.manifest["user_flags"] = user_flag_counts(trajectories)
    stats.manifest["tool_runtimes"] = runtime_counts(trajectories)
    return stats


def runtime_counts(trajectories: list[Trajectory]) -> dict[str, Any]:
    """Tool calls per runtime that answered them ("unrecorded": trajectories written before traces said)."""
    counts = Counter(call.runtime or "unrecorded" for t in trajectories for call in t.tool_calls)
    return {"calls": dict(sorted(counts.items())), "total": sum(counts.values())}


async def make_rollouts(ctx: Context, pool: WarmPool | None = None, *, only: set[str] | None = None,
                        ready: Callable[[], Awaitable[None]] | None = None) -> StageStats:
    """The episodes not done yet. `pool`: a started warm pool to borrow sandboxes from (the caller's
    to close); by default one of `rollout.sandbox.pool_size` is started here when there is work
    left, with the tool hosts of its sandboxes when episodes will run executable toolsets. With
    `rollout.workers` > 1 the episodes are spread over worker processes (synth/workers.py), each of
    which calls this with `only` (its units) and `ready` (awaited once its pool is warm, before its
    first episode)."""
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

    real = {agent.id: serving.real(agent) for agent in agents.values()}

    def served_by(task: Task) -> Implementation | None:
        agent = agents[task.agent_id]
        return serving.rest_implementation(agent) if real[agent.id] else serving.implementation(agent)

    async with AsyncExitStack() as stack:
        done = ctx.store.done_units("trajectories")
        pending = [u for u in units if u.id not in done]  # a resumed, finished stage starts no pool
        launches = {p.launch.key: p.launch for u in pending for p in real[u.payload[0].agent_id]}
        # A local sandbox must see the real servers' installs: bound read-only.
        rollout_cfg = ctx.cfg.rollout.model_copy(
            update={"sandbox": with_binds(ctx.cfg.rollout.sandbox, list(launches.values()))})
        size = rollout_cfg.sandbox.pool_size  # 0 where the backend does not pool (k8s)
        if pool is None and size and pending:
            pool = await stack.enter_async_context(
                WarmPool(rollout_cfg.sandbox, size=size, labels=ctx.sandbox_labels()))
            executable = sum(served_by(u.payload[0]) is not None for u in pending)
            await warm_hosts(pool, min(pool.size, executable))
            if rollout_cfg.tool_process == "shared":
                with_real = sum(bool(real[u.payload[0].agent_id]) for u in pending)
                await warm_servers(pool, list(launches.values()), min(pool.size, with_real))
        if ready is not None:
            await ready()

        async def work(unit: Unit[tuple[Task, int]]) -> list[Trajectory]:
            task, sample = unit.payload
            agent = agents[task.agent_id]
            specs = [tools[i] for i in agent.tool_ids if i in tools]
            return [await run_episode(
                ctx.llm, rollout_cfg, task, agent, specs, seed=ctx.seed_for("episode", task.id, sample),
                labels=ctx.sandbox_labels(**{"synth.episode": unit.id}), unit_id=unit.id, sample=sample,
                impl=served_by(task), pool=pool, real=real[agent.id])]

        return await run_units(ctx, "rollout", "trajectories", units, work, ctx.cfg.rollout.concurrency)
