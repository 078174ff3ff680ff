"""`synth run --shard I/N` on every shard + `synth merge` == one unsharded run (scripted endpoint)."""

from __future__ import annotations

import json

from synth.config import RunConfig
from synth.core.shard import merge_runs
from synth.run import STAGES, open_run, run_stages
from synth.user_sim import STOP
from tests.fake_openai import FakeOpenAI

KINDS = ("tools", "agents", "tasks", "trajectories", "verdicts")


def ids(run_dir, kind) -> list[str]:
    path = run_dir / f"{kind}.jsonl"
    return [json.loads(line)["id"] for line in path.read_text().splitlines()] if path.exists() else []


async def test_shards_merged_hold_exactly_the_ids_of_an_unsharded_run(tmp_path):
    async with FakeOpenAI(stop_marker=STOP) as fake:
        def config(name: str) -> RunConfig:
            return RunConfig.model_validate({
                "name": name, "runs_dir": str(tmp_path), "llm": {"base_url": fake.base_url, "model": "fake"},
                "tools": {"categories": 2, "tools_per_toolset": 2}, "tasks": {"per_agent": 3, "world": False},
                "rollout": {"samples_per_task": 2, "max_turns": 2,
                            "sandbox": {"type": "local", "isolation": "none"}},
            })

        async with open_run(config("whole"), quiet=True) as ctx:
            await run_stages(ctx, [s for s in STAGES if s != "export"])
        for index in range(3):
            async with open_run(config(f"shard{index}"), quiet=True, shard=(index, 3)) as ctx:
                await run_stages(ctx, [s for s in STAGES if s != "export"])

    shards = [tmp_path / f"shard{i}" for i in range(3)]
    sizes = [len(ids(s, "trajectories")) for s in shards]
    assert sum(sizes) == len(ids(tmp_path / "whole", "trajectories")) and max(sizes) < sum(sizes)
    merge_runs(shards, tmp_path / "merged")
    for kind in KINDS:
        merged = ids(tmp_path / "merged", kind)
        assert len(merged) == len(set(merged)), f"duplicate ids in merged {kind}"
        assert set(merged) == set(ids(tmp_path / "whole", kind)), kind


async def test_rollout_workers_make_the_same_trajectories_as_one_process(tmp_path):
    async with FakeOpenAI(stop_marker=STOP) as fake:
        def config(name: str, workers: int) -> RunConfig:
            return RunConfig.model_validate({
                "name": name, "runs_dir": str(tmp_path), "llm": {"base_url": fake.base_url, "model": "fake"},
                "tools": {"categories": 2, "tools_per_toolset": 2}, "tasks": {"per_agent": 3, "world": False},
                "rollout": {"samples_per_task": 2, "max_turns": 2, "concurrency": 4, "workers": workers,
                            "sandbox": {"type": "local", "isolation": "none", "pool_size": 4}},
            })

        usage = {}
        for name, workers in (("one", 1), ("three", 3)):
            async with open_run(config(name, workers), quiet=True) as ctx:
                await run_stages(ctx, [s for s in STAGES if s != "export"])
                usage[name] = ctx.meter.by_stage()["rollout"]
                stats = ctx.stats["rollout"]
        assert stats.done == len(ids(tmp_path / "three", "trajectories")) and stats.failed == 0
    for kind in KINDS:
        three = ids(tmp_path / "three", kind)
        assert len(three) == len(set(three)), f"duplicate ids in {kind}"
        assert set(three) == set(ids(tmp_path / "one", kind)), kind
    # Every worker's LLM calls reach the parent's usage, and its own cache segment reached the run dir.
    assert usage["three"].requests == usage["one"].requests > 0
    assert len(list((tmp_path / "three" / "cache").glob("*.jsonl"))) >= 3
    assert sorted(p.name for p in (tmp_path / "three" / "workers").iterdir()) == [f"rollout-{i}.log" for i in range(3)]
    manifest = json.loads((tmp_path / "three" / "manifest.json").read_text())
    assert manifest["usage"]["rollout"]["requests"] == usage["three"].requests
