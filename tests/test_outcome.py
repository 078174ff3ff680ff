"""Weak-model output kept instead of dropped: names repaired to snake_case (tools/names.py), and a run
that makes nothing at a stage says so and exits non-zero (synth/outcome.py), with the scripted fake."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from synth.outcome import EMPTY_EXIT_CODE
from synth.user_sim import STOP
from tests.fake_openai import fake_openai_in_thread
from tools.evolve import ParameterDraft, ToolDraft, repair_names
from tools.names import PARAMETER_NAME, TOOL_NAME, snake_case


@pytest.mark.parametrize("raw, fixed", [
    ("Check Please", "check_please"), ("getUser", "get_user"), ("HTTPServer", "http_server"),
    ("list-orders", "list_orders"), ("user_ID", "user_id"), ("Café au lait", "cafe_au_lait"),
    ("check please thanks done our", "check_please_thanks_done_our"), ("get_user", "get_user"),
])
def test_names_are_repaired_to_snake_case_when_unambiguous(raw, fixed):
    assert snake_case(raw, TOOL_NAME) == fixed


@pytest.mark.parametrize("raw", ["!!!", "  ", "2fast", "ab", "x" * 42, "日本語"])
def test_names_that_cannot_be_repaired_without_guessing_are_refused(raw):
    assert snake_case(raw, TOOL_NAME) is None


def _tool(name: str, *params: str) -> ToolDraft:
    return ToolDraft(name=name, description="Does a thing.", parameters=[
        ParameterDraft(name=p, type="string", description="p", required=True) for p in params])


def test_colliding_parameters_are_ambiguous_and_unrepairable_ones_named():
    tool, repairs, problems = repair_names(_tool("getUser", "userId", "user_id"))
    assert tool.name == "get_user" and [r.as_dict() for r in repairs][0] == {"field": "tool", "from": "getUser",
                                                                               "to": "get_user"}
    assert problems == ["parameters 'userId', 'user_id' all become 'user_id': ambiguous"]
    _, _, problems = repair_names(_tool("get_user", "???"))
    assert problems == [f"parameter name '???' cannot be made to fit {PARAMETER_NAME.pattern} without guessing"]
    # Two parameters the model itself named alike are not a repair's doing: left as before.
    assert repair_names(_tool("get_user", "id", "id"))[2] == []


def _bad_names(body):
    """Every toolset (and tool, and parameter) named against the pattern; one tool collides after repair."""
    text = body["messages"][-1]["content"]
    if "toolset for an AI assistant" in text:
        return json.dumps({"name": "Check Please", "state_model": "orders with ids", "tools": [
            {"name": "getOrder", "description": "Get one order by its id.",
             "parameters": [{"name": "orderId", "type": "string", "description": "id", "required": True}]},
            {"name": "List Orders", "description": "List every order.",
             "parameters": [{"name": "Max Count", "type": "integer", "description": "cap", "required": False}]},
            {"name": "get_order", "description": "Get an order again.",
             "parameters": [{"name": "order_id", "type": "string", "description": "id", "required": True}]},
        ]})
    return None


def _config(tmp_path, fake, **overrides) -> str:
    data = {"name": "t", "runs_dir": str(tmp_path / "runs"),
            "llm": {"base_url": fake.base_url, "model": "fake", "max_retries": 0},
            "tools": {"categories": 2, "domains_per_category": 1, "toolsets_per_domain": 1, "tools_per_toolset": 3},
            "tasks": {"per_agent": 1, "rubric_items": 2, "world": False},  # plain tasks: the fake's worlds are rejected
            "rollout": {"samples_per_task": 1, "max_turns": 1, "max_tool_steps": 1,
                        "sandbox": {"type": "local", "isolation": "none"}}, **overrides}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_run_whose_every_toolset_breaks_the_pattern_keeps_them_with_repaired_names(tmp_path):
    from synth.commands.tools import app

    with fake_openai_in_thread(stop_marker=STOP, handler=_bad_names) as fake:
        result = CliRunner().invoke(app, ["evolve", _config(tmp_path, fake), "--quiet"])
    run = tmp_path / "runs" / "t"
    assert result.exit_code == 0, result.output
    tools = _lines(run / "tools.jsonl")
    assert len({t["toolset_id"] for t in tools}) == 2, "both toolsets kept"
    assert {t["toolset"] for t in tools} == {"check_please"}
    assert sorted(t["name"] for t in tools) == ["get_order", "get_order", "list_orders", "list_orders"]
    listing = next(t for t in tools if t["name"] == "list_orders")
    assert list(listing["inputSchema"]["properties"]) == ["max_count"]
    assert listing["provenance"]["repaired"] == [
        {"field": "toolset", "from": "Check Please", "to": "check_please"},
        {"field": "tool", "from": "List Orders", "to": "list_orders"},
        {"field": "parameter", "from": "Max Count", "to": "max_count"}]
    # The third tool collides with the repaired first one: rejected with both names, per toolset.
    errors = [e for e in _lines(run / "errors.jsonl") if e["error_type"] == "Rejected"]
    assert len(errors) == 2
    assert all("duplicate tool name 'get_order'" in e["message"] for e in errors)
    # Counted: per toolset its name (1) + getOrder, orderId, List Orders, Max Count (4).
    assert "names repaired to snake_case: 10" in " ".join(result.output.split())


def _no_agent_replies(body):
    """Tools, agents and tasks as usual; every agent turn (a request offering tools) fails for good."""
    if body.get("tools"):
        return {"status": 400, "error": "model overloaded: tool calling unavailable"}
    return None


def test_a_run_that_makes_no_trajectory_exits_non_zero_naming_the_stage_and_its_top_error(tmp_path):
    from cli import app

    with fake_openai_in_thread(stop_marker=STOP, handler=_no_agent_replies) as fake:
        config = _config(tmp_path, fake)
        failed = CliRunner().invoke(app, ["run", config, "--quiet"])
        output = " ".join(failed.output.split())
        assert failed.exit_code == EMPTY_EXIT_CODE, failed.output
        assert "NOTHING MADE: the rollout stage produced 0 trajectories" in output
        assert "top error (2 of 2 rollout errors): ProviderError:" in output and "tool calling unavailable" in output
        assert "--allow-empty" in output
        # Accepted on request; the rerun resumes (the failed episodes are tried again, and fail again).
        accepted = CliRunner().invoke(app, ["run", config, "--quiet", "--allow-empty"])
    assert accepted.exit_code == 0, accepted.output
    assert "NOTHING MADE: the rollout stage" in " ".join(accepted.output.split())
    manifest = json.loads((tmp_path / "runs" / "t" / "manifest.json").read_text())
    assert manifest["counts"]["trajectories"] == 0 and manifest["counts"]["tasks"] == 2
