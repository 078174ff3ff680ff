"""Every stage against the scripted OpenAI-compatible fake (real HTTP on loopback, no model)."""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk

from synth.config import RunConfig
from synth.run import STAGES, open_run, run_stages
from synth.user_sim import STOP
from tests.fake_openai import FakeOpenAI


def config(tmp_path, fake: FakeOpenAI, **overrides) -> RunConfig:
    data = {
        "name": "t", "runs_dir": str(tmp_path), "llm": {"base_url": fake.base_url, "model": "fake", "max_retries": 1},
        "tools": {"categories": 2, "domains_per_category": 1, "toolsets_per_domain": 1, "tools_per_toolset": 2},
        "tasks": {"per_agent": 2, "rubric_items": 3, "world": False},  # mechanics: plain tasks
        "rollout": {"samples_per_task": 2, "max_turns": 2, "max_tool_steps": 2, "sandbox": {"type": "local", "isolation": "none"}},
    }
    data.update(overrides)
    return RunConfig.model_validate(data)


async def run_all(cfg: RunConfig):
    async with open_run(cfg, quiet=True) as ctx:
        await run_stages(ctx, list(STAGES))
        return ctx


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
async def fake():
    async with FakeOpenAI(stop_marker=STOP) as server:
        yield server


async def test_full_run_produces_linked_records_and_a_loadable_export(tmp_path, fake):
    cfg = config(tmp_path, fake)
    ctx = await run_all(cfg)
    root = cfg.run_dir
    tools, agents, tasks = lines(root / "tools.jsonl"), lines(root / "agents.jsonl"), lines(root / "tasks.jsonl")
    trajectories, verdicts = lines(root / "trajectories.jsonl"), lines(root / "verdicts.jsonl")
    toolsets = {t["toolset_id"] for t in tools}
    assert len(toolsets) == 2 and len(agents) == 2
    assert {a["toolset_id"] for a in agents} == toolsets
    assert 2 <= len(tasks) <= 4 and {t["agent_id"] for t in tasks} <= {a["id"] for a in agents}
    assert len(trajectories) == 2 * len(tasks)
    assert {v["trajectory_id"] for v in verdicts} == {t["id"] for t in trajectories}
    for trajectory in trajectories:
        assert trajectory["messages"][0]["role"] == "system"
        assert trajectory["final_state"] is not None
    # The simulator's state ledger lives in the sandbox and is snapshotted into the trajectory.
    assert any(t["final_state"] for t in trajectories)
    # Every id is unique across every file.
    for records in (tools, agents, tasks, trajectories, verdicts):
        assert len({r["id"] for r in records}) == len(records)
    sft = load_from_disk(str(root / "export" / "sft"))["train"]
    assert len(sft) == sum(v["keep"] for v in verdicts)
    rl = load_from_disk(str(root / "export" / "rl"))["train"]
    assert len(rl) == len(tasks)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["counts"]["trajectories"] == len(trajectories)
    assert manifest["usage"]["rollout"]["requests"] > 0 and manifest["usage"]["tools"]["requests"] >= 3
    assert ctx.meter.total().requests == len(fake.requests)
    pass_k = manifest["pass_k"]  # 2 samples per task: pass@1 and pass@2 per task and on average
    assert set(pass_k["tasks"]) == {t["id"] for t in tasks}
    assert set(pass_k["mean"]["pass@k"]) == {"1", "2"}
    # samples_per_task > 1 end to end: pass@k reaches the RL rows, with the band GRPO filters on.
    for row in rl:
        outcome = pass_k["tasks"][row["task_id"]]
        assert (row["samples"], row["passed"]) == (2, outcome["c"])
        assert row["pass_at_k"] == [outcome["pass@k"]["1"], outcome["pass@k"]["2"]]
        assert row["solve_band"] == {0: "unsolved", 1: "mixed", 2: "solved"}[outcome["c"]]
    # Nothing judged is thrown away: export/all holds every verdict, dropped ones with their reasons.
    everything = load_from_disk(str(root / "export" / "all"))["train"].to_list()
    assert sorted(r["trajectory_id"] for r in everything) == sorted(v["trajectory_id"] for v in verdicts)
    reasons = {v["trajectory_id"]: v["reasons"] for v in verdicts}
    assert all(r["reasons"] == reasons[r["trajectory_id"]] and r["keep"] == (not r["reasons"]) for r in everything)
    mixed = [t for t, o in pass_k["tasks"].items() if 0 < o["c"] < o["n"]]
    assert len(load_from_disk(str(root / "export" / "dpo"))["train"]) == len(mixed)  # 1 kept x 1 dropped each


async def test_rerun_of_a_finished_run_sends_no_request(tmp_path, fake):
    cfg = config(tmp_path, fake)
    await run_all(cfg)
    sent = len(fake.requests)
    before = {kind: (cfg.run_dir / f"{kind}.jsonl").read_text() for kind in ("tools", "tasks", "trajectories")}
    ctx = await run_all(cfg)
    assert len(fake.requests) == sent
    assert ctx.meter.total().requests == 0
    assert all(stats.done == 0 for stats in ctx.stats.values() if stats.stage != "export")
    assert before == {kind: (cfg.run_dir / f"{kind}.jsonl").read_text() for kind in before}


async def test_samples_of_one_task_are_distinct_requests(tmp_path, fake):
    cfg = config(tmp_path, fake)
    await run_all(cfg)
    trajectories = lines(cfg.run_dir / "trajectories.jsonl")
    by_task: dict[str, set[int]] = {}
    for t in trajectories:
        by_task.setdefault(t["task_id"], set()).add(t["seed"])
    assert all(len(seeds) == 2 for seeds in by_task.values())


async def test_unparseable_judge_replies_are_recorded_and_the_run_goes_on(tmp_path):
    def handler(body):
        prompt = body["messages"][-1]["content"] if body["messages"] else ""
        if "strict judge" in str(body["messages"][0]["content"]) or "strict judge" in str(prompt):
            return "I think it went well, no JSON here"
        return None

    async with FakeOpenAI(stop_marker=STOP, handler=handler) as fake:
        cfg = config(tmp_path, fake)
        ctx = await run_all(cfg)
    errors = lines(cfg.run_dir / "errors.jsonl")
    judged = [e for e in errors if e["stage"] == "judge"]
    assert judged and all(e["error_type"] == "ParseError" for e in judged)
    assert all(e["raw"] for e in judged), "the unparseable reply is kept raw"
    assert ctx.stats["judge"].failed == len(lines(cfg.run_dir / "trajectories.jsonl"))
    assert load_from_disk(str(cfg.run_dir / "export" / "sft"))["train"].num_rows == 0


async def test_duplicate_tool_names_are_rejected_with_their_reason(tmp_path):
    def handler(body):
        text = body["messages"][-1]["content"]
        if "toolset for an AI assistant" in text:
            tool = {"name": "get_item", "description": "Get one item by id.",
                    "parameters": [{"name": "item_id", "type": "string", "description": "id", "required": True}]}
            return json.dumps({"name": "items", "state_model": "items with ids", "tools": [tool, tool]})
        return None

    async with FakeOpenAI(stop_marker=STOP, handler=handler) as fake:
        cfg = config(tmp_path, fake)
        async with open_run(cfg, quiet=True) as ctx:
            await run_stages(ctx, ["tools"])
    tools = lines(cfg.run_dir / "tools.jsonl")
    assert [t["name"] for t in tools] == ["get_item", "get_item"]  # one per toolset, two toolsets
    rejected = [e for e in lines(cfg.run_dir / "errors.jsonl") if e["error_type"] == "Rejected"]
    assert len(rejected) == 2 and "duplicate tool name 'get_item'" in rejected[0]["message"]
    assert all(t["inputSchema"]["required"] == ["item_id"] for t in tools)


async def test_provider_failures_become_error_records(tmp_path):
    async with FakeOpenAI(stop_marker=STOP) as fake:
        cfg = config(tmp_path, fake)
        async with open_run(cfg, quiet=True) as ctx:
            await run_stages(ctx, ["tools", "agents"])
        fake.fail_left = 10**6  # the endpoint now answers 429 forever
        fake.retry_after = "0"
        async with open_run(cfg, quiet=True) as ctx:
            await run_stages(ctx, ["tasks"])
            assert ctx.stats["tasks"].failed == 2
        errors = lines(cfg.run_dir / "errors.jsonl")
        assert [e["error_type"] for e in errors] == ["ProviderError", "ProviderError"]
        assert "429" in errors[0]["message"]
        # The failed units are not done: a later run with a healthy endpoint finishes them.
        fake.fail_left = 0
        async with open_run(cfg, quiet=True) as ctx:
            await run_stages(ctx, ["tasks"])
            assert ctx.stats["tasks"].done == 2


async def test_rollouts_through_a_warm_pool_reuse_sandboxes_and_leave_none(tmp_path, fake):
    sandboxes = tmp_path / "sandboxes"
    cfg = config(tmp_path, fake, rollout={
        "samples_per_task": 2, "max_turns": 2, "concurrency": 2,
        "sandbox": {"type": "local", "isolation": "none", "root": str(sandboxes), "pool_size": 2}})
    await run_all(cfg)
    trajectories = lines(cfg.run_dir / "trajectories.jsonl")
    assert len(trajectories) == 2 * len(lines(cfg.run_dir / "tasks.jsonl")) > 2
    assert all(t["final_state"] is not None for t in trajectories)
    assert not list(sandboxes.glob("synth-local-*")), "the pool stopped every sandbox it started"


async def test_the_embedded_server_starts_only_when_a_request_misses_the_cache(tmp_path, fake, monkeypatch):
    """No endpoint configured: the first uncached request starts the (here: stand-in) embedded
    server, once; a rerun of the finished run never starts it."""
    from contextlib import asynccontextmanager

    import synth.run

    starts = []

    @asynccontextmanager
    async def stand_in(cfg, log_path):
        starts.append(log_path)
        yield fake.base_url

    monkeypatch.setattr(synth.run, "embedded_server", stand_in)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    cfg = config(tmp_path, fake)
    cfg = cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"base_url": None})})
    await run_all(cfg)
    assert len(starts) == 1 and len(fake.requests) > 10
    await run_all(cfg)
    assert len(starts) == 1, "a finished run answered from the cache must not start the model"
