"""Rollouts whose tools run in real Docker containers, driven by the scripted fake endpoint."""

from __future__ import annotations

import json

import docker
import pytest

from synth.config import RunConfig
from synth.run import STAGES, open_run, run_stages
from synth.user_sim import STOP
from tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.docker


def managed_containers(run: str) -> list:
    return docker.from_env().containers.list(all=True, filters={"label": ["synth.managed=1", f"synth.run={run}"]})


async def test_rollouts_in_docker_keep_state_per_episode_and_leave_no_container(tmp_path, docker_image):
    async with FakeOpenAI(stop_marker=STOP) as fake:
        cfg = RunConfig.model_validate({
            "name": "docker-run", "runs_dir": str(tmp_path),
            "llm": {"base_url": fake.base_url, "model": "fake"},
            "tools": {"categories": 1, "domains_per_category": 1, "tools_per_toolset": 2},
            "tasks": {"per_agent": 2, "world": False},  # mechanics: plain tasks (the fake writes junk worlds)
            "rollout": {"samples_per_task": 1, "max_turns": 2, "concurrency": 2,
                        "sandbox": {"type": "docker", "image": docker_image, "memory_mb": 256}},
        })
        async with open_run(cfg, quiet=True) as ctx:
            await run_stages(ctx, list(STAGES))
    trajectories = [json.loads(line) for line in (cfg.run_dir / "trajectories.jsonl").read_text().splitlines()]
    assert len(trajectories) == len((cfg.run_dir / "tasks.jsonl").read_text().splitlines()) >= 1
    assert not (cfg.run_dir / "errors.jsonl").exists() or "rollout" not in (cfg.run_dir / "errors.jsonl").read_text()
    for trajectory in trajectories:
        assert trajectory["tool_calls"], "the fake agent calls a tool on its first step"
        # The state ledger lived in the episode's container and was snapshotted before removal.
        assert trajectory["final_state"]
    assert managed_containers("docker-run") == []
