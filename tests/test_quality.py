"""judges/quality.py over hand-built run dirs whose answers are worked out by hand, and bench/quality.py's
outputs (quality.json, quality.md, the dataset card's section)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.quality import CARD_BEGIN, CARD_END, main, with_quality_section
from judges.quality import quality_report
from synth.core.records import (Agent, Criterion, ErrorRecord, StateAssertion, Task, ToolCallTrace, ToolSpec,
                                Trajectory, Verdict)
from synth.core.store import RunStore

FSA = "final_state_assertions"


def _tool(name: str, description: str, toolset: str) -> ToolSpec:
    return ToolSpec(name=name, description=description, inputSchema={"type": "object", "properties": {}},
                    toolset=toolset, toolset_id=toolset, domain=toolset)


def _task(unit: str, agent: Agent, initial: dict, assertions: list[StateAssertion]) -> Task:
    return Task(unit=unit, agent_id=agent.id, goal=f"goal {unit}", persona="p", rubric=[Criterion(text="c")],
                initial_state=initial, assertions=assertions)


def _trajectory(task: Task, sample: int, calls: list[str], flags: list[str]) -> Trajectory:
    return Trajectory(task_id=task.id, agent_id=task.agent_id, sample=sample, messages=[{"role": "system", "content": "s"}],
                      tools=[], user_flags=flags, tool_calls=[
                          ToolCallTrace(call_id=str(i), name=n, arguments="{}", result="ok") for i, n in enumerate(calls)])


def _verdict(t: Trajectory, keep: bool, checks: dict[str, bool], reasons: list[str]) -> Verdict:
    return Verdict(trajectory_id=t.id, task_id=t.task_id, keep=keep, checks=checks, reasons=reasons)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """4 trajectories of 3 tasks; 2 kept (one resting on a state check); judge vs state check on 3 of them:
    (keep, pass), (keep, fail), (drop, fail) -> tp 1, fp 1, fn 0, tn 1."""
    root = tmp_path / "run"
    root.mkdir()
    store = RunStore(root)
    tools = [_tool("get_item", "Get one item by its id.", "retail"), _tool("get_item", "Get one item by its id.", "travel"),
             _tool("book_trip", "Book a trip to a city on a date.", "travel")]
    retail = Agent(toolset_id="retail", toolset="retail", domain="retail", tool_ids=[tools[0].id], name="a",
                   system_prompt="s")
    travel = Agent(toolset_id="travel", toolset="travel", domain="travel", tool_ids=[tools[2].id], name="b",
                   system_prompt="s")
    exists = [StateAssertion(path="items.x", op="exists")]
    a = _task("a", retail, {}, exists)  # doing nothing fails it
    b = _task("b", travel, {"items": {"x": 1}}, exists)  # doing nothing passes it
    c = _task("c", travel, {}, [])
    t1, t2 = _trajectory(a, 0, ["get_item"], []), _trajectory(a, 1, ["get_item"], ["premature_stop"])
    t3, t4 = _trajectory(b, 0, ["book_trip"], []), _trajectory(c, 0, [], ["fact_leaked_unasked", "premature_stop"])
    verdicts = [_verdict(t1, True, {FSA: True, "tool_calls_answered": True}, []),
                _verdict(t2, False, {FSA: False}, [f"check failed: {FSA}"]),
                _verdict(t3, False, {FSA: False}, ["essential criterion failed: c", f"check failed: {FSA}"]),
                _verdict(t4, True, {"tool_calls_answered": True}, [])]
    for kind, records in (("tools", tools), ("agents", [retail, travel]), ("tasks", [a, b, c]),
                          ("trajectories", [t1, t2, t3, t4]), ("verdicts", verdicts)):
        store.append(kind, records)
    store.append("errors", [ErrorRecord(unit=f"u{i}", stage="rollout", error_type="SandboxError", message="boom")
                            for i in range(2)])
    (root / "manifest.json").write_text(json.dumps({"usage": {
        "rollout": {"requests": 8, "cached": 2, "prompt_tokens": 700, "completion_tokens": 100, "seconds": 4.0},
        "judge": {"requests": 4, "cached": 0, "prompt_tokens": 300, "completion_tokens": 100, "seconds": 2.0}}}))
    (root / "config.yaml").write_text("embedded:\n  model: Gemma-3-270M\n")
    return root


def metrics(root: Path) -> dict[str, dict]:
    return {m["name"]: m for m in quality_report(root)["metrics"]}


def test_every_metric_of_a_hand_built_run(run_dir):
    m = metrics(run_dir)
    assert quality_report(run_dir)["model"] == "embedded Gemma-3-270M"
    assert (m["toolsets"]["value"], m["trajectories"]["value"]) == (2, 4)
    assert m["kept of judged"]["shown"] == "0.50 (2/4)"
    assert m["drop reason 1"]["shown"] == f"2/2 dropped: check failed: {FSA}"
    assert m["drop reason 2"]["shown"] == "1/2 dropped: essential criterion failed"
    assert m["failed units: rollout"]["shown"] == "2 (top, 2x: SandboxError: boom)"
    assert m["executable share of toolsets"]["shown"] == "n/a (implement stage not run)"
    assert m["gold tasks valid"]["shown"] == "n/a (no gold tasks)"
    # Ground truth: t1 rests on a state check, t4 on nothing; task b's assertion holds before any call.
    assert m["kept rows resting on a state check"]["shown"] == "0.50 (1/2)"
    assert m["do-nothing pass rate (tasks with assertions)"]["shown"] == "0.50 (1/2)"
    # Graders: p_o = 2/3, p_e = (2*1 + 1*2)/9 = 4/9, kappa = (2/9)/(5/9) = 0.4.
    assert m["judge vs state check: Cohen's kappa"]["value"] == pytest.approx(0.4)
    assert m["judge vs state check: precision of keep"]["shown"] == "0.50 (1/2)"
    assert m["judge vs state check: recall of keep"]["shown"] == "1.00 (1/1)"
    assert m["re-judge stability (same keep)"]["value"] is None
    assert m["planted-defect recall"]["shown"] == "n/a (not measured: no calibrate --planted in calibration.json)"
    # User simulator over the 2 failed episodes (t2 flagged premature_stop, t3 clean); t4's flags were kept.
    assert m["failed episodes with any flag"]["shown"] == "0.50 (1/2)"
    assert m["flag: premature_stop"]["shown"] == "0.50 (1/2)"
    assert "flag: fact_leaked_unasked" not in m
    # Diversity: the second get_item repeats the first; sequences (get_item) x2, (book_trip), ().
    assert m["near-duplicate tools (token Jaccard >= 0.8)"]["shown"] == "0.33 (1/3)"
    assert m["distinct tool-call sequences"]["shown"] == "0.75 (3/4)"
    assert m["largest domain share of kept"]["value"] == 0.5
    # Cost: 12 requests, 1200 tokens, 6 s over 2 kept.
    assert m["LLM requests (sent, all stages)"]["shown"] == "12 (+2 from cache)"
    assert m["per kept trajectory: rollout"]["shown"] == "4.0 req, 400 tok, 2.0 LLM s"
    assert m["per kept trajectory: all stages"]["shown"] == "6.0 req, 600 tok, 3.0 LLM s"
    assert m["money"]["value"] is None


def test_stored_figures_of_other_stages_are_read_when_the_manifest_has_them(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest.update(judge_agreement={"keep_identical": 0.75, "trajectories": 4, "k": 3},
                    planted_defects={"recall": 0.8}, cost={"total": 0.012, "per_kept_trajectory": 0.006})
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    m = metrics(run_dir)
    assert m["re-judge stability (same keep)"]["shown"] == "0.75 (4 trajectories, k=3, judge samples)"
    # calibrate --planted's section of calibration.json wins: dropped copies over planted ones.
    (run_dir / "calibration.json").write_text(json.dumps({"planted": {"kinds": {
        "fact_leak": {"planted": 3, "dropped": 2}, "unbacked_claim": {"planted": 1, "dropped": 1}}}}))
    assert metrics(run_dir)["planted-defect recall"]["shown"] == "0.75 (3/4)"
    (run_dir / "calibration.json").unlink()
    assert m["planted-defect recall"]["value"] == 0.8
    assert m["money"]["shown"] == "0.0120 (0.0060 per kept trajectory)"
    # With stage wall times (synth run writes them since this bench), per kept trajectory uses those.
    manifest["stages"] = {"rollout": {"status": "done", "seconds": 30.0}, "judge": {"status": "done", "seconds": 10.0}}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    m = metrics(run_dir)
    assert m["seconds, all stages"]["shown"] == "40.0 wall s"
    assert m["per kept trajectory: rollout"]["shown"] == "4.0 req, 400 tok, 15.0 wall s"
    del manifest["stages"]["judge"]["seconds"]  # one stage's time unknown: no partial wall sum
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    assert metrics(run_dir)["per kept trajectory: rollout"]["shown"] == "4.0 req, 400 tok, 2.0 LLM s"


async def test_stage_wall_seconds_add_up_over_invocations_and_stay_unknown_when_not_recorded(tmp_path):
    from synth.run import open_run, run_stages
    from tests.fake_openai import FakeOpenAI
    from tests.test_pipeline import config

    async def tools_stage(cfg):
        async with open_run(cfg, quiet=True) as ctx:
            await run_stages(ctx, ["tools"])
        return json.loads((cfg.run_dir / "manifest.json").read_text())["stages"]["tools"]

    async with FakeOpenAI(latency_ms=50) as fake:
        cfg = config(tmp_path, fake)
        first = await tools_stage(cfg)
        assert first["seconds"] > 0
        assert (await tools_stage(cfg))["seconds"] >= first["seconds"]  # resumed: nothing lost
        manifest = json.loads((cfg.run_dir / "manifest.json").read_text())
        del manifest["stages"]["tools"]["seconds"]  # as written before stages had seconds
        (cfg.run_dir / "manifest.json").write_text(json.dumps(manifest))
        assert "seconds" not in await tools_stage(cfg)  # all skipped: the time is unknown, not 0


def test_an_empty_run_says_why_instead_of_reporting_zeros(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    (root / "manifest.json").write_text("{}")
    m = metrics(root)
    assert m["toolsets"]["value"] == 0 and m["trajectories"]["value"] == 0  # counts are counts
    rates = {name: x for name, x in m.items() if name not in ("toolsets", "agents", "tasks", "trajectories")}
    assert rates and all(x["value"] is None and x["shown"].startswith("n/a (") for x in rates.values()), rates
    assert m["failed episodes with any flag"]["shown"] == "n/a (no trajectories)"


def test_trajectories_written_before_user_flags_existed_are_not_measured(run_dir):
    path = run_dir / "trajectories.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "user_flags"}) + "\n" for r in rows))
    assert metrics(run_dir)["failed episodes with any flag"]["shown"].startswith("n/a (not measured")


def test_the_bench_writes_json_markdown_and_the_cards_section_once(run_dir, capsys):
    (run_dir / "export").mkdir()
    (run_dir / "export" / "README.md").write_text("---\nlicense: x\n---\n# card\n")
    main(["--run-dir", str(run_dir)])
    main(["--run-dir", str(run_dir)])  # again: the section is replaced, not added twice
    printed = capsys.readouterr().out
    assert "judge vs state check: Cohen's kappa" in printed and "0.40 (n=3)" in printed
    saved = json.loads((run_dir / "quality.json").read_text())
    assert len(saved["metrics"]) == len(metrics(run_dir))
    table = (run_dir / "quality.md").read_text()
    assert "| graders | judge vs state check: recall of keep | 1.00 (1/1) |" in table
    card = (run_dir / "export" / "README.md").read_text()
    assert card.startswith("---\nlicense: x\n---\n# card\n") and card.count(CARD_BEGIN) == 1
    assert table.strip() in card
    assert with_quality_section(card, "new\n").count(CARD_END) == 1


def test_measured_runs_side_by_side(run_dir, tmp_path, capsys):
    main(["--run-dir", str(run_dir)])
    other = tmp_path / "other"  # a second "run": the same files, another model
    shutil.copytree(run_dir, other)
    (other / "config.yaml").write_text("embedded:\n  model: Qwen2.5-Coder-0.5B\n")
    main(["--run-dir", str(other)])
    capsys.readouterr()
    main(["--compare", str(run_dir), str(other)])
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| section | metric | Gemma-3-270M | Qwen2.5-Coder-0.5B |"
    assert "| yield | kept of judged | 0.50 (2/4) | 0.50 (2/4) |" in table
    with pytest.raises(SystemExit):
        main(["--compare", str(tmp_path)])  # never measured


def test_the_bench_refuses_what_it_cannot_measure(tmp_path):
    with pytest.raises(SystemExit):
        main(["--run-dir", str(tmp_path)])  # no manifest.json
    with pytest.raises(SystemExit):
        main([])  # neither --model nor --run-dir
