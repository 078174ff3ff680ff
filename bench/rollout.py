"""Rollout throughput against a fast scripted endpoint: synth's rollout loop vs a bare aiohttp loop.

    python -m bench.rollout [--concurrency 1 32 256 512] [--latency-ms 200] [--pool-size N]

Starts the scripted endpoint (`python -m bench.fake_server`: tests.fake_openai with fixed replies,
200 ms per request) as a separate process on loopback, then for each concurrency c runs, back to
back:

- `floor`: a bare aiohttp loop sending the same request sequence per episode (the bodies synth
  sent in one captured episode, same count and sizes, one after another; json.dumps before and
  json.loads after each call, nothing else): what a Python harness cannot beat here;
- `synth`: the real rollout stage, `synth.stages.rollout.make_rollouts` on a fresh run dir with
  tools/agents/tasks/implementations written directly: user simulator, agent, response cache,
  run store, and tools through ExecutableToolset over MCP (the notes fixture's passing
  Implementation, `tests/fixtures/toolsets/notes/`) in a local sandbox with isolation none,
  optionally from a warm pool (`--pool-size`);
- `real`: the same stage over a real MCP server (`--real-server`: mcp-server-git, or the npm
  memory server) imported from the catalog, each task seeding it (git: a repository with one
  commit), the agent calling git_status / read_graph: RealToolset over the official client, the
  servers resident in the pooled sandboxes (started while the pool warms), each episode
  rebuilding its seed and snapshotting it (two short execs).

An episode makes 10 LLM calls one after another (6 agent calls, 4 user-simulator calls; see
bench/fake_server.py), so ideal = c / (10 x latency) episodes/s; ratio = measured / ideal.
`cpu ms/call` = the harness's CPU time (all threads, plus its waited-for children: the
tool hosts, their episode processes with per_episode, sandbox helpers) / LLM calls; the children's
share is also shown alone.
With 2+ CPUs the fake server is pinned to CPU 1 and the harness to CPU 0 (its children inherit
CPU 0). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import os
import pstats
import sys
import tempfile
import time
import warnings
from pathlib import Path

import aiohttp

from bench.endpoint import REPO, child_pids, cpu_seconds, free_port, start_server
from bench.fake_server import handler
from synth.config import RolloutConfig, RunConfig
from synth.core.records import Agent, Criterion, Implementation, Task, ToolSpec
from synth.run import open_run
from synth.stages.rollout import make_rollouts
from tests.fake_openai import FakeOpenAI

NOTES = REPO / "tests" / "fixtures" / "toolsets" / "notes"
MAX_TURNS, MAX_TOOL_STEPS = 3, 1  # 3 x (tool call + answer) = 6 agent calls; opening + 3 replies = 4 user calls
SERVER_MB = 25  # RSS of one resident tool host (python + jsonschema; 13 MB of it anonymous), measured
REAL_MB = {"git": 50, "memory": 30}  # anonymous memory of one resident real server (smaps_rollup), measured
REAL_SEEDS = {"git": {"commits": [{"message": "Initial commit", "files": {"README.md": "# Bench\n"}}]},
              "memory": {"entities": [{"name": "Bench", "entityType": "thing", "observations": ["seeded"]}]}}


def tree_cpu(skip: int | None) -> tuple[float, float]:
    """(this process, all its descendants but `skip`, the fake server) CPU seconds so far: reaped
    ones through their waiters' counters, live ones (rollout workers, tool hosts) read from /proc."""
    t = os.times()
    pending = [pid for pid in child_pids() if pid != skip]
    descendants = t.children_user + t.children_system
    while pending:
        pid = pending.pop()
        try:
            descendants += cpu_seconds(pid, waited=True)
            pending += child_pids(pid)
        except (OSError, IndexError):
            pass  # it exited meanwhile: its waiter's counters have it
    return t.user + t.system, descendants


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def records(episodes: int, tag: str) -> tuple[list[ToolSpec], Agent, list[Task], Implementation]:
    """The notes toolset with its passing Implementation (as tests/test_gold.py builds it)."""
    specs = [ToolSpec.model_validate({**t, "toolset": "notes", "toolset_id": "id_notes", "domain": "notes",
                                      "state_model": "notes by id"})
             for t in json.loads((NOTES / "tools.json").read_text())]
    impl = Implementation(toolset_id="id_notes", toolset="notes", domain="notes", tool_ids=[s.id for s in specs],
                          module=(NOTES / "impl.py").read_text(), tests=(NOTES / "tests.py").read_text(),
                          passed=True, rounds=1)
    agent = Agent(toolset_id="id_notes", toolset="notes", domain="notes", tool_ids=[s.id for s in specs],
                  name="Jot", system_prompt="You are Jot, a notes assistant. Keep answers short.")
    tasks = [Task(agent_id=agent.id, goal=f"List my notes ({tag} #{i}).", persona="A busy teacher.",
                  user_facts=[f"Request number: {tag}-{i}"], rubric=[Criterion(text="The assistant lists notes.")])
             for i in range(episodes)]
    return specs, agent, tasks, impl


def real_records(episodes: int, tag: str, server: str) -> tuple[list[ToolSpec], Agent, list[Task]]:
    """The catalog server's tools (imported for real), an agent over them, one seeded task per episode."""
    from tools.catalog import by_label, catalog_sources, ensure_installed
    from tools.mcp_import import import_tools

    asyncio.run(ensure_installed([by_label(server)]))
    [result] = asyncio.run(import_tools(catalog_sources([by_label(server)]), None))
    specs = result.tools
    agent = Agent(toolset_id=specs[0].toolset_id, toolset=specs[0].toolset, domain=server,
                  tool_ids=[s.id for s in specs], name="Bench", system_prompt="You are a bench agent.")
    tasks = [Task(agent_id=agent.id, goal=f"Check the state ({tag} #{i}).", persona="A busy developer.",
                  initial_state=REAL_SEEDS[server], user_facts=[f"Request number: {tag}-{i}"],
                  rubric=[Criterion(text="The assistant checks.")]) for i in range(episodes)]
    return specs, agent, tasks


def run_config(base_url: str, runs_dir: str, concurrency: int, pool_size: int, workers: int = 1,
               tool_process: str | None = None, isolation: str = "none") -> RunConfig:
    return RunConfig.model_validate({
        "name": f"bench-c{concurrency}", "runs_dir": runs_dir,
        "llm": {"base_url": base_url, "model": "fake", "concurrency": max(concurrency, 1), "max_retries": 0},
        "rollout": {"max_turns": MAX_TURNS, "max_tool_steps": MAX_TOOL_STEPS, "concurrency": concurrency,
                    "workers": workers, **({"tool_process": tool_process} if tool_process else {}),
                    "sandbox": {"type": "local", "isolation": isolation, "pool_size": pool_size}},
    })


async def synth_row(base_url: str, concurrency: int, episodes: int, pool_size: int, latency_s: float,
                    server_pid: int | None, workers: int, tool_process: str, isolation: str = "none",
                    real: dict | None = None) -> dict:
    """The rollout stage as `synth rollout` runs it. The clock starts when the episodes do (ctx.on_start:
    after the pool, its tool hosts or real servers and the worker processes started: `warm s`), CPU is
    counted from there. `real`: {"records": real_records(...)} for the real-server row."""
    tag = f"c{concurrency}-{time.time_ns()}"  # fresh tasks: nothing from an earlier row in any cache
    kind_name = "real" if real else "synth"
    with tempfile.TemporaryDirectory(prefix="synth-bench-") as runs_dir:
        cfg = run_config(base_url, runs_dir, concurrency, pool_size, workers, tool_process, isolation)
        async with open_run(cfg, quiet=True) as ctx:
            if real:
                specs, agent, base_tasks = real["records"]
                tasks = [Task.model_validate({**t.model_dump(exclude={"id"}), "goal": f"{t.goal} {tag}"})
                         for t in base_tasks[:episodes]]
                recs_of = (("tools", specs), ("agents", [agent]), ("tasks", tasks))
            else:
                specs, agent, tasks, impl = records(episodes, tag)
                recs_of = (("tools", specs), ("agents", [agent]), ("tasks", tasks), ("implementations", [impl]))
            for kind, recs in recs_of:
                ctx.store.append(kind, recs)
            mark: dict = {}
            ctx.on_start = lambda: mark.update(time=time.perf_counter(), cpu=tree_cpu(server_pid),
                                               server=cpu_seconds(server_pid) if server_pid else 0.0)
            called = time.perf_counter()
            stats = await make_rollouts(ctx)
            end, (own, descendants) = time.perf_counter(), tree_cpu(server_pid)
            server = (cpu_seconds(server_pid) - mark["server"]) if server_pid else 0.0
            seconds, warm_s = end - mark["time"], mark["time"] - called
            trajectories = ctx.store.read("trajectories")
            errors = ctx.store.read("errors")
    if stats.failed or len(trajectories) != episodes:  # reported in the table, the other rows still run
        why = errors[0].message.split(";")[0][-120:] if errors else "no trajectory"
        return {"kind": kind_name, "concurrency": concurrency, "episodes": episodes, "failed": stats.failed or episodes,
                "why": f"{errors[0].error_type if errors else ''}: {why}", "seconds": seconds}
    calls = ctx.meter.total().requests
    agent_calls = sum(t.usage["agent_calls"] for t in trajectories)
    user_calls = sum(t.usage["user_calls"] for t in trajectories)
    tool_calls = sum(len(t.tool_calls) for t in trajectories)
    if any(t.usage["agent_calls"] != 6 for t in trajectories) or calls != agent_calls + user_calls:
        raise SystemExit(f"episodes are not shaped as planned: {agent_calls} agent, {user_calls} user, {calls} total")
    if real and any(c.runtime != "real" or c.is_error for t in trajectories for c in t.tool_calls):
        raise SystemExit("the real row's tool calls did not all succeed on the real server")
    return _row(kind_name, concurrency, episodes, seconds, calls, latency_s, own - mark["cpu"][0],
                descendants - mark["cpu"][1],
                server, agent=agent_calls / episodes, user=user_calls / episodes, tools=tool_calls / episodes,
                warm_s=warm_s)


async def floor_row(base_url: str, bodies: list[dict], concurrency: int, episodes: int, latency_s: float,
                    server_pid: int | None) -> dict:
    url = f"{base_url}/chat/completions"
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-no-key"}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(episodes):
        queue.put_nowait(i)
    calls = [0]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def episode(i: int) -> None:
            for body in bodies:  # one after another, as the rollout loop sends them
                data = json.dumps({**body, "seed": body.get("seed", 0) + i}).encode()
                async with session.post(url, data=data, headers=headers) as response:
                    response.raise_for_status()
                    json.loads(await response.read())
                calls[0] += 1

        async def worker() -> None:
            while not queue.empty():
                await episode(queue.get_nowait())

        server = cpu_seconds(server_pid) if server_pid else 0.0
        before, started = tree_cpu(server_pid), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(concurrency, episodes))))
        seconds = time.perf_counter() - started
        after = tree_cpu(server_pid)
        server = (cpu_seconds(server_pid) - server) if server_pid else 0.0
    return _row("floor", concurrency, episodes, seconds, calls[0], latency_s, after[0] - before[0],
                after[1] - before[1], server)


def _row(kind: str, concurrency: int, episodes: int, seconds: float, calls: int, latency_s: float, cpu: float,
         children: float, server: float, **shape: float) -> dict:
    per_episode = calls / episodes
    ideal = concurrency / (per_episode * latency_s)
    eps = episodes / seconds
    return {"kind": kind, "concurrency": concurrency, "episodes": episodes, "seconds": seconds, "eps": eps,
            "ideal": ideal, "ratio": eps / ideal, "calls": per_episode,
            "cpu_ms": 1000 * (cpu + children) / calls, "children_ms": 1000 * children / calls,
            "server_ms": 1000 * server / calls, **shape}


async def capture_bodies() -> list[dict]:
    """The request bodies of one synth episode (in order), from an in-process fake with the same replies."""
    async with FakeOpenAI(handler=handler) as fake:
        with tempfile.TemporaryDirectory(prefix="synth-bench-capture-") as runs_dir:
            async with open_run(run_config(fake.base_url, runs_dir, 1, 0), quiet=True) as ctx:
                specs, agent, tasks, impl = records(1, "capture")
                for kind, recs in (("tools", specs), ("agents", [agent]), ("tasks", tasks),
                                   ("implementations", [impl])):
                    ctx.store.append(kind, recs)
                await make_rollouts(ctx)
        return list(fake.requests)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32, 256, 512])
    parser.add_argument("--episodes", type=int, default=0,
                        help="episodes per row (default: max(waves x concurrency, --min-episodes))")
    parser.add_argument("--waves", type=int, default=8, help="episodes per row in units of the concurrency: with "
                        "few, the first wave's simultaneous start and the last one's tail weigh on the ratio")
    parser.add_argument("--min-episodes", type=int, default=4)
    parser.add_argument("--tool-process", choices=["shared", "per_episode"], nargs="+",
                        default=[RolloutConfig().tool_process],
                        help="rollout.tool_process of the synth rows, one synth row per value and concurrency, "
                        "run back to back (default: the config's default)")
    parser.add_argument("--isolation", choices=["none", "bwrap"], default="none",
                        help="rollout.sandbox.isolation of the synth rows (default none: the harness alone)")
    parser.add_argument("--workers", type=int, default=1, help="rollout.workers of the synth rows; with 2+ they "
                        "run on both CPUs (the floor stays on CPU 0, the fake server on CPU 1)")
    parser.add_argument("--latency-ms", type=float, default=200, help="the fake endpoint's latency per call")
    parser.add_argument("--pool-size", type=int, default=-1,
                        help="rollout.sandbox.pool_size (default -1: the row's concurrency; 0: no pool)")
    parser.add_argument("--rows", nargs="+", choices=["floor", "synth", "real"], default=["floor", "synth"],
                        help="floor: bare aiohttp; synth: executable toolset; real: a real MCP server (pooled)")
    parser.add_argument("--real-server", choices=sorted(REAL_SEEDS), default="git",
                        help="the catalog server of the real rows")
    parser.add_argument("--force", action="store_true",
                        help=f"run synth rows even when concurrency x {SERVER_MB} MB of tool hosts "
                        "exceeds 60%% of MemAvailable (skipped by default: the machine would swap or OOM)")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the synth rows into FILE (pstats) and print "
                        "the top functions by own time")
    parser.add_argument("--no-pin", action="store_true", help="do not pin harness and server to separate CPUs")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="LocalSandbox: tool processes are NOT isolated")
    logging.getLogger("sandboxes.local").setLevel(logging.ERROR)  # isolation none is the default here

    pin = not args.no_pin and {0, 1} <= os.sched_getaffinity(0)
    if pin:
        os.sched_setaffinity(0, {0})
    bodies = asyncio.run(capture_bodies())
    real_recs = None
    if "real" in args.rows:
        most = max(args.episodes or max(args.waves * c, args.min_episodes) for c in args.concurrency)
        real_recs = real_records(most, "real", args.real_server)
    profile = cProfile.Profile(time.process_time) if args.profile else None  # CPU, not wall: syscalls that wake a tool process are not charged to us
    latency_s = args.latency_ms / 1000
    port = free_port()
    server = start_server("bench.fake_server", port, args.latency_ms, pin)
    base_url = f"http://127.0.0.1:{port}/v1"
    rows, skipped, real_skipped = [], {}, {}
    try:
        for c in args.concurrency:
            episodes = args.episodes or max(args.waves * c, args.min_episodes)
            if "floor" in args.rows:
                if pin:
                    os.sched_setaffinity(0, {0})
                rows.append(asyncio.run(floor_row(base_url, bodies, c, episodes, latency_s, server.pid)))
                print(f"  floor at {c}: {rows[-1]['ratio']:.0%}, {rows[-1]['cpu_ms']:.2f} ms/call",
                      file=sys.stderr, flush=True)
            if "synth" in args.rows:
                need, have = min(c, episodes) * SERVER_MB, mem_available_mb()
                if need > 0.6 * have and not args.force:
                    for mode in args.tool_process:
                        skipped[(c, mode)] = f"skipped: needs ~{need / 1024:.0f} GB for {min(c, episodes)} tool " \
                                             f"hosts, {have / 1024:.0f} GB available (--force runs it)"
                    print(f"  synth at {c}: {skipped[(c, args.tool_process[0])]}", file=sys.stderr, flush=True)
                    continue
                pool = c if args.pool_size < 0 else args.pool_size
                for mode in args.tool_process:
                    if profile:
                        profile.enable()
                    if pin:
                        os.sched_setaffinity(0, {0, 1} if args.workers > 1 else {0})
                    row = asyncio.run(synth_row(base_url, c, episodes, pool, latency_s, server.pid, args.workers,
                                                mode, args.isolation))
                    if profile:
                        profile.disable()
                    if row.get("failed"):
                        skipped[(c, mode)] = f"{row['failed']} of {episodes} episodes failed after " \
                                             f"{row['seconds']:.0f} s ({row['why']})"
                        print(f"  synth {mode} at {c}: FAILED: {skipped[(c, mode)]}", file=sys.stderr, flush=True)
                        continue
                    rows.append({**row, "mode": mode})
                    print(f"  synth {mode} at {c}: {row['ratio']:.0%}, {row['cpu_ms']:.2f} ms/call",
                          file=sys.stderr, flush=True)
            if "real" in args.rows:
                need, have = min(c, episodes) * REAL_MB[args.real_server], mem_available_mb()
                if need > 0.6 * have and not args.force:
                    for mode in args.tool_process:
                        real_skipped[(c, mode)] = f"skipped: needs ~{need / 1024:.1f} GB for {min(c, episodes)} " \
                                                  f"servers, {have / 1024:.0f} GB available (--force runs it)"
                    print(f"  real at {c}: {real_skipped[(c, args.tool_process[0])]}", file=sys.stderr, flush=True)
                    continue
                pool = c if args.pool_size < 0 else args.pool_size
                for mode in args.tool_process:
                    if pin:
                        os.sched_setaffinity(0, {0, 1} if args.workers > 1 else {0})
                    row = asyncio.run(synth_row(base_url, c, episodes, pool, latency_s, server.pid, args.workers,
                                                mode, args.isolation, real={"records": real_recs}))
                    if row.get("failed"):
                        real_skipped[(c, mode)] = f"{row['failed']} of {episodes} episodes failed ({row['why']})"
                        print(f"  real {mode} at {c}: FAILED: {real_skipped[(c, mode)]}", file=sys.stderr, flush=True)
                        continue
                    rows.append({**row, "mode": mode})
                    print(f"  real {mode} at {c}: {row['ratio']:.0%}, {row['cpu_ms']:.2f} ms/call",
                          file=sys.stderr, flush=True)
    finally:
        server.terminate()
        server.wait()

    pool_text = "pool = concurrency" if args.pool_size < 0 else f"pool_size {args.pool_size}"
    print(f"rollout bench: {args.latency_ms:g} ms per LLM call, {len(bodies)} calls per episode "
          f"({MAX_TURNS} turns x (tool call + answer) = 6 agent + 4 user), ideal = concurrency / "
          f"(calls per episode x latency); synth: ExecutableToolset (notes) over MCP, local sandbox, {pool_text}, "
          f"isolation {args.isolation}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          + (f"fake server pinned to CPU 1, floor to CPU 0, synth ({args.workers} worker"
             f"{'s' if args.workers > 1 else ''}) to " + ("both" if args.workers > 1 else "CPU 0") if pin
             else "not pinned"))
    head = f"{'conc':>5} {'episodes':>8} | {'floor eps/s':>11} {'ratio':>6} {'cpu ms':>6} | {'tool_process':>12} " \
           f"{'synth eps/s':>11} {'ratio':>6} {'cpu ms':>6} {'(tools)':>7} {'warm s':>6} | {'synth/floor':>11} {'ideal':>7}"
    print(head)
    for c in args.concurrency:
        f = next((r for r in rows if r["concurrency"] == c and r["kind"] == "floor"), None)
        for mode in args.tool_process if "synth" in args.rows else ["-"]:
            s = next((r for r in rows if r["concurrency"] == c and r["kind"] == "synth" and r.get("mode") == mode),
                     None)
            any_row = f or s
            line = f"{c:>5} {any_row['episodes'] if any_row else '':>8} | "
            line += f"{f['eps']:>11.2f} {f['ratio']:>6.0%} {f['cpu_ms']:>6.2f} | " if f else f"{'-':>11} {'':>6} {'':>6} | "
            line += f"{mode:>12} "
            if s:
                line += f"{s['eps']:>11.2f} {s['ratio']:>6.0%} {s['cpu_ms']:>6.2f} {s['children_ms']:>7.2f} " \
                        f"{s['warm_s']:>6.1f} | "
            else:
                line += f"{'not run' if (c, mode) in skipped else '-':>11} {'':>6} {'':>6} {'':>7} {'':>6} | "
            line += f"{s['eps'] / f['eps']:>11.2f} " if f and s else f"{'-':>11} "
            line += f"{any_row['ideal']:>7.2f}" if any_row else ""
            print(line)
    for (c, mode), why in skipped.items():
        print(f"synth {mode} at {c}: {why}")
    if "real" in args.rows:
        print(f"real rows: mcp-server-{args.real_server if args.real_server == 'git' else 'memory (npm)'} over "
              f"MCP (official client), local sandbox, {pool_text}; with tool_process shared the servers stay "
              "resident in the pooled sandboxes, with per_episode each episode starts its own")
        print(f"{'conc':>5} {'mode':>12} | {'real eps/s':>10} {'ratio':>6} {'cpu ms':>6} {'(tools)':>7} {'warm s':>6} | "
              f"{'real/synth':>10} {'real/floor':>10}")
        for c in args.concurrency:
            f = next((r for r in rows if r["concurrency"] == c and r["kind"] == "floor"), None)
            for mode in args.tool_process:
                r, s = (next((x for x in rows if x["concurrency"] == c and x["kind"] == kind and x.get("mode") == mode),
                             None) for kind in ("real", "synth"))
                if r is None:
                    print(f"{c:>5} {mode:>12} | {'not run':>10}")
                    continue
                print(f"{c:>5} {mode:>12} | {r['eps']:>10.2f} {r['ratio']:>6.0%} {r['cpu_ms']:>6.2f} "
                      f"{r['children_ms']:>7.2f} {r['warm_s']:>6.1f} | "
                      + (f"{r['eps'] / s['eps']:>10.2f} " if s else f"{'-':>10} ")
                      + (f"{r['eps'] / f['eps']:>10.2f}" if f else f"{'-':>10}"))
        for (c, mode), why in real_skipped.items():
            print(f"real {mode} at {c}: {why}")
    server_ms = [r["server_ms"] for r in rows]
    print("ratio = eps/s / ideal; cpu ms = harness CPU (process + children) per LLM call; (tools) = the children's "
          f"share (MCP tool servers, sandbox helpers); fake server: {sum(server_ms) / max(len(server_ms), 1):.2f} "
          "ms CPU per call on average")
    if profile:
        profile.dump_stats(args.profile)
        stats = pstats.Stats(args.profile, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
