"""The LLM client alone against a fast scripted endpoint: CPU per call and fraction of LLM-bound.

    python -m bench.llm_client [--concurrency 32 64 128 256] [--seconds 3] [--latency-ms 200]
                               [--baseline REV] [--clients bare synth synth-cache ...]

Starts the fake OpenAI server (`python -m tests.fake_openai --latency-ms 200`) as a separate
process on loopback and, for each concurrency value, runs every client side by side: `concurrency`
workers make calls back to back, their starts spread over one latency; calls completed and CPU
time are counted over a steady-state window (`--seconds`) after a warm-up. Every call is an agent-like request (system prompt, a few turns, two tools,
a distinct seed, so the cache never hits and the server computes a fresh reply). Clients:

- `bare`: a bare aiohttp loop (json.dumps, session.post, read, json.loads): the floor;
- `stock`: `openai.AsyncOpenAI().chat.completions.create(...)` on its default httpx2 transport;
- `sdk-post`: the SDK on its aiohttp transport, a prebuilt body through `client.post(...)`;
- `synth`, `synth-cache`: `synth.core.llm.LLM.chat` without / with the response cache (a cold cache:
  every call misses and writes one file, as in a fresh run);
- `synth-ledger`: `LLM.chat` with the run's ledger (synth/core/budget.py), a price table and a
  budget it never reaches: the budget check before and the locked charge after every request;
- `base`, `base-cache`: the same, from `synth/core/llm.py` at git revision `--baseline REV` (a revision
  from before the restructure of issue #12, whose client was `synth/llm.py`, imports modules that are gone).

ideal = concurrency / latency calls/s; ratio = measured / ideal; cpu ms/call = this process's
CPU time (all threads) / calls. With 2+ CPUs the harness is pinned to CPU 0 and the fake server
to CPU 1 (`os.sched_setaffinity`), so the server does not steal the harness's core (other jobs on
the machine still may: the load average is printed). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import openai

from bench.endpoint import REPO, cpu_seconds, free_port, start_server
import synth.core.llm  # noqa: F401  (the current client: make_client looks it up in sys.modules)
from synth.core.budget import BudgetConfig, Ledger
from synth.core.cost import Price
from synth.core.llm_cache import ResponseCache
from synth.core.usage import UsageMeter

LABELS = {
    "bare": "bare aiohttp loop (floor)",
    "stock": "AsyncOpenAI create (httpx2)",
    "sdk-post": "SDK aiohttp + client.post",
    "synth": "synth LLM.chat",
    "synth-cache": "synth LLM.chat + cache",
    "synth-ledger": "synth LLM.chat + ledger (budget, prices)",
    "base": "LLM.chat @{rev}",
    "base-cache": "LLM.chat @{rev} + cache",
}
TOOLS = [
    {"type": "function", "function": {"name": name, "description": f"{name.replace('_', ' ')} of a store item.",
                                      "parameters": {"type": "object", "required": ["item_id"], "properties": {
                                          "item_id": {"type": "string", "maxLength": 20}}}}}
    for name in ("get_item", "update_item")
]


def messages(i: int) -> list[dict]:
    """An agent request a few turns in (~2 KB of JSON), distinct per call."""
    call = {"id": "call_0", "type": "function", "function": {"name": "get_item", "arguments": '{"item_id": "it-7"}'}}
    return [
        {"role": "system", "content": "You help shop staff look up and update items. Be brief and exact. " * 4},
        {"role": "user", "content": f"Please update item number {i}; it was sold this morning."},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "name": "get_item", "content": '{"id": "it-7", "status": "in stock"}'},
        {"role": "assistant", "content": "Item it-7 is in stock. Shall I mark it sold?"},
        {"role": "user", "content": "Yes, mark it sold, thanks."},
    ]


def baseline_module(rev: str) -> types.ModuleType:
    """synth/core/llm.py as of git revision `rev`, loaded beside the current one."""
    source = subprocess.check_output(["git", "show", f"{rev}:synth/core/llm.py"], cwd=REPO)
    module = types.ModuleType("synth_llm_baseline")
    module.__file__ = f"{rev}:synth/core/llm.py"
    sys.modules[module.__name__] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


Call = Callable[[int], Awaitable[object]]


async def make_client(kind: str, base_url: str, concurrency: int, cache_dir: str, baseline) -> tuple[Call, Callable]:
    """(one call, close) for a client kind."""
    if kind == "bare":
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        url = f"{base_url}/chat/completions"
        headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-no-key"}

        async def bare(i: int) -> object:
            body = json.dumps({"model": "fake", "messages": messages(i), "tools": TOOLS, "tool_choice": "auto",
                               "seed": i, "temperature": 0.7, "max_tokens": 512}).encode()
            async with session.post(url, data=body, headers=headers) as response:
                response.raise_for_status()
                return json.loads(await response.read())

        return bare, session.close
    if kind == "stock":
        client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-no-key", max_retries=0)

        async def stock(i: int) -> object:
            return await client.chat.completions.create(model="fake", messages=messages(i), tools=TOOLS, seed=i,
                                                        temperature=0.7, max_tokens=512)

        return stock, client.close
    if kind == "sdk-post":
        client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-no-key", max_retries=0,
                                    http_client=openai.DefaultAioHttpClient())

        async def sdk_post(i: int) -> object:
            body = json.dumps({"model": "fake", "messages": messages(i), "tools": TOOLS, "tool_choice": "auto",
                               "seed": i, "temperature": 0.7, "max_tokens": 512}).encode()
            return json.loads(await client.post("/chat/completions", content=body, cast_to=bytes))

        return sdk_post, client.close
    module = baseline if kind.startswith("base") else sys.modules["synth.core.llm"]
    cache = ResponseCache(Path(cache_dir)) if kind.endswith("-cache") else None
    cfg = module.LLMConfig(model="fake", concurrency=concurrency, max_retries=0)
    ledger = None
    if kind == "synth-ledger":
        ledger = Ledger.open(Path(cache_dir) / "ledger.bin", BudgetConfig(tokens=10**15, cost=10.0**9),
                             {"fake": Price(input=0.15, output=0.6)})
        llm = module.LLM(cfg, base_url=base_url, meter=UsageMeter(), cache=cache, ledger=ledger)
    else:
        llm = module.LLM(cfg, base_url=base_url, meter=UsageMeter(), cache=cache)

    async def chat(i: int) -> object:
        return await llm.chat(messages(i), tools=TOOLS, seed=i)

    async def close() -> None:
        await llm.aclose()
        if ledger is not None:
            ledger.close()

    return chat, close


async def measure(kind: str, base_url: str, server_pid: int, concurrency: int, seconds: float, latency_s: float,
                  baseline) -> dict:
    """Steady-state throughput: `concurrency` workers call back to back, their starts spread over one
    latency (lockstep bursts would measure queueing, not the client); calls completed and CPU are
    counted over a window that opens after a warm-up of two latencies."""
    with tempfile.TemporaryDirectory(prefix="synth-bench-cache-") as cache_dir:
        call, close = await make_client(kind, base_url, concurrency, cache_dir, baseline)
        counter = iter(range(1_000_000_000))
        offset = int(time.time() * 1000) % 1_000_000 * 1000  # fresh seeds per row: no cache hits across runs
        done, counting, stop = [0], [False], asyncio.Event()

        async def worker(index: int) -> None:
            await asyncio.sleep(latency_s * index / concurrency)
            while not stop.is_set():
                await call(offset + next(counter))
                if counting[0]:
                    done[0] += 1

        try:
            workers = [asyncio.create_task(worker(i)) for i in range(concurrency)]
            await asyncio.sleep(2 * latency_s)
            counting[0] = True
            server_cpu, cpu, started = cpu_seconds(server_pid), time.process_time(), time.perf_counter()
            await asyncio.sleep(seconds)
            counting[0] = False
            elapsed, calls = time.perf_counter() - started, done[0]
            cpu, server_cpu = time.process_time() - cpu, cpu_seconds(server_pid) - server_cpu
            stop.set()
            await asyncio.gather(*workers)
        finally:
            await close()
    ideal = concurrency / latency_s
    return {"kind": kind, "concurrency": concurrency, "calls": calls, "seconds": elapsed, "rate": calls / elapsed,
            "ideal": ideal, "ratio": calls / elapsed / ideal, "cpu_ms": 1000 * cpu / max(calls, 1),
            "server_ms": 1000 * server_cpu / max(calls, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--seconds", type=float, default=3, help="length of the measured window per row")
    parser.add_argument("--latency-ms", type=float, default=200, help="the fake endpoint's latency per call")
    parser.add_argument("--clients", nargs="+", choices=list(LABELS),
                        default=["bare", "stock", "sdk-post", "synth", "synth-cache"])
    parser.add_argument("--baseline", metavar="REV", help="also run synth/core/llm.py from this git revision "
                        "(adds the base and base-cache clients)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin harness and server to separate CPUs")
    args = parser.parse_args(argv)

    clients = list(args.clients)
    baseline = None
    if args.baseline:
        baseline = baseline_module(args.baseline)
        clients += [c for c in ("base", "base-cache") if c not in clients]
    pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2 and {0, 1} <= os.sched_getaffinity(0)
    if pin:
        os.sched_setaffinity(0, {0})
    port = free_port()
    server = start_server("tests.fake_openai", port, args.latency_ms, pin)
    rows = []
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        for concurrency in args.concurrency:  # clients inner: each concurrency's rows run close in time
            for kind in clients:
                rows.append(asyncio.run(measure(kind, base_url, server.pid, concurrency, args.seconds,
                                                args.latency_ms / 1000, baseline)))
                print(f"  {kind} at {concurrency}: {rows[-1]['ratio']:.0%}, {rows[-1]['cpu_ms']:.2f} ms/call",
                      file=sys.stderr, flush=True)
    finally:
        server.terminate()
        server.wait()

    print(f"LLM client bench: {args.latency_ms:g} ms per call, {args.seconds:g} s steady state per row, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          + ("harness pinned to CPU 0, fake server to CPU 1" if pin else "not pinned"))
    labels = {k: v.format(rev=args.baseline) for k, v in LABELS.items()}
    width = max(len(labels[k]) for k in clients)
    print(f"{'client':<{width}}  " + "  ".join(f"{'c=' + str(c):>16}" for c in args.concurrency))
    print(f"{'':<{width}}  " + "  ".join(f"{'ratio  cpu ms':>16}" for _ in args.concurrency))
    for kind in clients:
        cells = {r["concurrency"]: r for r in rows if r["kind"] == kind}
        print(f"{labels[kind]:<{width}}  " + "  ".join(
            f"{cells[c]['ratio']:>7.0%}  {cells[c]['cpu_ms']:>6.2f}" for c in args.concurrency))
    server_ms = sum(r["server_ms"] for r in rows) / len(rows)
    print(f"ideal = concurrency / latency calls/s; ratio = measured / ideal; cpu ms = harness CPU / call "
          f"(fake server: {server_ms:.2f} ms/call on average)")
    if "synth-ledger" in clients:
        print(f"the ledger alone (check before + charge after one request, in a loop): {ledger_us():.1f} us CPU per request")


def ledger_us(calls: int = 100_000) -> float:
    """CPU of the ledger's part of a request, without the noise of a whole client row."""
    with tempfile.TemporaryDirectory(prefix="synth-bench-ledger-") as scratch:
        ledger = Ledger.open(Path(scratch) / "ledger.bin", BudgetConfig(tokens=10**15), {"fake": Price(input=1, output=2)})
        started = time.process_time()
        for _ in range(calls):
            ledger.check()
            ledger.charge("fake", 500, 50)
        spent = time.process_time() - started
        ledger.close()
    return 1e6 * spent / calls


if __name__ == "__main__":
    main()
