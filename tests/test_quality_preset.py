"""`synth run --quality`: the quickstart (or any config) served by the embedded quality preset, with the
timeout its slow requests need and a run dir of its own; refused, with the fix named, when the config
points at an endpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from synth.commands.pipeline import with_quality_preset
from synth.config import load_config
from synth.core.models import QUALITY_PRESET, QUALITY_TIMEOUT_S, find_preset
from synth.run import embedded_llm_config

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "examples" / "quickstart.yaml"


@pytest.fixture(autouse=True)
def no_endpoint(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def test_the_quickstart_with_quality_serves_the_quality_preset_and_keeps_everything_else():
    plain = load_config(QUICKSTART)
    cfg = with_quality_preset(plain, rename=True)
    assert find_preset(QUALITY_PRESET) is not None and cfg.embedded.model == QUALITY_PRESET
    assert cfg.name == "quickstart-quality" and cfg.run_dir != plain.run_dir  # never resumes the SmolLM2 run
    assert cfg.llm.timeout_s == QUALITY_TIMEOUT_S > plain.llm.timeout_s
    # The quickstart names smollm2 in its requests; with --quality they name the served preset's alias,
    # so no reply cached for SmolLM2 answers for it.
    assert plain.llm.model == "smollm2" and embedded_llm_config(cfg).model == find_preset(QUALITY_PRESET).alias
    assert cfg.tasks == plain.tasks and cfg.rollout == plain.rollout and cfg.tools == plain.tools
    assert cfg.llm.max_tokens == plain.llm.max_tokens and cfg.llm.concurrency == plain.llm.concurrency
    named = with_quality_preset(plain, rename=False)
    assert named.name == plain.name  # --name given: the user's name stands


def test_a_longer_timeout_in_the_config_is_kept(tmp_path):
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump({"name": "slow", "llm": {"timeout_s": 3600}, "embedded": {"model_file": "/x.gguf"}}))
    cfg = with_quality_preset(load_config(path), rename=True)
    assert cfg.llm.timeout_s == 3600 and cfg.embedded.model == QUALITY_PRESET and cfg.embedded.model_file is None


def test_quality_with_an_endpoint_is_refused_with_the_fix(tmp_path, monkeypatch):
    from cli import app

    path = tmp_path / "remote.yaml"
    path.write_text(yaml.safe_dump({"name": "remote", "runs_dir": str(tmp_path / "runs"),
                                    "llm": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}))
    result = CliRunner().invoke(app, ["run", str(path), "--quality", "--quiet"])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "--quality serves the embedded" in output and "http://127.0.0.1:9/v1" in output
    assert "drop --quality, or unset llm.base_url / OPENAI_BASE_URL" in output
    assert not (tmp_path / "runs").exists()  # refused before anything was written
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8/v1")
    path.write_text(yaml.safe_dump({"name": "remote", "runs_dir": str(tmp_path / "runs")}))
    by_env = CliRunner().invoke(app, ["run", str(path), "--quality", "--quiet"])
    assert by_env.exit_code == 2 and "http://127.0.0.1:8/v1" in " ".join(by_env.output.split())


@pytest.mark.bigmodel
@pytest.mark.llm
def test_quality_runs_the_pipeline_on_the_quality_preset_for_real(tmp_path):
    """The whole pipeline on the real quality preset, one tiny unit per stage (about 10 min here)."""
    import subprocess
    import sys

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "runs_dir": str(tmp_path / "runs"), "llm": {"max_tokens": 256, "concurrency": 1},
        "tools": {"categories": 1, "domains_per_category": 1, "toolsets_per_domain": 1, "tools_per_toolset": 2},
        "tasks": {"per_agent": 1, "world": False, "rubric_items": 4},
        "rollout": {"samples_per_task": 1, "max_turns": 2, "max_tool_steps": 2, "sandbox": {"type": "local"}}}))
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_BASE_URL"}
    done = subprocess.run([sys.executable, str(REPO / "cli.py"), "run", str(path), "--quality", "--quiet",
                           "--allow-empty"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = tmp_path / "runs" / "tiny-quality"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["models"]["default"] == {"model": find_preset(QUALITY_PRESET).alias,
                                             "endpoint": f"embedded {QUALITY_PRESET}"}
    assert manifest["counts"]["tasks"] >= 1 and manifest["stages"]["judge"]["status"] == "done"
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert written["llm"]["timeout_s"] == QUALITY_TIMEOUT_S and written["embedded"]["model"] == QUALITY_PRESET


def test_the_quality_bench_points_a_config_at_a_preset_the_same_way(monkeypatch):
    from bench.quality import bench_config

    data = bench_config(QUICKSTART, "qwen2.5-coder-1.5b")  # case-insensitive preset name
    assert data["name"] == "quickstart-quality-qwen2.5-coder-1.5b"
    assert data["embedded"] == {"model": "Qwen2.5-Coder-1.5B"} and "model" not in data["llm"]
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:7/v1")
    with pytest.raises(SystemExit, match="http://127.0.0.1:7/v1.*measure it with --run-dir"):
        bench_config(QUICKSTART, "Qwen2.5-Coder-1.5B")
