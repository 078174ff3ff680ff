"""`--estimate` and a token budget on the real embedded model (llama.cpp server + SmolLM2-135M), tiny
counts: the pilot's answers are reused by the real run, the budget stops it with exit code 3, and a
higher budget finishes it without any answered request sent again (the ledger paid for each answer
in the cache once)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from synth.core.records import RECORD_FILES
from synth.core.store import RunStore
from tests.test_e2e_llm import synth

pytestmark = pytest.mark.llm


def cache_lines(run_dir: Path) -> list[str]:
    return [line for segment in (run_dir / "cache").glob("*.jsonl") for line in segment.read_text().splitlines()]


def cache_keys(run_dir: Path) -> Counter[str]:
    """Every response the run's cache holds: a key twice would be an answered request sent twice."""
    return Counter(line.split("\t", 1)[0] for line in cache_lines(run_dir))


def answer_tokens(run_dir: Path) -> list[int]:
    """The tokens of each answer in the run's cache."""
    return [usage["prompt_tokens"] + usage["completion_tokens"]
            for line in cache_lines(run_dir) for usage in [json.loads(line.split("\t", 1)[1])["usage"]]]


def test_the_pilot_is_reused_the_budget_stops_the_run_and_a_higher_one_finishes_it(tmp_path):
    config = {
        "name": "tiny", "runs_dir": str(tmp_path / "runs"),
        "llm": {"max_tokens": 320, "concurrency": 1, "temperature": 0.4},
        "tools": {"categories": 1, "domains_per_category": 1, "toolsets_per_domain": 1, "tools_per_toolset": 2},
        "tasks": {"per_agent": 2, "rubric_items": 2, "world": False},  # mechanics: plain tasks
        "rollout": {"samples_per_task": 2, "max_turns": 1, "max_tool_steps": 1, "concurrency": 1},  # pilot: 1 of them
        "judge": {"keep_threshold": 0.0},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "runs" / "tiny"

    pilot = synth("run", str(path), "--estimate", "--pilot-units", "1", "--quiet", cwd=tmp_path)
    assert pilot.returncode == 0, pilot.stderr[-3000:]
    assert "projected for the full config" in " ".join(pilot.stderr.split())
    pilot_tokens = sum(answer_tokens(run_dir))
    assert pilot_tokens > 0 and sorted(p.name for p in run_dir.iterdir()) == ["cache"]
    print(pilot.stderr)

    config["llm"]["budget"] = {"tokens": 400}  # operational: the same run dir
    path.write_text(yaml.safe_dump(config))
    stopped = synth("run", str(path), "--quiet", cwd=tmp_path)
    out = " ".join(stopped.stderr.split())
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    assert "STOPPED in the" in out and "token budget is reached" in out
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["budget"]["stopped_by"] == "tokens"
    # One request in flight at most (llm.concurrency 1): the overshoot is at most one answer.
    assert 400 <= manifest["budget"]["spent"]["tokens"] <= 400 + max(answer_tokens(run_dir))
    assert manifest["last_invocation"]["cached"] > 0  # the pilot's answers, free
    store = RunStore(run_dir, shared=True)
    for kind in RECORD_FILES:
        store.read(kind)  # every line a whole record (a torn one would be a ConfigError)

    config["llm"]["budget"] = {"tokens": 10_000_000}
    path.write_text(yaml.safe_dump(config))
    finished = synth("run", str(path), "--quiet", "--allow-empty", cwd=tmp_path)  # the 135M model's rows are dropped
    assert finished.returncode == 0, finished.stderr[-3000:]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["budget"]["stopped_by"] is None
    assert all(entry["status"] == "done" for entry in manifest["stages"].values())
    assert manifest["last_invocation"]["cached"] > 0 and (run_dir / "export" / "README.md").exists()
    # No answered request was sent twice: the two invocations paid for exactly the answers the pilot
    # did not get, each once.
    assert max(cache_keys(run_dir).values()) == 1
    assert manifest["budget"]["spent"]["tokens"] == sum(answer_tokens(run_dir)) - pilot_tokens
    real = [sum(row.get(k, 0) for row in manifest["usage"].values()) for k in ("requests", "prompt_tokens",
                                                                              "completion_tokens")]
    print(f"real run: {real[0]} requests sent after the pilot, {real[1] + real[2]} tokens paid; "
          f"cache holds {len(cache_lines(run_dir))} answers, {sum(answer_tokens(run_dir))} tokens")
