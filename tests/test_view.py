"""`synth view` without a browser: what the report is built from (funnel, yields, coverage, diffs, filter
data), tolerance of odd run directories, escaping, the CLI and the loopback server."""

from __future__ import annotations

import gzip
import base64
import json
import re
import threading
import urllib.error
import urllib.request
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from judges.filters import reason_kind as pipeline_reason_kind
from synth.view.diff import state_diff
from synth.view.joins import Run
from synth.view.page import build_report, write_report
from synth.view.payload import CHUNK, build_payload
from synth.view.rundir import ViewError, read_run_dir
from synth.view.serve import report_server
from synth.view.summary import reason_kind, summarize
from tests.synthetic_run import HOSTILE, write_synthetic_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return write_synthetic_run(tmp_path_factory.mktemp("view") / "run", 120, seed=3)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_of(root: Path) -> Run:
    return Run(read_run_dir(root))


def test_the_viewer_imports_nothing_of_the_project_but_itself_and_only_cli_imports_it():
    """So it survives the pipeline's modules moving: it reads run dirs as JSON, not through record classes."""
    from tests.test_layers import graph

    edges = graph()
    outside = {(module, target) for module, targets in edges.items() if module.startswith("synth.view")
               for target in targets if not target.startswith("synth.view")}
    assert outside == set()
    importers = {module for module, targets in edges.items() if not module.startswith("synth.view")
                 and any(t.startswith("synth.view") for t in targets)}
    assert importers == {"cli"}


# -- numbers --------------------------------------------------------------------------------------

def test_funnel_and_drop_reasons_count_what_the_files_hold(run_dir):
    summary = summarize(run_of(run_dir))
    trajectories, verdicts = lines(run_dir / "trajectories.jsonl"), lines(run_dir / "verdicts.jsonl")
    kept = sum(v["keep"] for v in verdicts)
    assert dict(summary.funnel) == {"tools": len(lines(run_dir / "tools.jsonl")), "agents": len(lines(run_dir / "agents.jsonl")),
                                    "tasks": len(lines(run_dir / "tasks.jsonl")), "trajectories": len(trajectories),
                                    "judged": len(verdicts), "kept": kept}
    assert 0 < kept < len(verdicts) < len(trajectories)  # the fixture has kept, dropped and unjudged ones
    expected = Counter(kind for v in verdicts for kind in {pipeline_reason_kind(r) for r in v["reasons"]})
    assert dict(summary.drop_reasons) == dict(expected)
    assert summary.failed_units == dict(Counter(e["stage"] for e in lines(run_dir / "errors.jsonl")))
    assert sum(k + d for _, _, k, d in summary.score_bins) == len(verdicts)
    assert sum(k for _, _, k, _ in summary.score_bins) == kept


def test_reason_kinds_agree_with_the_judge_filters_and_group_unknown_reasons():
    for reason in ("check failed: tool_arguments_valid", "essential criterion failed: books the flight",
                   "score 0.25 below threshold 0.50", "cut off by max_turns before the user ended the conversation"):
        assert reason_kind(reason) == pipeline_reason_kind(reason)
    # a reason shape added later: its numbers do not split it into one kind per value
    assert reason_kind("user simulator broke character at turn 2") == reason_kind("user simulator broke character at turn 5")


def test_yields_per_domain_and_difficulty_add_up(run_dir):
    run = run_of(run_dir)
    summary = summarize(run)
    verdicts = {v["trajectory_id"]: v for v in lines(run_dir / "verdicts.jsonl")}
    for facet in ("domain", "difficulty", "strategy"):
        groups = summary.yields[facet]
        assert sum(y.judged for y in groups.values()) == len(verdicts)
        assert sum(y.kept for y in groups.values()) == sum(v["keep"] for v in verdicts.values())
    tasks = {t["id"]: t for t in lines(run_dir / "tasks.jsonl")}
    hard = [t for t in lines(run_dir / "trajectories.jsonl") if tasks[t["task_id"]]["difficulty"] == "hard" and t["id"] in verdicts]
    assert summary.yields["difficulty"]["hard"].judged == len(hard)
    assert summary.yields["difficulty"]["hard"].kept == sum(verdicts[t["id"]]["keep"] for t in hard)


def test_tool_coverage_counts_calls_errors_and_faults_per_tool(run_dir):
    summary = summarize(run_of(run_dir))
    calls = [c for t in lines(run_dir / "trajectories.jsonl") for c in t["tool_calls"]]
    assert sum(u.calls for u in summary.tools) == len(calls)
    assert sum(u.errors for u in summary.tools) == sum(c["is_error"] for c in calls)
    assert sum(u.faults for u in summary.tools) == sum(bool(c["fault"]) for c in calls) > 0
    pool = [u for u in summary.tools if u.in_pool]
    assert len(pool) == len(lines(run_dir / "tools.jsonl"))
    assert any(u.calls == 0 for u in pool)  # never-called tools are listed too


def test_a_call_to_a_tool_no_agent_was_offered_is_listed_outside_the_pool(tmp_path):
    root = write_synthetic_run(tmp_path / "run", 6)
    rows = lines(root / "trajectories.jsonl")
    rows[0]["tool_calls"].append({"call_id": "call_x", "name": "invented_tool", "arguments": "{}", "result": "Error: unknown tool",
                                  "is_error": True, "fault": None, "latency_s": 0.0, "turn": 1})
    (root / "trajectories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    invented = [u for u in summarize(run_of(root)).tools if not u.in_pool]
    assert [(u.name, u.calls, u.errors) for u in invented] == [("invented_tool", 1, 1)]


def test_runtime_mix_is_inferred_from_implementations_unless_traces_say(tmp_path):
    root = write_synthetic_run(tmp_path / "old", 40, seed=1)
    run = run_of(root)
    mix, from_traces = summarize(run).runtime_mix, summarize(run).runtime_from_traces
    assert not from_traces and set(mix) <= {"executable", "simulated"}
    passing = {i["toolset_id"] for i in lines(root / "implementations.jsonl") if i["passed"]}
    agents = {a["id"]: a for a in lines(root / "agents.jsonl")}
    tools = {t["id"]: t for t in lines(root / "tools.jsonl")}
    expected = Counter()
    for t in lines(root / "trajectories.jsonl"):
        toolsets = {tools[i]["toolset_id"] for i in agents[t["agent_id"]]["tool_ids"]}
        expected["executable" if toolsets <= passing else "simulated"] += len(t["tool_calls"])
    assert mix == dict(expected) and len(mix) == 2

    future = write_synthetic_run(tmp_path / "new", 40, seed=1, future=True)
    summary = summarize(run_of(future))
    calls = [c for t in lines(future / "trajectories.jsonl") for c in t["tool_calls"]]
    assert summary.runtime_from_traces and summary.runtime_mix == dict(Counter(c["runtime"] for c in calls))


def test_usage_shows_cost_columns_and_unknown_manifest_sections_when_the_manifest_has_them(tmp_path):
    from synth.view.overview import render_overview

    root = write_synthetic_run(tmp_path / "run", 6)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["usage"]["rollout"]["cost"] = 1.25
    manifest["usage"]["judge"]["cost"] = 0.5
    manifest["some_new_section"] = {"written_by": "a later version"}
    (root / "manifest.json").write_text(json.dumps(manifest))
    files = read_run_dir(root)
    html = render_overview(files, summarize(Run(files)))
    usage = html[html.index('id="card-usage"'):]
    usage = usage[:usage.index("</section>")]
    assert "<th>cost</th>" in usage and "<td>1.25</td>" in usage and "<td>1.75</td>" in usage  # total row
    assert 'id="card-manifest-extra"' in html and "written_by" in html


FIXTURE_RUN = Path(__file__).parent / "fixtures" / "runs" / "resume"


def test_a_run_dir_written_by_older_code_shows_as_its_manifest_counts_it(tmp_path):
    """tests/fixtures/runs/resume was written before the restructure (executable, composite and simulated rollouts)."""
    from synth.core.records import Agent, Implementation, ToolSpec
    from tools.serving import Serving

    run = run_of(FIXTURE_RUN)
    summary = summarize(run)
    manifest = json.loads((FIXTURE_RUN / "manifest.json").read_text())
    funnel = dict(summary.funnel)
    assert {k: funnel[k] for k in ("tools", "agents", "tasks", "trajectories", "kept")} == {
        k: manifest["funnel"]["counts"][k] for k in ("tools", "agents", "tasks", "trajectories", "kept")}
    assert dict(summary.drop_reasons) == manifest["funnel"]["drop_reasons"]
    assert summary.failed_units == manifest["funnel"]["failed_units"]
    # the runtime inferred per agent is the one the rollout's own rule picks
    implementations = {i["toolset_id"]: Implementation.model_validate(i) for i in lines(FIXTURE_RUN / "implementations.jsonl")
                       if i["passed"]}
    tools = {t["id"]: ToolSpec.model_validate(t) for t in lines(FIXTURE_RUN / "tools.jsonl")}
    serving = Serving(tools, implementations)
    picked = {a["id"]: "executable" if serving.implementation(Agent.model_validate(a)) else "simulated"
              for a in lines(FIXTURE_RUN / "agents.jsonl")}
    assert {a["id"]: run.inferred_runtime(a) for a in lines(FIXTURE_RUN / "agents.jsonl")} == picked
    assert set(picked.values()) == {"executable", "simulated"}
    out = write_report(FIXTURE_RUN, tmp_path / "report.html")
    assert not (FIXTURE_RUN / "report.html").exists() and out.stat().st_size > 0


# -- state diff -----------------------------------------------------------------------------------

def test_state_diff_names_each_added_removed_and_changed_path():
    before = {"orders": {"1": {"status": "open", "qty": 1}, "2": {"status": "open"}}, "next_id": 3, "tags": ["a", "b"], "flag": 1}
    after = {"orders": {"1": {"status": "closed", "qty": 1}, "3": {"status": "open"}}, "next_id": 4, "tags": ["a"], "flag": True,
             "new key": {"x": 1}}
    changes, more = state_diff(before, after)
    assert more == 0
    assert {(c["path"], c["op"]) for c in changes} == {
        ("orders.1.status", "changed"), ("orders.2", "removed"), ("orders.3", "added"), ("next_id", "changed"),
        ("tags[1]", "removed"), ("flag", "changed"), ("['new key']", "added")}
    by_path = {c["path"]: c for c in changes}
    assert by_path["orders.1.status"]["before"] == "open" and by_path["orders.1.status"]["after"] == "closed"
    assert by_path["orders.3"] == {"path": "orders.3", "op": "added", "after": {"status": "open"}}
    assert "after" not in by_path["orders.2"]
    assert state_diff({"a": 1.0}, {"a": 1}) == ([], 0)  # a number is the same number


def test_state_diff_stops_at_its_limit_and_counts_the_rest():
    changes, more = state_diff({}, {f"k{i}": i for i in range(30)}, limit=10)
    assert len(changes) == 10 and more == 20
    assert state_diff({"a": 1}, {"a": 1}) == ([], 0)
    assert state_diff({"a": [1]}, "not a dict")[0] == [{"path": "(whole state)", "op": "changed", "before": {"a": [1]},
                                                        "after": "not a dict"}]


# -- what the page's filters read -----------------------------------------------------------------

def test_index_rows_carry_what_the_filters_need_and_chunks_hold_every_detail(run_dir):
    run = run_of(run_dir)
    payload = build_payload(run)
    trajectories = lines(run_dir / "trajectories.jsonl")
    verdicts = {v["trajectory_id"]: v for v in lines(run_dir / "verdicts.jsonl")}
    tasks = {t["id"]: t for t in lines(run_dir / "tasks.jsonl")}
    rows = payload.index["trajectories"]
    assert [r["id"] for r in rows] == [t["id"] for t in trajectories]
    for row, trajectory in zip(rows, trajectories):
        verdict = verdicts.get(trajectory["id"])
        assert row["k"] == (verdict["keep"] if verdict else None)
        assert row["s"] == (verdict["score"] if verdict else None)
        assert row["r"] == (list(dict.fromkeys(pipeline_reason_kind(r) for r in verdict["reasons"])) if verdict else [])
        assert row["f"] == trajectory["user_flags"]
        assert row["e"] == sum(c["is_error"] for c in trajectory["tool_calls"])
        assert row["fa"] == sum(bool(c["fault"]) for c in trajectory["tool_calls"])
        assert row["d"] == tasks[trajectory["task_id"]]["difficulty"]
        assert row["ts"] and all(isinstance(name, str) and name for name in row["ts"])
    details = [d for chunk in payload.chunks for d in json.loads(gzip.decompress(chunk))]
    assert len(payload.chunks) == -(-len(trajectories) // CHUNK) > 1
    assert [d["t"] for d in details] == trajectories
    for detail, trajectory in zip(details, trajectories):
        expected, _ = state_diff(tasks[trajectory["task_id"]]["initial_state"], trajectory["final_state"])
        assert detail["d"] == expected
        assert detail["v"] == verdicts.get(trajectory["id"])
    task_rows = {r["id"]: r for r in payload.index["tasks"]}
    for row in rows:
        assert row["i"] in task_rows[row["task"]]["tr"]


# -- odd run directories --------------------------------------------------------------------------

def test_unreadable_lines_are_reported_and_the_rest_is_shown(tmp_path):
    root = write_synthetic_run(tmp_path / "run", 10)
    with (root / "verdicts.jsonl").open("a") as fh:
        fh.write("this is not json\n[1, 2]\n")
    with (root / "trajectories.jsonl").open("a") as fh:
        fh.write('{"id": "torn", "messages": [')  # a kill mid-write
    files = read_run_dir(root)
    assert len(files["trajectories"]) == 10 and len(files["verdicts"]) == len(lines_ok(root / "verdicts.jsonl"))
    assert any("verdicts.jsonl:" in p and "not JSON" in p for p in files.problems)
    assert any("not an object" in p for p in files.problems)
    assert any("trajectories.jsonl:11" in p and "no newline" in p for p in files.problems)
    html = build_report(root)
    assert 'id="problems"' in html and "trajectories.jsonl:11" in html
    assert (root / "trajectories.jsonl").read_text().endswith('"messages": [')  # read-only: nothing trimmed


def lines_ok(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            out.append(row)
    return out


def test_records_of_an_older_version_with_fields_missing_still_show(tmp_path):
    root = tmp_path / "old"
    root.mkdir()
    (root / "trajectories.jsonl").write_text(json.dumps({"id": "t1", "task_id": "gone", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n")
    (root / "verdicts.jsonl").write_text(json.dumps({"id": "v1", "trajectory_id": "t1", "score": 0.2, "keep": False,
                                                     "reasons": ["score 0.20 below threshold 0.50"]}) + "\n")
    summary = summarize(run_of(root))
    assert dict(summary.funnel)["judged"] == 1 and summary.drop_reasons == [("score below threshold", 1)]
    payload = build_payload(run_of(root))
    assert payload.index["trajectories"][0]["k"] is False and payload.index["trajectories"][0]["ts"] == []
    assert "synth view" in build_report(root)


def test_a_run_killed_after_its_first_stage_shows_what_there_is(tmp_path):
    root = write_synthetic_run(tmp_path / "full", 4)
    early = tmp_path / "early"
    early.mkdir()
    (early / "tools.jsonl").write_text((root / "tools.jsonl").read_text())
    summary = summarize(run_of(early))
    assert dict(summary.funnel) == {"tools": len(lines(root / "tools.jsonl")), "agents": 0, "tasks": 0, "trajectories": 0,
                                    "judged": 0, "kept": 0}
    html = build_report(early)
    assert 'id="chunk-' not in html and "no tool calls" in html


def test_a_directory_that_is_no_run_dir_gets_an_error_naming_the_fix(tmp_path):
    with pytest.raises(ViewError, match="not a directory"):
        read_run_dir(tmp_path / "missing")
    with pytest.raises(ViewError, match="is it a run directory"):
        read_run_dir(tmp_path)


# -- escaping -------------------------------------------------------------------------------------

class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_hostile_text_reaches_the_html_only_escaped(tmp_path):
    root = write_synthetic_run(tmp_path / "run", 30, hostile=True, future=True)
    html = build_report(root)
    parser = Tags()
    parser.feed(html)
    names = {tag for tag, _ in parser.tags}
    assert "img" not in names
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", html)[1]
    runnable = [a for a in scripts if a.get("type") not in ("application/json", "application/gzip+base64")]
    assert runnable == [{"nonce": nonce}]  # only the report's own script can run
    assert "onerror" not in {key for _, attrs in parser.tags for key in attrs}
    assert "&lt;script&gt;window.__pwned" in html  # shown, as text (domain, tool name, reasons in the overview)
    index = json.loads(re.search(r'<script type="application/json" id="index">(.*?)</script>', html, re.S)[1])
    assert any(HOSTILE in row["g"] for row in index["trajectories"])  # the data itself is intact
    tables = json.loads(gzip.decompress(base64.b64decode(re.search(r'id="tables">(.*?)</script>', html, re.S)[1])))
    assert any(HOSTILE in t["goal"] for t in tables["tasks"].values())


# -- command and server ---------------------------------------------------------------------------

def test_the_command_writes_the_report_and_prints_its_path(run_dir, tmp_path):
    out = tmp_path / "sub" / "r.html"
    result = CliRunner().invoke(app, ["view", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert out.read_text().startswith("<!doctype html>")
    assert not list(out.parent.glob("*.partial"))
    default = CliRunner().invoke(app, ["view", str(run_dir)])
    assert default.exit_code == 0 and (run_dir / "report.html").exists()


def test_the_command_refuses_bad_arguments_with_the_fix(tmp_path):
    missing = CliRunner().invoke(app, ["view", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "give the run directory" in missing.output
    port_alone = CliRunner().invoke(app, ["view", str(tmp_path), "--port", "8123"])
    assert port_alone.exit_code == 2 and "add --serve" in port_alone.output


def test_the_server_answers_the_report_on_loopback_only(run_dir, tmp_path):
    report = write_report(run_dir, tmp_path / "report.html")
    server = report_server(report, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as response:
            assert response.read() == report.read_bytes()
            assert response.headers["Content-Type"].startswith("text/html")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/../../etc/passwd")
        assert err.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


async def test_a_run_the_pipeline_wrote_shows_the_manifests_funnel(tmp_path):
    """The viewer reads what the stages really write (scripted endpoint), and counts as the manifest does."""
    from synth.config import RunConfig
    from synth.run import STAGES, open_run, run_stages
    from synth.user_sim import STOP
    from tests.fake_openai import FakeOpenAI

    async with FakeOpenAI(stop_marker=STOP) as fake:
        cfg = RunConfig.model_validate({
            "name": "t", "runs_dir": str(tmp_path), "llm": {"base_url": fake.base_url, "model": "fake", "max_retries": 1},
            "tools": {"categories": 2, "domains_per_category": 1, "toolsets_per_domain": 1, "tools_per_toolset": 2},
            "tasks": {"per_agent": 2, "rubric_items": 3, "world": False}, "rollout": {"samples_per_task": 2, "max_turns": 2, "max_tool_steps": 2,
                                                                      "sandbox": {"type": "local", "isolation": "none"}}})
        async with open_run(cfg, quiet=True) as ctx:
            await run_stages(ctx, list(STAGES))
    manifest = json.loads((cfg.run_dir / "manifest.json").read_text())
    run = run_of(cfg.run_dir)
    summary = summarize(run)
    funnel = dict(summary.funnel)
    counts = manifest["funnel"]["counts"]
    assert {k: funnel[k] for k in ("tools", "agents", "tasks", "trajectories", "kept")} == {
        k: counts[k] for k in ("tools", "agents", "tasks", "trajectories", "kept")}
    assert funnel["judged"] == counts["verdicts"] > 0
    assert dict(summary.drop_reasons) == manifest["funnel"]["drop_reasons"]
    assert sum(u.calls for u in summary.tools) == sum(len(t["tool_calls"]) for t in lines(cfg.run_dir / "trajectories.jsonl")) > 0
    rows = build_payload(run).index["trajectories"]
    assert all(r["dom"] and r["ts"] and r["d"] for r in rows)  # every join found its task, agent and tools
    assert write_report(cfg.run_dir).stat().st_size > 0
