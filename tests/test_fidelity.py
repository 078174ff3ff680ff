"""`synth tools fidelity` on a recorded run: the calls an agent made to mcp-server-git replayed from the
task's seed through the real server (twice) and the LLM tool simulator, compared per tool."""

from __future__ import annotations

import asyncio
import json
import warnings

import pytest
import yaml
from typer.testing import CliRunner

from synth.commands.tools import app
from synth.core.store import RunStore
from tests.fake_openai import fake_openai_in_thread
from tests.test_real_servers import GIT_SEED, catalog_tools, rollout, scripted_agent, task  # noqa: F401
from tools.fidelity import shape

pytestmark = pytest.mark.mcp

REPO = {"repo_path": "/workspace/repo"}


def test_shapes_compare_keys_and_types_not_values():
    assert shape('{"a": 1, "b": ["x"]}') == shape('{"b": ["y", "z"], "a": 2.5}')
    assert shape('{"a": 1}') != shape('{"a": "1"}') != shape('{"b": 1}')
    assert shape("Commit history: ...") == shape("anything that is not JSON") == "text"
    assert shape("[]") != shape('[{"a": 1}]')


def test_fidelity_on_a_recorded_run_prints_the_table_and_saves_it(tmp_path, catalog_tools):  # noqa: F811
    calls = [("git_log", REPO), ("git_checkout", {**REPO, "branch_name": "no-such-branch"}), ("git_status", REPO)]

    with fake_openai_in_thread(handler=scripted_agent(calls)) as fake:  # the simulator gets the fake's default
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            asyncio.run(rollout(tmp_path, fake, catalog_tools["git"], [task(GIT_SEED)], sandbox={"type": "local"}))
        config = tmp_path / "run.yaml"
        config.write_text(yaml.safe_dump({"name": "real", "runs_dir": str(tmp_path), "rollout": {
            "max_turns": 1, "max_tool_steps": 6, "sandbox": {"type": "local"}},
            "llm": {"base_url": fake.base_url, "model": "fake", "max_retries": 0}}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = CliRunner().invoke(app, ["fidelity", str(config), "--worst", "3"])
    assert result.exit_code == 0, result.output
    assert "simulator fidelity: 3 calls" in result.output and "errors agree" in result.output
    for tool in ("git_log", "git_checkout", "git_status", "all"):
        assert tool in result.output
    report = RunStore(tmp_path / "real").manifest()["tool_fidelity"]
    assert report["calls"] == 3 and set(report["tools"]) == {"git_log", "git_checkout", "git_status"}
    # The real server fails the checkout of a missing branch; the fake simulator's answer (ok drawn by the
    # fake) agrees or not, and the per-tool figure is that agreement.
    cases = {case["tool"]: case for case in report["worst"]}
    assert cases["git_checkout"]["real_error"] and not cases["git_log"]["real_error"]
    for tool, case in cases.items():
        assert case["error_agrees"] == (case["real_error"] == case["simulated_error"])
        assert report["tools"][tool]["error_agreement"] == float(case["error_agrees"])
    # git's answers are deterministic here (fixed dates): compared exactly, and the fake's words never match.
    assert report["overall"]["deterministic"] == 3 and report["overall"]["values_compared"] == 3
    assert report["overall"]["value_agreement"] == 0.0
    assert json.loads(cases["git_checkout"]["arguments"])["branch_name"] == "no-such-branch"
