"""The rollout loop against the scripted fake: parallel tool calls, tool timeouts, seeded faults,
usage per trajectory, user flags, pass@k, and sandbox failures through the stage runner."""

from __future__ import annotations

import asyncio
import json

import pytest

from judges.metrics import pass_at_k, pass_hat_k, pass_report
from sandboxes.local import LocalSandbox
from synth.config import RunConfig
from synth.core.errors import SandboxError
from synth.core.records import Agent, Criterion, Task, ToolSpec, Trajectory, Verdict
from synth.episode import USAGE_KEYS
from synth.run import open_run
from synth.stages.rollout import make_rollouts
from synth.user_sim import PREMATURE_STOP, STOP
from tests.fake_openai import FakeOpenAI
from tools.runtime import FAULTS, ToolOutcome, injected_fault
from tools.simulator import SimulatedToolset

SCHEMA = {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}
NAMES = ("get_a", "get_b", "get_c")


def batch_call(body: dict) -> dict | str | None:
    """Agent: three tool calls in one message, then a text answer; user: asks once, then stops."""
    system = str(body["messages"][0]["content"])
    if STOP in system:
        return f"Thanks, bye. {STOP}" if len(body["messages"]) > 2 else "Please look up a, b and c."
    if body.get("response_format"):
        return None  # the tool simulator: the fake's schema-valid default
    if body.get("tools") and body["messages"][-1]["role"] != "tool":
        calls = [{"id": "same", "type": "function", "function": {"name": n, "arguments": {"key": n[-1]}}}
                 for n in NAMES]
        return {"content": "", "tool_calls": calls}
    return "Here is what I found."


async def run(tmp_path, fake: FakeOpenAI, *, name="t", rubric="Calls get_a.", **rollout):
    cfg = RunConfig.model_validate({
        "name": name, "runs_dir": str(tmp_path), "llm": {"base_url": fake.base_url, "model": "fake", "max_retries": 0},
        "rollout": {"max_turns": 2, "max_tool_steps": 2, "sandbox": {"type": "local", "isolation": "none"}, **rollout},
    })
    async with open_run(cfg, quiet=True) as ctx:
        specs = [ToolSpec(name=n, description=f"Read {n[-1]}.", inputSchema=SCHEMA, toolset_id="ts") for n in NAMES]
        agent = Agent(toolset_id="ts", toolset="ts", domain="d", tool_ids=[s.id for s in specs], name="bot",
                      system_prompt="You are a lookup bot.")
        task = Task(agent_id=agent.id, goal="Look up a, b and c.", persona="A tester.", user_facts=["Code: zeta-9"],
                    rubric=[Criterion(text=rubric)])
        for kind, records in (("tools", specs), ("agents", [agent]), ("tasks", [task])):
            ctx.store.append(kind, records)
        stats = await make_rollouts(ctx)
        return ctx, stats, ctx.store.read("trajectories")


@pytest.fixture
async def fake():
    async with FakeOpenAI(handler=batch_call) as server:
        yield server


@pytest.fixture
def slow_tools(monkeypatch):
    """Replace the simulator's call with sleeps of the given lengths; count calls in flight."""
    seen = {"in_flight": 0, "max_in_flight": 0, "finished": []}

    def install(delays: dict[str, float]):
        async def call(self, name, arguments):
            seen["in_flight"] += 1
            seen["max_in_flight"] = max(seen["max_in_flight"], seen["in_flight"])
            try:
                await asyncio.sleep(delays[name])
            finally:
                seen["in_flight"] -= 1
            seen["finished"].append(name)
            return ToolOutcome(text=f"value of {name}")

        monkeypatch.setattr(SimulatedToolset, "call", call)
        return seen

    return install


async def test_parallel_tool_calls_run_at_once_and_keep_their_order(tmp_path, fake, slow_tools):
    seen = slow_tools({"get_a": 0.9, "get_b": 0.6, "get_c": 0.3})  # gaps a loaded machine cannot reorder
    ctx, stats, trajectories = await run(tmp_path, fake)
    assert stats.done == 1, [(e.error_type, e.message) for e in ctx.store.read("errors")]
    [trajectory] = trajectories
    assert seen["max_in_flight"] == 3
    assert seen["finished"][:3] == ["get_c", "get_b", "get_a"]  # they finished in reverse order...
    messages = trajectory.messages
    calls = next(m for m in messages if m.get("tool_calls"))["tool_calls"]
    answers = [m for m in messages if m["role"] == "tool"][:3]
    # ...yet every call is answered, in the order of the message, ids renumbered and unique.
    assert [c["id"] for c in calls] == ["call_0", "call_1", "call_2"]
    assert [(a["tool_call_id"], a["content"]) for a in answers] == [
        ("call_0", "value of get_a"), ("call_1", "value of get_b"), ("call_2", "value of get_c")]
    assert [t.call_id for t in trajectory.tool_calls[:3]] == ["call_0", "call_1", "call_2"]


async def test_the_agents_reasoning_is_kept_on_its_messages(tmp_path, slow_tools):
    slow_tools({"get_a": 0.0, "get_b": 0.0, "get_c": 0.0})

    def thinking(body: dict):
        reply = batch_call(body)
        if body.get("tools") is not None or "lookup bot" in str(body["messages"][0]["content"]):
            reply = {"content": reply} if isinstance(reply, str) else reply
            return {**reply, "reasoning_content": f"step {len(body['messages'])}"}
        return reply

    async with FakeOpenAI(handler=thinking) as fake:
        _, _, [trajectory] = await run(tmp_path, fake)
    assistant = [m for m in trajectory.messages if m["role"] == "assistant"]
    assert assistant and all(m["reasoning_content"].startswith("step ") for m in assistant)
    assert all("reasoning_content" not in m for m in trajectory.messages if m["role"] != "assistant")


async def test_a_tool_call_timeout_is_an_error_result_not_a_failed_episode(tmp_path, fake, slow_tools):
    slow_tools({"get_a": 0.0, "get_b": 30.0, "get_c": 0.0})
    _, stats, [trajectory] = await run(tmp_path, fake, tool_timeout_s=0.2)
    assert stats.done == 1 and stats.failed == 0
    first = trajectory.tool_calls[:3]
    assert [t.is_error for t in first] == [False, True, False]
    assert "did not answer within 0.2 s" in first[1].result and first[1].fault is None
    assert first[1].latency_s < 5


def faults(seed: int, rate: float, calls: int = 200) -> list[str | None]:
    return [o.fault if (o := injected_fault(seed, i, rate)) else None for i in range(1, calls + 1)]


def test_faults_are_seeded_per_call():
    assert faults(7, 0.3) == faults(7, 0.3)
    assert faults(7, 0.3) != faults(8, 0.3)
    assert 30 < sum(f is not None for f in faults(7, 0.3)) < 90
    assert set(faults(7, 0.3)) == {None, *FAULTS}
    assert faults(7, 0.0) == [None] * 200 and None not in faults(7, 1.0)


def test_faults_are_the_draws_earlier_code_made():
    """Seed 7 at 0.3, as SimulatedToolset.fault drew them at d6b5e47: a rerun of an old run fails the same calls."""
    assert faults(7, 0.3, 20) == [None, "rate_limited", None, None, None, None, "unavailable", None, None, None,
                                  None, None, None, None, None, "timeout", None, None, "unavailable", None]
    outcome = injected_fault(7, 2, 0.3)
    assert outcome.is_error and outcome.text == "Error: rate limit exceeded (429), retry in a few seconds"


async def test_fault_injection_is_recorded_and_repeats_with_the_seed(tmp_path, fake):
    traces = []
    for name in ("first", "second"):
        _, _, [trajectory] = await run(tmp_path, fake, name=name, fault_rate=0.5)
        traces.append([(t.name, t.fault, t.result) for t in trajectory.tool_calls])
    assert traces[0] == traces[1]
    injected = [t for t in traces[0] if t[1]]
    assert injected and all(result == f"Error: {FAULTS[fault]}" for _, fault, result in injected)
    assert any(fault is None for _, fault, _ in traces[0])


async def test_usage_is_the_sum_of_the_episodes_chat_calls(tmp_path, fake, monkeypatch):
    from synth.core.llm import LLM

    results = []
    original = LLM.chat

    async def counting_chat(self, *args, **kwargs):
        result = await original(self, *args, **kwargs)
        results.append(result)
        return result

    monkeypatch.setattr(LLM, "chat", counting_chat)
    _, _, [trajectory] = await run(tmp_path, fake)
    usage = trajectory.usage
    assert set(usage) == set(USAGE_KEYS)
    assert usage["agent_calls"] + usage["user_calls"] == len(results)
    assert usage["user_calls"] == 2  # the opening and the reply that stops
    assert usage["prompt_tokens"] == sum(r.prompt_tokens for r in results) > 0
    assert usage["completion_tokens"] == sum(r.completion_tokens for r in results) > 0


async def test_user_flags_are_recorded_on_the_trajectory(tmp_path):
    def lazy(body):  # the agent never calls a tool; the user gives up at once
        if STOP in str(body["messages"][0]["content"]):
            return f"Never mind. {STOP}" if len(body["messages"]) > 2 else "Look up a please."
        return "I can help with that."

    async with FakeOpenAI(handler=lazy) as server:
        _, _, [trajectory] = await run(tmp_path, server)
    assert trajectory.user_stopped and trajectory.tool_calls == []
    assert trajectory.user_flags == [PREMATURE_STOP]


async def test_a_sandbox_that_fails_to_start_is_an_error_and_is_redone_next_run(tmp_path, fake, monkeypatch):
    original = LocalSandbox.start

    async def broken(self):
        raise SandboxError("cannot create the workspace: disk full")

    monkeypatch.setattr(LocalSandbox, "start", broken)
    ctx, stats, trajectories = await run(tmp_path, fake, samples_per_task=2)
    assert stats.failed == 2 and trajectories == []
    errors = ctx.store.read("errors")
    assert [e.error_type for e in errors] == ["SandboxError", "SandboxError"] and "disk full" in errors[0].message

    monkeypatch.setattr(LocalSandbox, "start", original)
    _, stats, trajectories = await run(tmp_path, fake, samples_per_task=2)
    assert stats.done == 2 and stats.skipped == 0 and len(trajectories) == 2
    _, stats, _ = await run(tmp_path, fake, samples_per_task=2)
    assert stats.skipped == 2 and stats.done == 0  # finished episodes are not redone


@pytest.mark.parametrize("n, c, k, at_k, hat_k", [
    (5, 2, 1, 0.4, 0.4),
    (5, 2, 2, 1 - 3 / 10, 1 / 10),      # 1 - C(3,2)/C(5,2); C(2,2)/C(5,2)
    (5, 2, 4, 1.0, 0.0),                 # n - c < k: some sample must pass; c < k: never all
    (4, 4, 3, 1.0, 1.0),
    (4, 0, 2, 0.0, 0.0),
    (10, 3, 3, 1 - 35 / 120, 1 / 120),   # 1 - C(7,3)/C(10,3); C(3,3)/C(10,3)
])
def test_pass_at_k_and_pass_hat_k(n, c, k, at_k, hat_k):
    assert pass_at_k(n, c, k) == pytest.approx(at_k)
    assert pass_hat_k(n, c, k) == pytest.approx(hat_k)


def test_pass_k_rejects_impossible_counts():
    for n, c, k in ((3, 4, 1), (3, 1, 0), (3, 1, 4)):
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_pass_report_per_task_and_mean():
    def traj(task, sample):
        return Trajectory(task_id=task, agent_id="a", sample=sample, messages=[], tools=[])

    t1 = [traj("t1", s) for s in range(3)]
    t2 = [traj("t2", s) for s in range(2)]
    verdicts = [Verdict(trajectory_id=t.id, task_id=t.task_id, keep=keep)
                for t, keep in zip(t1 + t2[:1], (True, False, True, True))]  # t2's second sample unjudged
    report = pass_report(t1 + t2, verdicts)
    assert report["unjudged_trajectories"] == 1 and report["tasks_judged"] == 2 and report["k"] == [1, 2, 3]
    assert report["tasks"]["t1"] == {"n": 3, "c": 2, "pass@k": {"1": 0.6667, "2": 1.0, "3": 1.0},
                                     "pass^k": {"1": 0.6667, "2": 0.3333, "3": 0.0}}
    assert report["tasks"]["t2"]["pass@k"] == {"1": 1.0}
    assert report["mean"]["pass@k"] == {"1": round((2 / 3 + 1) / 2, 4), "2": 1.0, "3": 1.0}
    assert report["mean"]["pass^k"]["1"] == round((2 / 3 + 1) / 2, 4)
    json.dumps(report)  # goes into manifest.json as is
    assert pass_report([], []) == {"tasks_judged": 0, "unjudged_trajectories": 0, "k": [],
                                   "mean": {"pass@k": {}, "pass^k": {}}, "tasks": {}}


async def test_an_empty_agent_reply_is_asked_again_without_tools(tmp_path):
    """Small models sometimes answer a tool-offering request with nothing; the episode must go on."""
    from synth.run import STAGES, open_run, run_stages
    from synth.config import RunConfig
    from synth.user_sim import STOP
    from tests.fake_openai import FakeOpenAI

    def is_agent(body):
        first = body["messages"][0]
        return first["role"] == "system" and "You can use tools" in str(first.get("content"))

    def handler(body):
        if is_agent(body) and body.get("tools"):
            return {"content": "", "finish_reason": "stop"}
        return None

    async with FakeOpenAI(stop_marker=STOP, handler=handler) as fake:
        cfg = RunConfig.model_validate({
            "name": "empty", "runs_dir": str(tmp_path), "llm": {"base_url": fake.base_url, "model": "fake"},
            "tools": {"categories": 1}, "tasks": {"per_agent": 1, "world": False},
            "rollout": {"max_turns": 1, "sandbox": {"type": "local", "isolation": "none"}},
        })
        async with open_run(cfg, quiet=True) as ctx:
            await run_stages(ctx, [s for s in STAGES if s != "export"])
        agent_requests = [b for b in fake.requests if is_agent(b)]
    trajectory = json.loads((cfg.run_dir / "trajectories.jsonl").read_text().splitlines()[0])
    replies = [m for m in trajectory["messages"] if m["role"] == "assistant"]
    assert replies and all(m["content"].strip() for m in replies)
    assert [bool(b.get("tools")) for b in agent_requests[:2]] == [True, False]
