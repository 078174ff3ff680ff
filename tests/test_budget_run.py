"""A hard token budget on a whole run against the scripted endpoint: the run stops with every finished
unit on disk and nothing half-written, says which budget stopped it, and a rerun with a higher budget
finishes without sending any request twice (counted at the fake server)."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from cli import app
from synth.config import RunConfig
from synth.core.budget import BudgetReached
from synth.core.records import RECORD_FILES
from synth.core.store import RunStore
from synth.run import open_run, pipeline_stages, run_stages
from synth.user_sim import STOP
from synth.view.page import build_report
from tests.fake_openai import FakeOpenAI, fake_openai_in_thread
from tests.judge_replies import shown_texts

KINDS = ("tools", "agents", "tasks", "trajectories", "verdicts")
PRICE = {"input": 1.0, "output": 4.0}


def lenient_grader(body: dict):
    """A valid rubric and a judge that passes its positive items: so some trajectories are kept and the
    cost per kept trajectory has something to divide by (the fake's random rubrics fail validation)."""
    first = str(body["messages"][0]["content"])
    if first.startswith("You write the grading rubric"):
        return json.dumps({"approach": ["The assistant asks for the details and calls the tool."], "rubric": [
            {"text": "The assistant answers the user with a reply about the request.", "kind": "essential"},
            {"text": "The assistant asks the user for the details it needs first.", "kind": "important"},
            {"text": "The assistant invents a record the tool never returned.", "kind": "pitfall"}]})
    if "strict judge" in first:
        return json.dumps({"results": [{"reason": "as the transcript shows", "passed": "invents" not in text, "turn": 1}
                                       for text in shown_texts(first)]})
    return None


def config(tmp_path, base_url: str, name: str, budget: dict | None = None, workers: int = 1) -> dict:
    llm = {"base_url": base_url, "model": "fake", "max_retries": 1, "concurrency": 4, "prices": {"fake": PRICE}}
    if budget:
        llm["budget"] = budget
    return {
        "name": name, "runs_dir": str(tmp_path), "llm": llm,
        "tools": {"categories": 2, "domains_per_category": 1, "toolsets_per_domain": 1, "tools_per_toolset": 2},
        "tasks": {"per_agent": 2, "rubric_items": 3, "world": False},  # mechanics: plain tasks
        "rollout": {"samples_per_task": 2, "max_turns": 2, "max_tool_steps": 2, "workers": workers,
                    "sandbox": {"type": "local", "isolation": "none"}},
    }


async def run(data: dict):
    cfg = RunConfig.model_validate(data)
    async with open_run(cfg, quiet=True) as ctx:
        await run_stages(ctx, pipeline_stages(cfg))
    return cfg, ctx


def ids(cfg: RunConfig, kind: str) -> list[str]:
    return [r.id for r in RunStore(cfg.run_dir, shared=True).read(kind)]


def largest_reply_tokens(cfg: RunConfig) -> int:
    """The most tokens one request of the run cost (from its response cache)."""
    most = 0
    for segment in (cfg.run_dir / "cache").glob("*.jsonl"):
        for line in segment.read_text().splitlines():
            usage = json.loads(line.split("\t", 1)[1])["usage"]
            most = max(most, usage["prompt_tokens"] + usage["completion_tokens"])
    return most


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_run_stops_at_its_token_budget_and_a_higher_budget_finishes_it_sending_nothing_twice(tmp_path, workers):
    async with FakeOpenAI(stop_marker=STOP) as fake:
        ref, ref_ctx = await run(config(tmp_path, fake.base_url, "ref", workers=workers))
        total = ref_ctx.meter.total()
        ref_requests, ref_tokens = total.requests, total.prompt_tokens + total.completion_tokens
        limit = ref_tokens // 2
        fake.requests.clear()

        data = config(tmp_path, fake.base_url, "b", {"tokens": limit}, workers=workers)
        with pytest.raises(BudgetReached) as stop:
            await run(data)
        cfg = RunConfig.model_validate(data)
        stopped_requests = len(fake.requests)

        # Stopped by the token budget, said in the manifest, the stage in flight marked stopped.
        assert stop.value.which == "tokens"
        manifest = json.loads((cfg.run_dir / "manifest.json").read_text())
        assert manifest["budget"]["stopped_by"] == "tokens" and manifest["budget"]["limits"] == {"tokens": limit}
        stopped = [name for name, entry in manifest["stages"].items() if entry["status"] == "stopped"]
        assert len(stopped) == 1 and manifest["stages"][stopped[0]]["stopped_by"] == "tokens"
        order = pipeline_stages(cfg)
        assert set(manifest["stages"]) == set(order[: order.index(stopped[0]) + 1])  # nothing after it ran
        # The overshoot is at most the requests in flight (llm.concurrency of them, each at most this big).
        spent = manifest["budget"]["spent"]["tokens"]
        assert limit <= spent <= limit + cfg.llm.concurrency * largest_reply_tokens(ref)
        assert spent == sum(u["prompt_tokens"] + u["completion_tokens"] for u in manifest["usage"].values())

        # Nothing half-written: every line of every file is a whole record the uninterrupted run also wrote;
        # abandoned units left no record and no error.
        for kind in RECORD_FILES:
            path = cfg.run_dir / f"{kind}.jsonl"
            assert not path.exists() or path.read_bytes().endswith(b"\n")
        for kind in KINDS:
            assert set(ids(cfg, kind)) <= set(ids(ref, kind))
        assert len(ids(cfg, "trajectories")) < len(ids(ref, "trajectories")) or len(ids(cfg, "verdicts")) < len(ids(ref, "verdicts"))
        assert not (cfg.run_dir / "errors.jsonl").exists() or "budget" not in (cfg.run_dir / "errors.jsonl").read_text()
        assert not (cfg.run_dir / "export").exists()
        # The report says which budget stopped the run.
        report = build_report(cfg.run_dir)
        assert 'id="budget-stopped"' in report and "Stopped by the tokens budget" in report

        # A higher budget resumes: the same records as the uninterrupted run, and no request sent twice.
        data["llm"]["budget"] = {"tokens": limit * 10}
        cfg, ctx = await run(data)
    bodies = [json.dumps(body, sort_keys=True) for body in fake.requests]
    assert len(bodies) == len(set(bodies)) == ref_requests
    assert stopped_requests < ref_requests
    for kind in KINDS:
        assert sorted(ids(cfg, kind)) == sorted(ids(ref, kind))
    manifest = json.loads((cfg.run_dir / "manifest.json").read_text())
    assert all(entry["status"] == "done" for entry in manifest["stages"].values())
    assert manifest["budget"]["stopped_by"] is None and [s["by"] for s in manifest["budget"]["stops"]] == ["tokens"]
    assert manifest["budget"]["spent"]["tokens"] == ref_tokens  # the two invocations paid for the run once
    assert "id=\"budget-stopped\"" not in build_report(cfg.run_dir)


async def test_cost_per_stage_and_per_kept_trajectory_reach_the_manifest_and_the_card(tmp_path):
    async with FakeOpenAI(stop_marker=STOP, handler=lenient_grader) as fake:
        cfg, ctx = await run(config(tmp_path, fake.base_url, "c"))
    manifest = json.loads((cfg.run_dir / "manifest.json").read_text())
    usage, cost = manifest["usage"], manifest["cost"]
    for stage, row in usage.items():  # one model: cost is the tokens at its price
        expected = (row["prompt_tokens"] * PRICE["input"] + row["completion_tokens"] * PRICE["output"]) / 1e6
        assert row["cost"] == pytest.approx(expected, abs=1e-6) and cost["by_stage"][stage] == row["cost"]
    assert cost["total"] > 0 and cost["total"] == pytest.approx(sum(cost["by_stage"].values()))
    kept = manifest["counts"]["kept"]
    assert kept > 0  # the lenient grader keeps some of this config's trajectories
    assert cost["kept_trajectories"] == kept and cost["per_kept_trajectory"] == pytest.approx(cost["total"] / kept, abs=1e-6)
    card = (cfg.run_dir / "export" / "README.md").read_text()
    section = card[card.index("## Cost"):card.index("## Usage")]
    assert "| rollout |" in section and "per kept trajectory" in section and "`fake` 1.0 / 4.0" in section
    report = build_report(cfg.run_dir)
    card_html = report[report.index('id="card-cost"'):]
    assert "per kept trajectory" in card_html[:card_html.index("</section>")]


def test_the_cli_prints_the_summary_and_exits_with_the_budget_code(tmp_path):
    with fake_openai_in_thread(stop_marker=STOP) as fake:
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(config(tmp_path, fake.base_url, "cli", {"tokens": 6000})))  # past tools, agents and tasks (rubrics)
        result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 3, result.output
    out = " ".join(result.output.split())
    assert "STOPPED in the rollout stage: the token budget is reached" in out
    assert "rerun with a higher llm.budget.tokens to resume" in out
