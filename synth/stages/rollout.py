"""The rollout stage (`synth rollout`): one episode per (task, sample) unit (synth/episode.py), in
this process or spread over `rollout.workers` processes (synth/workers.py). Its manifest section
`user_flags` counts the user simulator's self-check flags over every trajectory of the run."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Awaitable, Callable

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
from tools.serving import Serving


async def run(ctx: Context) -> StageStats:
    stats = await make_rollouts(ctx)
    stats.manifest["user_flags"] = user_flag_counts(ctx.store.read("trajectories"))
    return stats


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

    def served_by(task: Task) -> Implementation | None:
        return serving.implementation(agents[task.agent_id])

    async with AsyncExitStack() as stack:
        done = ctx.store.done_units("trajectories")
        pending = [u for u in units if u.id not in done]  # a resumed, finished stage starts no pool
        size = ctx.cfg.rollout.sandbox.pool_size  # 0 where the backend does not pool (k8s)
        if pool is None and size and pending:
            pool = await stack.enter_async_context(
                WarmPool(ctx.cfg.rollout.sandbox, size=size, labels=ctx.sandbox_labels()))
            executable = sum(served_by(u.payload[0]) is not None for u in pending)
            await warm_hosts(pool, min(pool.size, executable))
        if ready is not None:
            await ready()

        async def work(unit: Unit[tuple[Task, int]]) -> list[Trajectory]:
            task, sample = unit.payload
            agent = agents[task.agent_id]
            specs = [tools[i] for i in agent.tool_ids if i in tools]
            return [await run_episode(
                ctx.llm, ctx.cfg.rollout, task, agent, specs, seed=ctx.seed_for("episode", task.id, sample),
                labels=ctx.sandbox_labels(**{"synth.episode": unit.id}), unit_id=unit.id, sample=sample,
                impl=served_by(task), pool=pool)]

        return await run_units(ctx, "rollout", "trajectories", units, work, ctx.cfg.rollout.concurrency)
