"""The stages that run generated code keep their promises end to end (issue #18): a malformed reply
is a recorded error and the rollout stage goes on; a huge result is cut, and the trajectory says so;
gold replay isolates each task from the others exactly as rollouts isolate episodes."""

from __future__ import annotations

import json

import pytest

from synth.config import RunConfig
from judges.gold import validate_tasks
from synth.core.records import Agent, Criterion, GoldAction, Implementation, StateAssertion, Task
from synth.stages.rollout import make_rollouts
from synth.run import open_run
from synth.user_sim import STOP
from tests.fake_openai import FakeOpenAI
from tests.security.attacks import CHANNELS, EXEC_MODULE, EXEC_SPECS, write_replies

pytestmark = pytest.mark.security

SANDBOX = {"type": "local", "isolation": "bwrap", "pool_size": 1}


def agent_calling(code: str):
    """Agent: one `run(code)` call, then a text answer; user: asks once, then stops."""
    def handler(body: dict) -> dict | str | None:
        if STOP in str(body["messages"][0]["content"]):
            return f"Thanks. {STOP}" if len(body["messages"]) > 2 else "Please run it."
        if body.get("tools") and body["messages"][-1]["role"] != "tool":
            call = {"id": "c", "type": "function", "function": {"name": "run", "arguments": {"code": code}}}
            return {"content": "", "tool_calls": [call]}
        return "Done."
    return handler


async def rollout(tmp_path, code: str, **rollout_cfg):
    async with FakeOpenAI(handler=agent_calling(code)) as fake:
        cfg = RunConfig.model_validate({
            "name": "sec", "runs_dir": str(tmp_path),
            "llm": {"base_url": fake.base_url, "model": "fake", "max_retries": 0},
            "rollout": {"max_turns": 1, "max_tool_steps": 1, "sandbox": SANDBOX, **rollout_cfg}})
        async with open_run(cfg, quiet=True) as ctx:
            specs = [s.model_copy(update={"toolset_id": "ts", "toolset": "attack", "domain": "d"}) for s in EXEC_SPECS]
            specs = [type(s).model_validate(s.model_dump(exclude={"id"})) for s in specs]
            agent = Agent(toolset_id="ts", toolset="attack", domain="d", tool_ids=[s.id for s in specs], name="bot",
                          system_prompt="You run code.")
            task = Task(agent_id=agent.id, goal="Run the code.", persona="A tester.", user_facts=["none"],
                        rubric=[Criterion(text="Runs it.")])
            impl = Implementation(toolset_id="ts", toolset="attack", domain="d", tool_ids=[s.id for s in specs],
                                  module=EXEC_MODULE, tests="", passed=True, rounds=1)
            for kind, records in (("tools", specs), ("agents", [agent]), ("tasks", [task]), ("implementations", [impl])):
                ctx.store.append(kind, records)
            stats = await make_rollouts(ctx)
            return stats, ctx.store.read("trajectories"), ctx.store.read("errors")


async def test_a_malformed_reply_is_a_recorded_error_and_the_stage_goes_on(tmp_path):
    stats, trajectories, errors = await rollout(tmp_path, write_replies({"result": {"content": 5}}))
    assert stats.failed == 1 and not trajectories, (stats, errors)
    assert errors[0].error_type == "ToolError" and errors[0].stage == "rollout", errors


async def test_a_huge_result_is_cut_in_the_messages_and_marked_in_the_trace(tmp_path):
    stats, [trajectory], errors = await rollout(tmp_path, "result = 'x' * 5_000_000", tool_result_max_chars=1000)
    assert stats.done == 1, errors
    [trace] = trajectory.tool_calls
    assert trace.truncated == 5_000_000 and len(trace.result) < 1200 and "truncated" in trace.result, trace
    message = next(m for m in trajectory.messages if m["role"] == "tool")
    assert message["content"] == trace.result


def gold_task(n: int, code: str) -> Task:
    return Task(agent_id="a", goal=f"Task {n}.", persona="A tester.", user_facts=[code],  # the code is knowable
                rubric=[Criterion(text="Works.")], initial_state={},
                gold_actions=[GoldAction(tool="run", arguments=json.dumps({"code": code}))],
                assertions=[StateAssertion(path="seen", op="equals", value='"clean"')])


@pytest.mark.parametrize("channel", ["builtins_private_name", "patched_random", "tmp_file", "survivor_process"])
async def test_gold_replay_isolates_each_task_from_the_ones_before(tmp_path, channel):
    plant, probe = CHANNELS[channel]
    tasks = [gold_task(1, plant + "\nstate['seen'] = 'clean'"),
             gold_task(2, probe + "\nstate['seen'] = result")]
    sandbox = RunConfig(rollout={"sandbox": {"type": "local", "isolation": "bwrap"}}).rollout.sandbox
    impl = Implementation(toolset_id="ts", toolset="attack", domain="d", tool_ids=[s.id for s in EXEC_SPECS],
                          module=EXEC_MODULE, tests="", passed=True, rounds=1)
    results = await validate_tasks(sandbox, {"synth.run": "gold-sec"}, tasks, EXEC_SPECS, impl, {"run"})
    assert [problems for _, problems in results] == [[], []], results
