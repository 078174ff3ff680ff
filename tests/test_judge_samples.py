"""Per-sample judge verdicts: stored with their seeds, the judge's self-agreement in the manifest,
old verdict lines still loading, and calibration reusing stored samples."""

import json
import re
from collections import Counter

import pytest

from judges.calibration import calibrate, self_agreement, stored_calls
from judges.config import JudgeConfig
from judges.judge import SINGLE_INDEX, sample_seeds
from synth.config import RunConfig, dump_config
from synth.context import Context
from synth.core.hashing import content_hash
from synth.core.llm import LLM
from synth.core.records import Agent, Criterion, CriterionResult, JudgeSample, Task, Trajectory, Verdict
from synth.core.store import RunStore
from synth.core.usage import UsageMeter
from synth.run import run_stages
from synth.stages.export import _agreement
from tests.fake_openai import FakeOpenAI
from tests.judge_replies import shown_order

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def episode(case: str) -> list[dict]:
    return [{"role": "user", "content": f"case {case}: weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "sunny"},
            {"role": "assistant", "content": "It is sunny."}]


def populate(cfg: RunConfig, cases=("A", "B")) -> tuple[RunStore, dict[str, Trajectory]]:
    store = RunStore(cfg.run_dir)
    store.open(dump_config(cfg), cfg.content_hash())
    agent = Agent(toolset_id="ts", toolset="weather", domain="weather", tool_ids=[], name="a", system_prompt="s")
    task = Task(agent_id=agent.id, goal="weather", persona="p",
                rubric=[Criterion(text="answers", kind="essential"), Criterion(text="polite")])
    trajectories = {c: Trajectory(task_id=task.id, agent_id=agent.id, tools=[WEATHER], messages=episode(c),
                                  user_stopped=True) for c in cases}
    store.append("agents", [agent])
    store.append("tasks", [task])
    store.append("trajectories", list(trajectories.values()))
    return store, trajectories


def judge_handler(calls: Counter):
    """Case A: every sample passes both criteria. Case B: its 2nd sample fails the essential criterion."""
    def handler(body):
        text = body["messages"][0]["content"]
        if "strict judge" not in text:
            return None
        case = re.search(r"case ([AB])", text).group(1)
        calls[case] += 1
        first = not (case == "B" and calls[case] == 2)
        by_index = [{"reason": f"{case}{calls[case]} c0", "passed": first, "turn": 1},
                    {"reason": f"{case}{calls[case]} c1", "passed": True, "turn": 1}]
        return json.dumps({"results": [by_index[i] for i in shown_order(text, ["answers", "polite"])]})
    return handler


async def test_stage_stores_every_sample_with_its_seed_and_reports_agreement(tmp_path):
    calls: Counter = Counter()
    async with FakeOpenAI(handler=judge_handler(calls)) as fake:
        cfg = RunConfig(runs_dir=str(tmp_path), name="j", judge={"samples": 3},
                        llm={"base_url": fake.base_url, "max_retries": 0})
        store, trajectories = populate(cfg)
        async with LLM(cfg.llm, base_url=fake.base_url) as llm:
            ctx = Context(cfg=cfg, store=store, llm=llm, meter=UsageMeter(), quiet=True)
            await run_stages(ctx, ["judge"])  # the stage's manifest sections are written as it is marked done
        store.close()
    verdicts = {v.trajectory_id: v for v in store.read("verdicts")}
    a, b = verdicts[trajectories["A"].id], verdicts[trajectories["B"].id]
    for case, verdict in (("A", a), ("B", b)):
        seeds = sample_seeds(ctx.seed_for("judge", trajectories[case].id), 3)
        assert [s.seed for s in verdict.samples] == seeds
        sent = [r["seed"] for r in fake.requests if f"case {case}" in r["messages"][0]["content"]]
        assert sent == seeds  # each stored seed is the one its request carried, in order
        assert [[r.reason for r in s.results] for s in verdict.samples] == [
            [f"{case}{i} c0", f"{case}{i} c1"] for i in (1, 2, 3)]
    assert [[r.passed for r in s.results] for s in b.samples] == [[True, True], [False, True], [True, True]]
    assert [(s.score, s.keep) for s in b.samples] == [(1.0, True), (0.5, False), (1.0, True)]  # essential failed
    assert b.keep and [r.passed for r in b.results] == [True, True]  # the majority keeps it
    assert b.results[0].reason == "B1 c0 (2/3 samples agree)"

    # 2 trajectories x 2 criteria: 3 of 4 unanimous; A's keep decisions agree, B's do not.
    agreement = json.loads((cfg.run_dir / "manifest.json").read_text())["judge_agreement"]
    assert agreement == {"trajectories": 2, "k": 3, "criteria": 4, "criteria_unanimous": 0.75,
                         "keep_identical": 0.5, "criterion_agreement": pytest.approx((3 + 1 / 3) / 4)}


async def test_one_sample_stores_no_copy_and_no_agreement(tmp_path):
    async with FakeOpenAI(handler=judge_handler(Counter())) as fake:
        cfg = RunConfig(runs_dir=str(tmp_path), name="j", llm={"base_url": fake.base_url, "max_retries": 0})
        store, _ = populate(cfg)
        async with LLM(cfg.llm, base_url=fake.base_url) as llm:
            await run_stages(Context(cfg=cfg, store=store, llm=llm, meter=UsageMeter(), quiet=True), ["judge"])
        store.close()
    assert all(v.samples == [] for v in store.read("verdicts"))
    assert (cfg.run_dir / "verdicts.jsonl").read_text().count('"samples":[]') == 2  # no copy of `results`
    agreement = json.loads((cfg.run_dir / "manifest.json").read_text())["judge_agreement"]
    assert agreement == {"trajectories": 0, "k": 0, "criteria": 0, "criteria_unanimous": None,
                         "keep_identical": None, "criterion_agreement": None}


# -- old run directories ---------------------------------------------------------------------

OLD_VERDICT = {"unit": "u1", "trajectory_id": "t1", "task_id": "k1",
               "results": [{"index": 0, "passed": True, "reason": "ok", "turn": 1}],
               "checks": {"tool_calls_answered": True}, "score": 1.0, "keep": True, "reasons": []}


def test_a_verdict_line_written_before_samples_loads_and_keeps_its_id(tmp_path):
    line = {"id": content_hash(OLD_VERDICT), **OLD_VERDICT}
    (tmp_path / "verdicts.jsonl").write_text(json.dumps(line) + "\n")
    [verdict] = RunStore(tmp_path).read("verdicts")
    assert verdict.samples == [] and verdict.keep and verdict.id == line["id"]
    assert Verdict(**OLD_VERDICT).id == line["id"]  # a new one-sample verdict hashes as before
    with_samples = Verdict(**OLD_VERDICT, samples=[JudgeSample(seed=1, score=1.0, keep=True)])
    assert with_samples.id != line["id"]
    assert self_agreement([verdict]).trajectories == 0


# -- self-agreement and calibration on stored samples ---------------------------------------

def sample(seed: int, *passed: bool, keep: bool = True, index0: int = 0) -> JudgeSample:
    return JudgeSample(seed=seed, score=1.0, keep=keep, results=[
        CriterionResult(index=index0 + i, passed=p, reason="r") for i, p in enumerate(passed)])


def test_self_agreement_on_constructed_samples():
    verdicts = [
        Verdict(trajectory_id="a", task_id="t", samples=[sample(1, True, True, False)] * 3),
        Verdict(trajectory_id="b", task_id="t", samples=[
            sample(1, True, True, True), sample(2, True, False, True, keep=False), sample(3, True, True, True)]),
        Verdict(trajectory_id="c", task_id="t"),  # one sample: nothing to compare
    ]
    a = self_agreement(verdicts)
    assert (a.trajectories, a.k, a.criteria) == (2, 3, 6)
    assert a.criteria_unanimous == pytest.approx(5 / 6)
    assert a.keep_identical == 0.5
    assert a.criterion_agreement == pytest.approx((5 + 1 / 3) / 6)
    assert _agreement(verdicts) == ("; its samples agree on 83% of criteria and on the keep decision "
                                    "for 50% of 2 trajectories")
    assert _agreement(verdicts[2:]) == ""


def test_stored_calls_need_k_samples_in_the_current_mode():
    task = Task(agent_id="a", goal="g", persona="p", rubric=[Criterion(text="x"), Criterion(text="y")])
    verdict = Verdict(trajectory_id="a", task_id=task.id, samples=[sample(1, True, False), sample(2, True, True)])
    calls = stored_calls(verdict, task, JudgeConfig(), 2)
    assert [[r.passed for r in results] for results, _ in calls] == [[True, False], [True, True]]
    assert stored_calls(verdict, task, JudgeConfig(), 3) is None  # too few
    assert stored_calls(verdict, task, JudgeConfig(mode="single"), 2) is None  # made in rubric mode
    assert stored_calls(None, task, JudgeConfig(), 2) is None
    single = Verdict(trajectory_id="a", task_id=task.id, samples=[sample(s, True, index0=SINGLE_INDEX) for s in (1, 2)])
    assert len(stored_calls(single, task, JudgeConfig(mode="single"), 2)) == 2


class NoLLM:
    async def structured(self, *args, **kw):
        raise AssertionError("stored samples should have answered")


async def test_calibrate_reuses_stored_samples_without_llm_calls(tmp_path):
    cfg = RunConfig(runs_dir=str(tmp_path), name="cal")
    store, trajectories = populate(cfg)
    task = store.read("tasks")[0]
    store.append("verdicts", [
        Verdict(trajectory_id=trajectories["A"].id, task_id=task.id, samples=[sample(s, True, True) for s in (1, 2, 3)]),
        Verdict(trajectory_id=trajectories["B"].id, task_id=task.id,
                samples=[sample(1, True, True), sample(2, False, True), sample(3, True, True)])])
    ctx = Context(cfg=cfg, store=store, llm=NoLLM(), meter=UsageMeter(), quiet=True)
    report = await calibrate(ctx.llm, ctx.store, ctx.cfg.judge, run_seed=ctx.cfg.seed,
                             concurrency=ctx.cfg.concurrency, k=3)
    store.close()
    assert (report.judged, report.reused, report.failed) == (2, 2, 0)
    # keep is recomputed under the current config: B's 2nd sample fails the essential criterion
    assert report.stability.keep_identical == 0.5
    assert report.agreement.tp == 5 and report.agreement.fn == 1  # every check passes on both
