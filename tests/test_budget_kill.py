"""kill -9 in the middle of a budgeted run, then resume under a budget: the ledger kept what the killed
run spent (a rerun whose budget is that spend sends nothing and stops with exit code 3), and a higher
budget finishes the run with every episode once and no answered request sent again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synth.core.budget import LEDGER_FILE, Ledger
from synth.core.llm_cache import ResponseCache
from tests.test_resume import REPO, fake_endpoint_process, jsonl, kill_mid_rollout

CONCURRENCY = 4


def cached_tokens(run_dir: Path) -> tuple[int, int]:
    """Tokens of every answer in the run's response cache, and the most one answer cost."""
    sizes = [usage["prompt_tokens"] + usage["completion_tokens"]
             for segment in (run_dir / "cache").glob("*.jsonl") for line in segment.read_text().splitlines()
             for usage in [json.loads(line.split("\t", 1)[1])["usage"]]]
    return sum(sizes), max(sizes)


def spent_tokens(run_dir: Path) -> int:
    ledger = Ledger(run_dir / LEDGER_FILE)
    try:
        return ledger.spent().tokens
    finally:
        ledger.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_budgeted_run_killed_mid_rollout_resumes_under_its_budget_without_resending(tmp_path, workers):
    log = tmp_path / "requests.jsonl"
    with fake_endpoint_process(log) as base_url:
        config = {
            "name": "killed", "runs_dir": str(tmp_path / "runs"),
            "llm": {"base_url": base_url, "model": "fake", "concurrency": CONCURRENCY,
                    "budget": {"tokens": 10_000_000}},
            "tools": {"categories": 2, "domains_per_category": 1, "toolsets_per_domain": 1, "tools_per_toolset": 2},
            "tasks": {"per_agent": 3, "rubric_items": 2, "world": False},  # mechanics: plain tasks
            "rollout": {"samples_per_task": 2, "max_turns": 3, "max_tool_steps": 2, "concurrency": 2,
                        "workers": workers, "sandbox": {"type": "local", "isolation": "none",
                                                        "root": str(tmp_path / "sandboxes")}},
        }
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(config))
        run_dir = tmp_path / "runs" / "killed"
        argv = [sys.executable, str(REPO / "cli.py"), "run", str(path), "--quiet", "--allow-empty"]  # budget mechanics, not what is kept

        kill_mid_rollout(argv, run_dir, workers)

        # The ledger holds what the killed run paid for: every cached answer, plus at most the answers
        # charged in the instant between the charge and the cache append when the kill came.
        spent = spent_tokens(run_dir)
        answered, largest = cached_tokens(run_dir)
        assert answered <= spent <= answered + CONCURRENCY * largest
        sent_at_kill = len(log.read_text().splitlines())

        # A budget of exactly what was spent: the cache answers what was answered, nothing new is sent.
        config["llm"]["budget"] = {"tokens": spent}
        path.write_text(yaml.safe_dump(config))
        held = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert held.returncode == 3, held.stderr[-3000:]
        assert "token budget is reached" in " ".join(held.stderr.split())
        assert len(log.read_text().splitlines()) == sent_at_kill
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["budget"]["stopped_by"] == "tokens" and manifest["stages"]["rollout"]["status"] == "stopped"
        assert spent_tokens(run_dir) == spent

        # A higher budget finishes it: every episode exactly once, no answered request sent again.
        finished_calls = ResponseCache(run_dir / "cache").keys()
        config["llm"]["budget"] = {"tokens": 10_000_000}
        path.write_text(yaml.safe_dump(config))
        finished = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert finished.returncode == 0, finished.stderr[-3000:]
        tasks, trajectories = jsonl(run_dir / "tasks.jsonl"), jsonl(run_dir / "trajectories.jsonl")
        assert {(t["task_id"], t["sample"]) for t in trajectories} == {(t["id"], s) for t in tasks for s in (0, 1)}
        for kind in ("tools", "agents", "tasks", "trajectories", "verdicts", "errors"):
            ids = [r["id"] for r in jsonl(run_dir / f"{kind}.jsonl")]
            assert len(ids) == len(set(ids)), f"duplicate ids in {kind}.jsonl"
        cache = ResponseCache(run_dir / "cache")
        resent = [body for body in map(json.loads, log.read_text().splitlines()[sent_at_kill:])
                  if cache.key(body) in finished_calls]
        assert resent == [], "an LLM call answered before the kill was sent again"
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["budget"]["stopped_by"] is None
        assert all(entry["status"] == "done" for entry in manifest["stages"].values())
        assert spent_tokens(run_dir) >= cached_tokens(run_dir)[0]
