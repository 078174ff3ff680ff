"""Embedded model presets served for real: speed, memory, and whether tool calls and JSON come back right.

    python -m bench.models                               # every preset, each with its own chat format
    python -m bench.models --model Qwen2.5-Coder-1.5B --chat-format chatml-function-calling
    python -m bench.models --probes-only --chat-format synth-tools --chat-format chatml-function-calling

Per preset and chat format, one server (2 threads) answers, one request at a time:
- speed: 3 requests of a ~400-token prompt and 96 generated tokens; prompt-eval and generation
  tok/s as the server's llama.cpp timings log them (median and best of the 3: on a shared
  machine the best is the nearest to an idle one);
- one structured call (a small pydantic schema, the client's json_object+schema mode) and one
  tool call through synth's LLM client, in seconds;
- probes: 3 requests that need a tool call (a real `tool_calls` field with the right tool and
  arguments that parse), 2 that need a text answer although tools are offered (text, no call, no
  "functions." in it), 1 answer after a tool result (text that uses the result and does not echo
  the call or the result's tags), 2 structured
  calls (schema-valid on the first reply);
- RSS: the server's peak resident memory (VmHWM) at the end.
Not a quality bench of the pipeline (that is bench.quality): these are the preconditions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, Field

from synth.core.errors import ProviderError
from synth.core.llm import LLM, LLMConfig
from synth.core.local_llm import EmbeddedConfig, embedded_server
from synth.core.models import presets

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
NOTE = {"type": "function", "function": {
    "name": "create_note", "description": "Save a note with a title and a body.",
    "parameters": {"type": "object", "properties": {"title": {"type": "string"}, "body": {"type": "string"}},
                   "required": ["title", "body"]}}}
TOOLS = [WEATHER, NOTE]
SYSTEM = {"role": "system", "content": "You are an assistant with tools. Call a tool when the request needs one; "
                                       "otherwise answer in plain text."}
NEEDS_CALL = [("What is the weather in Paris right now?", "get_weather"),
              ("Save a note titled 'groceries' with the body 'milk, eggs, bread'.", "create_note"),
              ("Is it raining in Tokyo? Check it.", "get_weather")]
NEEDS_TEXT = ["Hi! Tell me a one-line joke about cats.", "What is 12 plus 30? Just the number, please."]
AFTER_RESULT = [SYSTEM, {"role": "user", "content": "What's the weather in Rome?"},
                {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {
                    "name": "get_weather", "arguments": json.dumps({"city": "Rome"})}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"temp_c": 23, "sky": "sunny"})}]
STORY = ("Here are some facts about lighthouses. " * 40).strip()
TIMING = re.compile(r"^\s*(?:llama_perf_context_print:\s*)?(prompt eval|eval) time =\s*([\d.]+) ms /\s*(\d+) "
                    r"(?:tokens|runs)", re.M)


class City(BaseModel):
    name: str = Field(max_length=30)
    country: str = Field(max_length=30)
    population_millions: float
    landmarks: list[str] = Field(max_length=3)


def _server_pid(port: int) -> int | None:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(arg.endswith(b"llama_server") for arg in cmd) and str(port).encode() in cmd:
                return int(proc.name)
    return None


def _peak_rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def _timings(log: Path, offset: int) -> tuple[list[float], list[float]]:
    """(prompt-eval tok/s, generation tok/s) of the requests logged after byte `offset`."""
    prompt, gen = [], []
    for kind, ms, n in TIMING.findall(log.read_text(errors="replace")[offset:]):
        if int(n) > 8 and float(ms) > 1:  # a prompt-cache hit logs ~1 token in ~0 ms: no rate to read
            (prompt if kind == "prompt eval" else gen).append(int(n) / (float(ms) / 1000))
    return prompt, gen


async def _speed(llm: LLM, log: Path) -> dict:
    # llama.cpp books the first request's prompt under load time (measured: 402 tokens "in 4.6 ms"): warm up first
    await llm.chat([{"role": "user", "content": "Hello."}], max_tokens=2, temperature=0)
    offset = len(log.read_text(errors="replace"))
    for i in range(3):  # a different first word each time: no prompt-cache reuse
        await llm.chat([{"role": "user", "content": f"Request {i}. {STORY} Write a long story about a lighthouse."}],
                       max_tokens=96, temperature=0.7, seed=i)
    prompt, gen = _timings(log, offset)
    return {"prompt_tok_s": statistics.median(prompt) if prompt else None, "prompt_tok_s_best": max(prompt, default=None),
            "gen_tok_s": statistics.median(gen) if gen else None, "gen_tok_s_best": max(gen, default=None)}


async def _timed(coro) -> tuple[float, object]:
    t0 = time.monotonic()
    try:
        result = await coro
    except ProviderError as exc:
        result = exc
    return time.monotonic() - t0, result


def _is_call(result, tool: str) -> bool:
    calls = result.message.get("tool_calls") if not isinstance(result, Exception) else None
    if not calls or calls[0]["function"]["name"] != tool:
        return False
    try:
        return isinstance(json.loads(calls[0]["function"]["arguments"]), dict)
    except json.JSONDecodeError:
        return False


def _is_text(result) -> bool:
    if isinstance(result, Exception) or result.message.get("tool_calls"):
        return False
    content = (result.message.get("content") or "").strip()
    return bool(content) and "functions." not in content and "<tool_call>" not in content


async def _first_reply_valid(llm: LLM, city: str) -> bool:
    """Whether structured() got schema-valid JSON from the first reply (no repair round)."""
    before = llm.meter.total().requests
    try:
        await llm.structured([{"role": "user", "content": f"Describe the city of {city} as JSON."}], City,
                             max_tokens=160, temperature=0)
    except ProviderError:
        return False
    return llm.meter.total().requests - before == 1


async def _probes(llm: LLM) -> dict:
    calls = [await llm.chat([SYSTEM, {"role": "user", "content": q}], tools=TOOLS, max_tokens=96, temperature=0)
             for q, _ in NEEDS_CALL]
    texts = [await llm.chat([SYSTEM, {"role": "user", "content": q}], tools=TOOLS, max_tokens=64, temperature=0)
             for q in NEEDS_TEXT]
    after = await llm.chat(AFTER_RESULT, tools=TOOLS, max_tokens=64, temperature=0)
    structured = [await _first_reply_valid(llm, city) for city in ("Lisbon", "Nairobi")]
    answer = after.message.get("content") or ""
    after_ok = _is_text(after) and "23" in answer and '"name"' not in answer and "tool_response" not in answer
    return {
        "calls_ok": sum(_is_call(r, tool) for r, (_, tool) in zip(calls, NEEDS_CALL)), "calls_n": len(NEEDS_CALL),
        "texts_ok": sum(map(_is_text, texts)), "texts_n": len(NEEDS_TEXT),
        "after_result_ok": after_ok, "structured_ok": sum(structured), "structured_n": 2,
        "samples": {"text": [t.message for t in texts], "after": after.message, "call": calls[0].message},
    }


async def bench_one(model: str, chat_format: str | None, threads: int, probes_only: bool) -> dict:
    log = Path(tempfile.mkdtemp(prefix="bench-models-")) / "server.log"
    emb = EmbeddedConfig(model=model, chat_format=chat_format, n_threads=threads, startup_timeout_s=300)
    t0 = time.monotonic()
    async with embedded_server(emb, log) as url:
        load_s = time.monotonic() - t0
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        cfg = LLMConfig(base_url=url, model=emb.served_alias(), structured_mode="json_object", timeout_s=600,
                        max_retries=0, concurrency=1)
        async with LLM(cfg) as llm:
            row: dict = {"model": model, "chat_format": chat_format or presets()[model].chat_format,
                         "load_s": load_s}
            if not probes_only:
                row |= await _speed(llm, log)
                row["structured_s"], structured = await _timed(
                    llm.structured([{"role": "user", "content": "Describe the city of Oslo as JSON."}], City,
                                   max_tokens=160, temperature=0))
                row["structured_valid"] = isinstance(structured, City)
                row["tool_s"], call = await _timed(
                    llm.chat([SYSTEM, {"role": "user", "content": NEEDS_CALL[0][0]}], tools=TOOLS, max_tokens=96,
                             temperature=0))
                row["tool_call_real"] = _is_call(call, "get_weather")
            row |= await _probes(llm)
        row["peak_rss_mb"] = _peak_rss_mb(_server_pid(port))
    row["load_avg_1m"] = os.getloadavg()[0]  # the machine is shared: how busy it was at the end
    return row


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def print_table(rows: list[dict]) -> None:
    cols = ["model", "chat_format", "load_s", "prompt_tok_s", "gen_tok_s", "structured_s", "tool_s", "peak_rss_mb",
            "calls", "texts", "after_result_ok", "structured", "load_avg_1m"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        for key in ("prompt_tok_s", "gen_tok_s"):  # median (best) of the speed requests
            if r.get(key) is not None:
                r = {**r, key: f"{r[key]:.1f} ({r[key + '_best']:.1f})"}
        r = {**r, "calls": f"{r['calls_ok']}/{r['calls_n']}", "texts": f"{r['texts_ok']}/{r['texts_n']}",
             "structured": f"{r['structured_ok']}/{r['structured_n']}"}
        print("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="preset (repeatable; default: every preset)")
    parser.add_argument("--chat-format", action="append", help="chat format(s) to try (default: the preset's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--probes-only", action="store_true", help="skip the speed and timing rows")
    parser.add_argument("--json", type=Path, help="also append each row to this JSON-lines file")
    args = parser.parse_args()
    rows = []
    for model in args.model or list(presets()):
        for chat_format in args.chat_format or [None]:
            row = asyncio.run(bench_one(model, chat_format, args.threads, args.probes_only))
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "samples"}), flush=True)
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    print_table(rows)


if __name__ == "__main__":
    main()
