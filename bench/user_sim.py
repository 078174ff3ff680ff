"""How often the user simulator opens speaking as the assistant, side by side in one run.

    python -m bench.user_sim [TASKS.jsonl ...] [--model SmolLM2-135M] [--seeds 5]

TASKS default to bench/user_sim_tasks.jsonl: the 8 tasks of three quickstart runs (SmolLM2-135M,
Qwen2.5-Coder-0.5B and -1.5B wrote them, 2026-12-01/02), personas and goals as those models wrote them.

For every task and seed it asks for the user's first message three ways, on one embedded preset:
- `greeting`: the view the simulator had before (the agent's "Hello, how can I help you today?"),
  one request;
- `cue`: the shipped view (synth/prompts/user_sim_opening.md, restating the goal), one request;
- `cue + retry`: the shipped `UserSimulator.opening()`, which asks again once on a role break.
A message breaks role when judges/user_checks.py `role_breaks` finds a phrase in it: the same rule
the judge's `user_stays_in_role` drops on. Sampling is at temperature 0.7, seeded per (task, seed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from judges.user_checks import role_breaks
from synth.core.llm import LLM, LLMConfig
from synth.core.local_llm import EmbeddedConfig, embedded_server
from synth.core.models import DEFAULT_PRESET, find_preset
from synth.core.records import Task
from synth.user_sim import BROKE_ROLE, UserSimulator

OLD_GREETING = "Hello, how can I help you today?"


def load_tasks(paths: list[Path]) -> list[Task]:
    return [Task.model_validate(json.loads(line)) for path in paths for line in path.read_text().splitlines() if line]


async def one_request(llm: LLM, task: Task, seed: int, greeting: bool) -> str:
    view = UserSimulator(llm, task, seed=seed).view([])
    if greeting:
        view[-1] = {"role": "user", "content": OLD_GREETING}
    reply = await llm.chat(view, seed=seed)
    return (reply.message.get("content") or "").strip()


async def measure(llm: LLM, tasks: list[Task], seeds: int) -> dict[str, tuple[int, int]]:
    counts = {"greeting": [0, 0], "cue": [0, 0], "cue + retry": [0, 0]}
    for task in tasks:
        for seed in range(seeds):
            for name, greeting in (("greeting", True), ("cue", False)):
                counts[name][0] += bool(role_breaks(await one_request(llm, task, seed, greeting)))
                counts[name][1] += 1
            simulator = UserSimulator(llm, task, seed=seed)
            await simulator.opening()
            counts["cue + retry"][0] += BROKE_ROLE in simulator.flags
            counts["cue + retry"][1] += 1
    return {name: (broke, total) for name, (broke, total) in counts.items()}


async def run(args: argparse.Namespace) -> None:
    tasks = load_tasks(args.tasks)
    if not tasks:
        raise SystemExit(f"no tasks in {', '.join(map(str, args.tasks))}")
    preset = find_preset(args.model)
    if preset is None:
        raise SystemExit(f"--model {args.model!r} is not a preset (synth models list)")
    async with embedded_server(EmbeddedConfig(model=preset.name)) as base_url:
        config = LLMConfig(model=preset.alias, temperature=0.7, max_tokens=120, timeout_s=600, max_retries=1)
        async with LLM(config, base_url=base_url) as llm:
            counts = await measure(llm, tasks, args.seeds)
    print(f"user simulator openings on {preset.name}: {len(tasks)} tasks x {args.seeds} seeds")
    print("| opening | role breaks |\n|---|---|")
    for name, (broke, total) in counts.items():
        print(f"| {name} | {broke}/{total} ({broke / total:.0%}) |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.user_sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="*", type=Path, default=[Path(__file__).parent / "user_sim_tasks.jsonl"],
                        help="tasks.jsonl files of finished runs (default: bench/user_sim_tasks.jsonl)")
    parser.add_argument("--model", default=DEFAULT_PRESET, help="embedded preset (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=5, help="samples per task and opening (default: %(default)s)")
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
