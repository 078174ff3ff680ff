"""The rollout bench's scripted endpoint: tests.fake_openai with replies that fix an episode's shape.

    python -m bench.fake_server --port N [--latency-ms 200]

With `rollout.max_turns 3, max_tool_steps 1` every episode then makes exactly 10 LLM calls, one
after another: 6 agent calls (per turn: a call to `list_notes` when tools are offered, then a text
answer) and 4 user-simulator calls (the opening and one reply per turn; the user never says the
stop marker, so every episode runs all 3 turns). Replies are fixed strings, so the server's work
per request (parse the body, sleep, answer) is the same for synth and for the bare loop.
"""

from __future__ import annotations

import argparse
import asyncio

from tests.fake_openai import FakeOpenAI

# The cheapest call of each toolset the bench runs: the notes fixture's list_notes (executable), and
# the real servers' reads (bench/rollout.py --rows real).
CALLS = {"list_notes": "{}", "git_status": '{"repo_path": "/workspace/repo"}', "read_graph": "{}"}
TOOL = "list_notes"


def handler(body: dict) -> dict | str:
    messages, tools = body.get("messages") or [], body.get("tools") or []
    if tools and (not messages or messages[-1].get("role") != "tool"):
        offered = {t["function"]["name"] for t in tools}
        name = next((n for n in CALLS if n in offered), TOOL)
        call = {"id": "call_0", "type": "function", "function": {"name": name, "arguments": CALLS[name]}}
        return {"content": "", "tool_calls": [call], "finish_reason": "tool_calls"}
    return "Sure, that is done: the notes are listed above."


class BenchFake(FakeOpenAI):
    """Keeps no per-request history (the base class appends every body: memory over long runs)."""

    async def _chat(self, request):  # type: ignore[override]
        response = await super()._chat(request)
        self.requests.clear()
        self.headers.clear()
        return response


async def serve(port: int, latency_ms: float) -> None:
    async with BenchFake(handler=handler, latency_ms=latency_ms, port=port) as fake:
        print(f"bench fake OpenAI server at {fake.base_url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=200)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.port, args.latency_ms))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
