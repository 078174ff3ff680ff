"""bench/user_sim.py counts role-breaking openings per view, against a scripted endpoint."""

from __future__ import annotations

from pathlib import Path

from bench.user_sim import OLD_GREETING, load_tasks, measure
from synth.core.llm import LLM, LLMConfig
from tests.fake_openai import FakeOpenAI

TASKS = Path(__file__).resolve().parent.parent / "bench" / "user_sim_tasks.jsonl"


def echoes_the_greeting(body: dict) -> str:
    """Echoes the agent's greeting (as small models do); after the cue, asks like a user."""
    last = body["messages"][-1]["content"]
    return "Hello! How can I assist you today?" if last == OLD_GREETING else "I want to book a room, please."


async def test_the_bench_counts_breaks_per_opening_view():
    tasks = load_tasks([TASKS])[:2]
    assert len(load_tasks([TASKS])) == 8 and all(t.goal and t.persona for t in tasks)
    async with FakeOpenAI(handler=echoes_the_greeting) as fake:
        async with LLM(LLMConfig(model="fake", max_retries=0), base_url=fake.base_url) as llm:
            counts = await measure(llm, tasks, seeds=2)
    assert counts == {"greeting": (4, 4), "cue": (0, 4), "cue + retry": (0, 4)}
