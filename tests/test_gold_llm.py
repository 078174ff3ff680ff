"""Gold tasks on an executable fixture toolset, rolled out by the real embedded model (llm-marked).

Tasks are scripted (a 135M model cannot write valid gold actions); agents and tasks come from the
scripted endpoint, then the same run directory is reopened with no endpoint, so the embedded
llama.cpp server plays the agent and the user while the notes module runs over MCP in sandboxes.
"""

from __future__ import annotations

import json

import pytest

from judges.assertions import assertion_failures
from synth.run import open_run, run_stages
from synth.user_sim import STOP
from tests.fake_openai import FakeOpenAI
from tests.test_gold import BWRAP, GOOD, cfg_for, implement_and_gold, specs

pytestmark = pytest.mark.llm


async def test_gold_replay_then_real_model_rollouts_record_the_executable_state(tmp_path, monkeypatch):
    async with FakeOpenAI(handler=implement_and_gold, stop_marker=STOP) as fake:
        cfg = cfg_for(tmp_path, fake.base_url, tasks={"per_agent": 2, "rubric_items": 2, "gold": True},
                      rollout={"sandbox": {"type": "local", "isolation": "bwrap" if BWRAP else "none"},
                               "max_turns": 1, "max_tool_steps": 1})
        cfg = cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"max_tokens": 256, "temperature": 0.4})})
        async with open_run(cfg, quiet=True) as ctx:
            ctx.store.append("tools", specs())
            await run_stages(ctx, ["implement", "agents", "tasks"])
    tasks = [json.loads(line) for line in (cfg.run_dir / "tasks.jsonl").read_text().splitlines()]
    errors = [json.loads(line) for line in (cfg.run_dir / "errors.jsonl").read_text().splitlines()]
    assert [t["goal"] for t in tasks] == [GOOD["goal"]] and tasks[0]["validated"], "the gold replay held"
    assert [e["error_type"] for e in errors] == ["Rejected"] and "no note with id 7" in errors[0]["message"]

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    # Same config but the endpoint (not part of the config hash): the run dir reopens as itself.
    embedded = cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"base_url": None})})
    async with open_run(embedded, quiet=True) as ctx:
        await run_stages(ctx, ["rollout", "judge"])
        trajectories, verdicts = ctx.store.read("trajectories"), ctx.store.read("verdicts")
        rollout_usage = ctx.meter.by_stage().get("rollout")
    assert len(trajectories) == 1, "the embedded model finished the episode"
    (trajectory,) = trajectories
    assert trajectory.final_state["notes"]["1"]["title"] == "Groceries", "the task's initial state was served"
    assert rollout_usage is not None and rollout_usage.requests > 0, "the embedded model was asked"
    (verdict,) = verdicts
    ok = not assertion_failures(trajectory.final_state, [a for a in ctx.store.read("tasks")[0].assertions])
    assert verdict.checks["final_state_assertions"] is ok
