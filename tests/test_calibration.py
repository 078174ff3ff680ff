"""Judge calibration: the statistics on hand-computed values, the async driver and the CLI against the fake."""

import json
import re
from collections import Counter

import pytest
from typer.testing import CliRunner

from judges.calibration import agreement, calibrate, cohen_kappa, pairwise_agreement, stability
from synth.commands.judges import app
from synth.config import RunConfig, dump_config
from synth.context import Context
from synth.core.llm import LLM
from synth.core.records import Agent, Criterion, StateAssertion, Task, Trajectory
from synth.core.store import RunStore
from synth.core.usage import UsageMeter
from tests.fake_openai import FakeOpenAI, fake_openai_in_thread
from tests.judge_replies import shown_texts

# -- statistics ------------------------------------------------------------------------------


def test_kappa_on_a_known_confusion_matrix():
    # The textbook example: p_o = 35/50 = 0.7, p_e = 0.5*0.6 + 0.5*0.4 = 0.5, kappa = 0.2/0.5.
    assert cohen_kappa(tp=20, fp=5, fn=10, tn=15) == pytest.approx(0.4)
    assert cohen_kappa(10, 0, 0, 10) == pytest.approx(1.0)
    assert cohen_kappa(0, 10, 10, 0) == pytest.approx(-1.0)
    assert cohen_kappa(5, 0, 0, 0) == 1.0  # both constant and agreeing: p_e = 1
    assert cohen_kappa(0, 0, 0, 0) == 0.0


def test_agreement_counts_keep_as_positive():
    judge = [True] * 20 + [True] * 5 + [False] * 10 + [False] * 15
    checks = [True] * 20 + [False] * 5 + [True] * 10 + [False] * 15
    a = agreement(judge, checks)
    assert (a.n, a.tp, a.fp, a.fn, a.tn) == (50, 20, 5, 10, 15)
    assert a.accuracy == pytest.approx(0.7)
    assert a.kappa == pytest.approx(0.4)
    assert a.precision == pytest.approx(20 / 25)
    assert a.recall == pytest.approx(20 / 30)
    empty = agreement([], [])
    assert (empty.n, empty.accuracy, empty.precision, empty.recall) == (0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        agreement([True], [True, False])


def test_pairwise_agreement():
    assert pairwise_agreement([True, True, True]) == 1.0
    assert pairwise_agreement([True, True, False]) == pytest.approx(2 / 6)
    assert pairwise_agreement([True, False]) == 0.0
    assert pairwise_agreement([True, True, False, False]) == pytest.approx(4 / 12)
    assert pairwise_agreement([False]) == 1.0


def test_stability():
    keeps = [[True, True, True], [True, False, True]]
    criteria = [[[True, False]] * 3, [[True, True], [False, True], [True, True]]]
    s = stability(keeps, criteria)
    assert (s.k, s.trajectories) == (3, 2)
    assert s.keep_identical == 0.5
    assert s.criterion_agreement == pytest.approx((1 + 1 + 1 / 3 + 1) / 4)
    assert stability([], []).keep_identical == 0.0


# -- the driver against the fake endpoint ----------------------------------------------------

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def episode(case: str, tool: str = "get_weather") -> list[dict]:
    return [{"role": "user", "content": f"case {case}: weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": tool, "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "name": tool, "content": "sunny"},
            {"role": "assistant", "content": "It is sunny."}]


def judge_handler(calls: Counter):
    """T1: always passes. T2: passes (but its checks fail). T3: pass, fail, pass. T4: never JSON."""
    def handler(body):
        text = body["messages"][0]["content"]
        if "strict judge" not in text:
            return None
        case = re.search(r"case (T\d)", text).group(1)
        calls[case] += 1
        if case == "T4":
            return "no JSON, sorry"
        passed = not (case == "T3" and calls[case] == 2)
        return json.dumps({"results": [{"reason": "seen", "passed": passed, "turn": 1}] * 2})
    return handler


def populate(cfg: RunConfig) -> RunStore:
    store = RunStore(cfg.run_dir)
    store.open(dump_config(cfg), cfg.content_hash())
    agent = Agent(toolset_id="ts", toolset="weather", domain="weather", tool_ids=[], name="a", system_prompt="s")
    task = Task(agent_id=agent.id, goal="weather", persona="p",
                rubric=[Criterion(text="answers", kind="essential"), Criterion(text="polite")])
    store.append("agents", [agent])
    store.append("tasks", [task])
    store.append("trajectories", [
        Trajectory(task_id=task.id, agent_id=agent.id, tools=[WEATHER], messages=episode(case),
                   **({"tool_calls": []} if case != "T2" else {}))
        for case in ("T1", "T3", "T4")] + [
        Trajectory(task_id=task.id, agent_id=agent.id, tools=[WEATHER], messages=episode("T2", tool="launch"))])
    return store


def check_report(report: dict) -> None:
    # T1: 3 tp; T2: 3 fp (checks fail: unknown tool); T3: 2 tp + 1 fn; T4 failed to parse.
    a = report["agreement"]
    assert (a["n"], a["tp"], a["fp"], a["fn"], a["tn"]) == (9, 5, 3, 1, 0)
    assert a["accuracy"] == pytest.approx(5 / 9)
    assert a["precision"] == pytest.approx(5 / 8) and a["recall"] == pytest.approx(5 / 6)
    # p_o = 5/9, p_e = (8*6 + 1*3) / 81 = 51/81 -> kappa = (45 - 51) / (81 - 51)
    assert a["kappa"] == pytest.approx(-0.2)
    s = report["stability"]
    assert (s["k"], s["trajectories"]) == (3, 3)
    assert s["keep_identical"] == pytest.approx(2 / 3)
    assert s["criterion_agreement"] == pytest.approx((4 + 2 / 3) / 6)
    assert (report["judged"], report["failed"]) == (3, 1)


async def test_calibrate_judges_k_times_with_distinct_seeds(tmp_path):
    calls: Counter = Counter()
    async with FakeOpenAI(handler=judge_handler(calls)) as fake:
        cfg = RunConfig(runs_dir=str(tmp_path), name="cal", llm={"base_url": fake.base_url, "max_retries": 0})
        store = populate(cfg)
        async with LLM(cfg.llm, base_url=fake.base_url) as llm:
            ctx = Context(cfg=cfg, store=store, llm=llm, meter=UsageMeter(), quiet=True)
            report = await calibrate(ctx.llm, ctx.store, ctx.cfg.judge, run_seed=ctx.cfg.seed,
                             concurrency=ctx.cfg.concurrency, k=3)
        store.close()
    check_report(report.model_dump())
    assert json.loads((cfg.run_dir / "calibration.json").read_text()) == report.model_dump()
    judged = [b for b in fake.requests if "case T1" in b["messages"][0]["content"]]
    assert len({b["seed"] for b in judged}) == 3
    assert all(b["temperature"] == cfg.judge.sample_temperature for b in judged)
    assert [e.stage for e in store.read("errors")] == ["calibrate"]


def test_calibrate_cli_prints_a_table_and_saves_json(tmp_path):
    calls: Counter = Counter()
    with fake_openai_in_thread(handler=judge_handler(calls)) as fake:
        cfg = RunConfig(runs_dir=str(tmp_path), name="cal", llm={"base_url": fake.base_url, "max_retries": 0})
        populate(cfg).close()
        path = tmp_path / "config.yaml"
        path.write_text(dump_config(cfg))
        result = CliRunner().invoke(app, ["calibrate", str(path), "--k", "3"])
    assert result.exit_code == 0, result.output
    assert "Cohen's kappa" in result.output and "-0.200" in result.output
    check_report(json.loads((cfg.run_dir / "calibration.json").read_text()))


# -- truth with state checks, per criterion kind ------------------------------------------------

async def test_calibration_truth_includes_the_state_checks_and_is_reported_per_kind(tmp_path):
    """S1 set the state the task asks for, S2 did not; the judge (which always says yes) keeps both:
    against the state checks it is right once and wrong once, and so are its essential verdicts."""
    def always_yes(body):
        text = body["messages"][0]["content"]
        if "strict judge" not in text:
            return None
        return json.dumps({"results": [{"reason": "seen", "passed": "mistake" not in t, "turn": 1}
                                       for t in shown_texts(text)]})

    async with FakeOpenAI(handler=always_yes) as fake:
        cfg = RunConfig(runs_dir=str(tmp_path), name="state", llm={"base_url": fake.base_url, "max_retries": 0})
        store = RunStore(cfg.run_dir)
        store.open(dump_config(cfg), cfg.content_hash())
        agent = Agent(toolset_id="ts", toolset="weather", domain="weather", tool_ids=[], name="a", system_prompt="s")
        task = Task(agent_id=agent.id, goal="weather", persona="p", initial_state={"city": ""},
                    rubric=[Criterion(text="answers", kind="essential"), Criterion(text="a mistake", kind="pitfall")],
                    assertions=[StateAssertion(path="city", op="equals", value='"Paris"')])
        store.append("agents", [agent])
        store.append("tasks", [task])
        store.append("trajectories", [
            Trajectory(task_id=task.id, agent_id=agent.id, tools=[WEATHER], messages=episode(case),
                       final_state={"city": city}) for case, city in (("S1", "Paris"), ("S2", ""))])
        async with LLM(cfg.llm, base_url=fake.base_url) as llm:
            report = await calibrate(llm, store, cfg.judge, run_seed=0, concurrency=2, k=2)
        store.close()
    assert report.state_checked == 2
    s = report.state_agreement
    assert (s.n, s.tp, s.fp, s.fn, s.tn) == (4, 2, 2, 0, 0)
    assert (report.agreement.tp, report.agreement.fp) == (2, 2)  # every check: the state check decides here
    essential, pitfall = report.by_kind["essential"], report.by_kind["pitfall"]
    assert (essential.tp, essential.fp) == (2, 2) and (pitfall.tp, pitfall.fp) == (2, 2)
    assert set(report.by_kind) == {"essential", "pitfall"}  # kinds the rubric has
    saved = json.loads((cfg.run_dir / "calibration.json").read_text())
    assert saved["state_agreement"]["fp"] == 2 and "essential" in saved["by_kind"]
