"""Rollout throughput against a fast scripted endpoint: how close is the harness to LLM-bound?

    python -m bench.rollout [--episodes 128] [--concurrency 8 64] [--latency-ms 200]

Starts the fake OpenAI server (`python -m tests.fake_openai`) as a separate process on loopback,
then, for each concurrency, runs the real rollout stage (`make_rollouts`: user simulator, agent,
SimulatedToolset in a local sandbox with isolation none, response cache, run store) on fresh
tasks. Every LLM call takes `latency_ms`, so an episode that makes C calls one after another
cannot take less than C x latency: the ideal is concurrency / (C x latency) episodes/s. It prints
measured vs ideal side by side, and the harness's CPU time per LLM call (this process only; the
fake server's CPU is shown apart, since both share the machine). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from synth.config import RunConfig
from synth.records import Agent, Criterion, Task
from synth.rollout import make_rollouts
from synth.run import open_run
from tools.spec import ToolSpec

REPO = Path(__file__).resolve().parents[1]
SCHEMA = {"type": "object", "properties": {"item_id": {"type": "string", "maxLength": 20}}, "required": ["item_id"]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of another process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def records(episodes: int) -> tuple[list[ToolSpec], Agent, list[Task]]:
    specs = [ToolSpec(name=name, description=f"{name.replace('_', ' ')} of a store item.", inputSchema=SCHEMA,
                      toolset_id="bench", domain="shop", state_model="items: id -> status")
             for name in ("get_item", "update_item")]
    agent = Agent(toolset_id="bench", toolset="bench", domain="shop", tool_ids=[s.id for s in specs], name="bot",
                  system_prompt="You help shop staff look up and update items.")
    tasks = [Task(agent_id=agent.id, goal=f"Update item number {i}.", persona="A shop clerk.",
                  user_facts=[f"Item id: it-{i}"], rubric=[Criterion(text="The assistant calls update_item.")])
             for i in range(episodes)]
    return specs, agent, tasks


async def measure(base_url: str, server_pid: int, args: argparse.Namespace, concurrency: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="synth-bench-") as runs_dir:
        cfg = RunConfig.model_validate({
            "name": f"bench-c{concurrency}", "runs_dir": runs_dir,
            "llm": {"base_url": base_url, "model": "fake", "concurrency": concurrency, "max_retries": 0},
            "rollout": {"max_turns": args.max_turns, "max_tool_steps": args.max_tool_steps,
                        "concurrency": concurrency, "sandbox": {"type": "local", "isolation": "none"}},
        })
        async with open_run(cfg, quiet=True) as ctx:
            specs, agent, tasks = records(args.episodes)
            for kind, recs in (("tools", specs), ("agents", [agent]), ("tasks", tasks)):
                ctx.store.append(kind, recs)
            server_cpu, cpu, started = cpu_seconds(server_pid), time.process_time(), time.perf_counter()
            stats = await make_rollouts(ctx)
            seconds = time.perf_counter() - started
            cpu, server_cpu = time.process_time() - cpu, cpu_seconds(server_pid) - server_cpu
            trajectories = ctx.store.read("trajectories")
    if stats.failed or len(trajectories) != args.episodes:
        raise SystemExit(f"concurrency {concurrency}: {stats.failed} episodes failed; see the errors above")
    calls = ctx.meter.total().requests
    per_episode = calls / args.episodes
    ideal = concurrency / (per_episode * args.latency_ms / 1000)
    measured = args.episodes / seconds
    agent_calls = sum(t.usage["agent_calls"] for t in trajectories) / args.episodes
    return {"concurrency": concurrency, "episodes": args.episodes, "seconds": seconds, "eps": measured,
            "ideal": ideal, "ratio": measured / ideal, "calls": per_episode, "agent_calls": agent_calls,
            "cpu_ms": 1000 * cpu / calls, "server_cpu_ms": 1000 * server_cpu / calls}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=128, help="episodes per concurrency setting")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 64], help="rollout.concurrency values")
    parser.add_argument("--latency-ms", type=float, default=200, help="the fake endpoint's latency per call")
    parser.add_argument("--max-turns", type=int, default=3, help="user turns per episode (2 agent calls each)")
    parser.add_argument("--max-tool-steps", type=int, default=1)
    parser.add_argument("--baseline", metavar="REV", help="run the LLM client of synth/llm.py at this git "
                        "revision instead of the current one (to compare before/after)")
    args = parser.parse_args(argv)
    if args.baseline:
        import synth.run
        from bench.llm_client import baseline_module

        synth.run.LLM = baseline_module(args.baseline).LLM  # open_run builds the client from this name
    warnings.filterwarnings("ignore", message="LocalSandbox: tool processes are NOT isolated")
    logging.getLogger("sandboxes.local").setLevel(logging.ERROR)  # isolation none is the point here

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.fake_openai", "--port", str(port),
                               "--latency-ms", str(args.latency_ms)], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the fake endpoint did not start")
            time.sleep(0.05)
        rows = [asyncio.run(measure(f"http://127.0.0.1:{port}/v1", server.pid, args, c)) for c in args.concurrency]
    finally:
        server.terminate()
        server.wait()

    print(f"rollout bench: {args.episodes} episodes per row, {args.latency_ms:g} ms per LLM call, "
          f"{os.cpu_count()} CPUs; ideal = concurrency / (LLM calls per episode x latency)")
    header = ("conc", "episodes", "secs", "eps/s", "ideal", "ratio", "calls/ep", "agent/ep", "cpu ms/call",
              "server ms/call")
    print("  ".join(f"{h:>{max(len(h), 8)}}" for h in header))
    for r in rows:
        values = (f"{r['concurrency']}", f"{r['episodes']}", f"{r['seconds']:.1f}", f"{r['eps']:.2f}",
                  f"{r['ideal']:.2f}", f"{r['ratio']:.0%}", f"{r['calls']:.1f}", f"{r['agent_calls']:.1f}",
                  f"{r['cpu_ms']:.2f}", f"{r['server_cpu_ms']:.2f}")
        print("  ".join(f"{v:>{max(len(h), 8)}}" for h, v in zip(header, values)))
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(f"concurrency {last['concurrency']} vs {first['concurrency']}: "
              f"{last['eps'] / first['eps']:.1f}x the episodes/s (ideal {last['ideal'] / first['ideal']:.1f}x)")


if __name__ == "__main__":
    main()
