"""Planted defects: each planter on its own, and `synth judges calibrate --planted` on a run the scripted
model made (rollouts and judge through the fake endpoint), where every deterministic defect must be
dropped and every untouched copy kept."""

from __future__ import annotations

import json
import random
import re

import pytest
from typer.testing import CliRunner

from judges.checks import Subject, run_checks
from judges.planted import PLANTERS, ROLE_BREAKS
from synth.commands.judges import PLANTED_KINDS, app
from synth.config import RunConfig, dump_config
from synth.core.records import Agent, Criterion, StateAssertion, Task, ToolSpec
from synth.run import open_run, run_stages
from synth.user_sim import STOP
from tests.fake_openai import fake_openai_in_thread
from tests.judge_replies import shown_texts

SCHEMA = {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}
RUBRIC = [Criterion(text="The order A-1234 is cancelled with cancel_order.", kind="essential", weight=5),
          Criterion(text="The assistant confirms the cancellation.", kind="important", weight=3),
          Criterion(text="A different order is cancelled.", kind="pitfall", weight=5)]
DETERMINISTIC = {"drop_write_call", "change_key_argument", "leak_hidden_fact", "user_breaks_role", "cut_last_turns"}


def scripted(body: dict):
    """A shop where everything goes right, and a judge that passes every positive criterion and sees
    no pitfall: whatever the judge cannot see stays kept, so only the checks can drop a copy."""
    messages = body["messages"]
    first = str(messages[0]["content"])
    if "strict judge" in first:
        texts = shown_texts(first)
        pitfalls = {c.text for c in RUBRIC if c.kind == "pitfall"}
        return json.dumps({"results": [{"reason": "as the transcript shows", "passed": t not in pitfalls, "turn": 1}
                                       for t in texts]})
    if STOP in first:  # the user simulator (roles swapped: the agent speaks as "user")
        agent = str(messages[-1]["content"]) if len(messages) > 2 else ""
        if "order number" in agent:
            return "It is A-1234."
        if "cancelled" in agent:
            return f"Thanks! {STOP}"
        return "Please cancel my last order."
    if body.get("response_format"):  # the tool simulator
        return json.dumps({"ok": True, "result": '{"order_id": "A-1234", "status": "cancelled"}',
                           "updates": [{"op": "set", "path": "orders.A-1234.status", "value": '"cancelled"'}]})
    last = messages[-1]
    if last["role"] == "tool":
        return "I have cancelled order A-1234."
    if body.get("tools") and "A-1234" in str(last.get("content")):
        return {"content": "", "tool_calls": [{"id": "x", "type": "function",
                                               "function": {"name": "cancel_order", "arguments": {"order_id": "A-1234"}}}]}
    return "Sure. What is your order number?"


def make_run(tmp_path, base_url: str) -> RunConfig:
    cfg = RunConfig.model_validate({
        "name": "planted", "runs_dir": str(tmp_path), "llm": {"base_url": base_url, "model": "fake", "max_retries": 0},
        "rollout": {"samples_per_task": 3, "max_turns": 3, "max_tool_steps": 2,
                    "sandbox": {"type": "local", "isolation": "none"}}})

    async def main():
        async with open_run(cfg, quiet=True) as ctx:
            specs = [ToolSpec(name=n, description=d, inputSchema=SCHEMA, toolset_id="shop", toolset="shop")
                     for n, d in (("get_order", "Look up an order."), ("cancel_order", "Cancel an order."))]
            agent = Agent(toolset_id="shop", toolset="shop", domain="shop", tool_ids=[s.id for s in specs], name="bot",
                          system_prompt="You are the shop's assistant. Ask for the order number before acting.")
            task = Task(agent_id=agent.id, goal="Cancel my last order.", persona="Ann, a nurse.",
                        user_facts=["Order number: A-1234"], rubric=RUBRIC, initial_state={"orders": {"A-1234": {"status": "open"}, "A-2000": {"status": "open"}}},
                        assertions=[StateAssertion(path="orders.A-1234.status", op="equals", value='"cancelled"')])
            for kind, records in (("tools", specs), ("agents", [agent]), ("tasks", [task])):
                ctx.store.append(kind, records)
            await run_stages(ctx, ["rollout", "judge", "export"])

    import asyncio
    asyncio.run(main())
    return cfg


@pytest.fixture(scope="module")
def scripted_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("planted")
    with fake_openai_in_thread(handler=scripted) as fake:
        cfg = make_run(tmp_path, fake.base_url)
        path = tmp_path / "config.yaml"
        path.write_text(dump_config(cfg))
        yield cfg, path, fake


def test_the_scripted_run_is_kept_whole(scripted_run):
    cfg, _, _ = scripted_run
    verdicts = [json.loads(line) for line in (cfg.run_dir / "verdicts.jsonl").read_text().splitlines()]
    assert len(verdicts) == 3 and all(v["keep"] for v in verdicts), [v["reasons"] for v in verdicts]
    trajectory = json.loads((cfg.run_dir / "trajectories.jsonl").read_text().splitlines()[0])
    assert trajectory["messages"][-1] == {"role": "user", "content": "Thanks!"}
    assert trajectory["final_state"]["orders"]["A-1234"] == {"status": "cancelled"}


def test_calibrate_planted_drops_every_deterministic_defect_and_keeps_untouched_copies(scripted_run):
    cfg, path, _ = scripted_run
    result = CliRunner().invoke(app, ["calibrate", str(path), "--planted"])
    assert result.exit_code == 0, result.output
    assert "planted defects: copies of 3 trajectories" in result.output
    report = json.loads((cfg.run_dir / "calibration.json").read_text())["planted"]
    assert report["source"] == "kept" and report["trajectories"] == 3 and report["judged"]
    kinds = report["kinds"]
    assert list(kinds) == list(PLANTED_KINDS)
    for kind in DETERMINISTIC:
        k = kinds[kind]
        assert k["planted"] == k["by_check"] == k["by_check_dropped"] == k["dropped"] == 3, (kind, k)
        assert k["caught_by_checks"] == 3 and k["caught_by_judge_only"] == 0
    assert kinds["drop_write_call"]["reasons"]["check failed: claims_backed_by_tool_calls"] == 3
    assert kinds["drop_write_call"]["reasons"]["check failed: final_state_assertions"] == 3
    assert kinds["change_key_argument"]["reasons"] == {"check failed: call_ids_grounded": 3}
    assert kinds["leak_hidden_fact"]["reasons"] == {"check failed: user_gives_facts_only_when_asked": 3}
    assert kinds["user_breaks_role"]["reasons"] == {"check failed: user_stays_in_role": 3}
    assert kinds["cut_last_turns"]["reasons"] == {"check failed: ends_with_assistant_reply": 3}
    # A judge that sees no defect keeps the fabricated result: judge-dependent, reported as measured.
    assert kinds["fabricate_tool_result"]["by_check"] == 0 and kinds["fabricate_tool_result"]["dropped"] == 0
    assert report["untouched"] == {"judged": 3, "kept": 3, "failed": 0, "reasons": {}}
    # The card shows the table (the run was exported, so calibrate rebuilt it).
    card = (cfg.run_dir / "export" / "README.md").read_text()
    assert "## Judge calibration" in card and "| change_key_argument | 3 | 3 | 3 / 3 |" in card


def test_the_planted_kinds_the_cli_names_are_the_planters():
    assert tuple(PLANTERS) == PLANTED_KINDS


def test_an_unknown_defect_kind_is_refused_by_name(scripted_run):
    _, path, _ = scripted_run
    result = CliRunner().invoke(app, ["calibrate", str(path), "--planted", "--defects", "drop_write_call,typo"])
    assert result.exit_code != 0 and "typo" in result.output


# -- each planter ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kept(scripted_run):
    cfg, _, _ = scripted_run
    from synth.core.store import RunStore
    store = RunStore(cfg.run_dir)
    [task] = store.read("tasks")
    return store.read("trajectories")[0], task


def plant(kind, kept, seed=0):
    trajectory, task = kept
    planted = PLANTERS[kind](trajectory, task, random.Random(seed))
    assert planted is not None and planted.trajectory.id != trajectory.id
    return planted, trajectory, task


def test_drop_write_call_removes_the_call_keeps_the_claim_and_undoes_the_state(kept):
    planted, original, task = plant("drop_write_call", kept)
    messages = planted.trajectory.messages
    assert not any(c["function"]["name"] == "cancel_order" for m in messages for c in m.get("tool_calls") or [])
    assert not any(m["role"] == "tool" for m in messages) and planted.trajectory.tool_calls == []
    assert any("cancelled" in str(m.get("content")) for m in messages if m["role"] == "assistant")
    assert planted.trajectory.final_state == task.initial_state and planted.by == "check"
    assert original.final_state["orders"]["A-1234"] == {"status": "cancelled"}  # the original is untouched


def test_change_key_argument_names_an_id_nobody_gave(kept):
    planted, original, _ = plant("change_key_argument", kept)
    [changed] = [c for m in planted.trajectory.messages for c in m.get("tool_calls") or []]
    value = json.loads(changed["function"]["arguments"])["order_id"]
    assert value != "A-1234" and re.fullmatch(r"A-\d{4}", value)
    assert planted.trajectory.tool_calls[0].arguments == changed["function"]["arguments"]
    assert run_checks(Subject(planted.trajectory, kept[1]))["call_ids_grounded"] is False


def test_fabricate_tool_result_changes_message_and_trace_alike(kept):
    planted, original, _ = plant("fabricate_tool_result", kept)
    [tool] = [m for m in planted.trajectory.messages if m["role"] == "tool"]
    assert tool["content"] != [m for m in original.messages if m["role"] == "tool"][0]["content"]
    assert planted.trajectory.tool_calls[0].result == tool["content"] and planted.by == "judge"


def test_leak_role_break_and_cut(kept):
    leak, _, _ = plant("leak_hidden_fact", kept)
    first = next(m for m in leak.trajectory.messages if m["role"] == "user")
    assert first["content"].endswith("Order number: A-1234.")
    role, _, _ = plant("user_breaks_role", kept)
    assert any(any(line in str(m["content"]) for line in ROLE_BREAKS) for m in role.trajectory.messages if m["role"] == "user")
    cut, original, _ = plant("cut_last_turns", kept)
    assert cut.trajectory.messages[-1]["role"] == "tool" and not cut.trajectory.user_stopped
    assert len(cut.trajectory.messages) == len(original.messages) - 2


def test_a_defect_that_cannot_be_planted_says_so():
    from synth.core.records import Trajectory
    task = Task(agent_id="a", goal="Order number A-1 please", persona="p", user_facts=["Order number: A-1"],
                rubric=[Criterion(text="t", kind="essential")])
    chat = Trajectory(task_id=task.id, agent_id="a", tools=[], messages=[
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    rng = random.Random(0)
    assert PLANTERS["drop_write_call"](chat, task, rng) is None  # no write call
    assert PLANTERS["fabricate_tool_result"](chat, task, rng) is None  # no tool result
    assert PLANTERS["leak_hidden_fact"](chat, task, rng) is None  # the only fact is in the goal
    assert PLANTERS["cut_last_turns"](chat, task, rng) is None  # nothing before the answer to keep
