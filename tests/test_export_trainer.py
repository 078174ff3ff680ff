"""export/all, DPO pairs, pass@k on RL rows, privileged hints, and reading exports of format 1."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, DatasetDict, load_from_disk

from synth.chat_rows import split_parallel_calls, trainer_message
from synth.stages.export import export_run, load_export
from tests.exported_run import build


def rows(export, name: str) -> list[dict]:
    data = load_from_disk(str(export / name))
    return [row for split in data.values() for row in split.to_list()]


@pytest.fixture
def ctx(tmp_path):
    ctx = build(tmp_path)
    yield ctx
    ctx.store.close()


def test_all_holds_dropped_trajectories_with_reasons(ctx):
    counts = export_run(ctx)
    assert counts == {"sft_rows": 2, "rl_rows": 1, "all_rows": 3, "dpo_rows": 1}
    everything = rows(ctx.store.root / "export", "all")
    [dropped] = [r for r in everything if not r["keep"]]
    assert dropped["reasons"] == ["check failed: claims_backed_by_tool_calls", "score 0.00 below threshold 0.50"]
    assert dropped["score"] == 0.0 and dropped["sample"] == 2
    kept = [r for r in everything if r["keep"]]
    assert all(r["reasons"] == [] for r in kept)
    sft = rows(ctx.store.root / "export", "sft")
    assert [{k: v for k, v in r.items() if k not in ("keep", "reasons")} for r in kept] == sft


def test_dpo_pairs_best_kept_against_each_dropped(ctx):
    export_run(ctx)
    [pair] = rows(ctx.store.root / "export", "dpo")
    everything = {r["sample"]: r for r in rows(ctx.store.root / "export", "all")}
    assert pair["chosen_id"] == everything[0]["trajectory_id"]  # score 1.0 beats 0.8
    assert pair["rejected_id"] == everything[2]["trajectory_id"]
    assert pair["prompt"] == everything[0]["messages"][:2]  # system + the user's opening
    assert pair["chosen"] == everything[0]["messages"][2:]
    assert pair["rejected"] == [{"role": "assistant", "content": "I booked it."}]
    assert pair["rejected_reasons"] == everything[2]["reasons"]
    assert (pair["chosen_score"], pair["rejected_score"]) == (1.0, 0.0)


def test_pass_at_k_and_band_reach_the_rl_rows(ctx):
    export_run(ctx)
    [row] = rows(ctx.store.root / "export", "rl")
    assert (row["samples"], row["passed"]) == (3, 2)
    assert row["pass_at_k"] == [pytest.approx(2 / 3, abs=1e-4), 1.0, 1.0]  # pass@1, pass@2, pass@3
    assert row["pass_hat_k"][2] == 0.0
    assert row["solve_band"] == "mixed"


def test_privileged_hints_come_from_what_the_student_lacks(ctx):
    export_run(ctx)
    sft = rows(ctx.store.root / "export", "sft")
    for row in sft:
        assert row["privileged_source"] == "gold"  # the task's gold actions, not the row's own calls
        assert row["privileged"].splitlines() == [
            "Facts the user knows: Home airport: BGO", 'Initial state: {"flights": [{"id": 7}]}',
            "Reference actions: 1. book_seat(flight=7)"]
    [rl] = rows(ctx.store.root / "export", "rl")
    assert rl["privileged"] == sft[0]["privileged"]


def test_privileged_from_another_sample_when_there_is_no_gold(tmp_path):
    ctx = build(tmp_path, privileged={"format": "calls", "include": ["actions"]})
    [task] = ctx.store.read("tasks")
    task.gold_actions = []
    ctx.store.path("tasks").write_text(task.model_dump_json() + "\n")
    export_run(ctx)
    by_sample = {r["sample"]: r for r in rows(ctx.store.root / "export", "sft")}
    # sample 0 learns from sample 1 (the best other kept one) and the other way round; never from itself.
    assert by_sample[0]["privileged_source"] == f"sample:{by_sample[1]['trajectory_id']}"
    assert by_sample[0]["privileged"] == ('Reference actions: 1. search_flights({"origin": "BGO"}) '
                                          '2. search_flights({"origin": "OSL"}) 3. book_seat({"flight": 9})')
    assert by_sample[1]["privileged_source"] == f"sample:{by_sample[0]['trajectory_id']}"
    assert by_sample[1]["privileged"].startswith('Reference actions: 1. search_flights({"origin": "BGO", "date"')
    ctx.store.close()


def test_tools_format_names_the_tools_only(tmp_path):
    ctx = build(tmp_path, privileged={"format": "tools"})
    export_run(ctx)
    [row, _] = rows(ctx.store.root / "export", "sft")
    assert row["privileged"].splitlines()[-1] == "Tools to use: book_seat"
    ctx.store.close()


def test_rows_reload_equal_to_what_was_written_parquet_too(ctx):
    from synth.stages.export import judged_rows, rl_rows

    export_run(ctx)
    export = ctx.store.root / "export"
    assert rows(export, "all") == judged_rows(ctx, ctx.store.read("trajectories"), ctx.store.read("verdicts"))
    assert rows(export, "rl") == rl_rows(ctx, ctx.store.read("tasks"))
    for name in ("sft", "rl", "all", "dpo"):
        assert Dataset.from_parquet(str(export / "parquet" / name / "train.parquet")).to_list() == rows(export, name)


def test_card_names_the_format_version(ctx):
    export_run(ctx)
    card = (ctx.store.root / "export" / "README.md").read_text()
    assert "synth_format: 2" in card
    assert load_export(ctx.store.root / "export", "sft")["train"].to_list() == rows(ctx.store.root / "export", "sft")


def test_format_1_exports_are_read_in_the_current_form(tmp_path):
    """An export written before format 2: JSON-string columns, every message padded with nulls, no version."""
    old = {"role": "assistant", "content": "", "tool_call_id": None, "name": None,
           "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": {"b": 1}}'}}]}
    sft = {"messages": [{"role": "user", "content": "hi", "tool_calls": None, "tool_call_id": None, "name": None}, old,
                        {"role": "tool", "content": "ok", "tool_calls": None, "tool_call_id": "c1", "name": "f"}],
           "tools": json.dumps([{"type": "function", "function": {"name": "f", "parameters": {}}}]),
           "privileged": "1. f(a=1)", "criteria": "[]", "checks": '{"x": true}', "trajectory_id": "t", "task_id": "k",
           "agent_id": "a", "domain": "d", "toolset": "s", "difficulty": "easy", "score": 1.0, "user_stopped": True,
           "turns": 1, "num_tool_calls": 1, "seed": 0, "sample": 0, "model": "m", "config_hash": "h",
           "sandbox_type": "local", "sandbox_image": "", "tool_ids": ["x"]}
    DatasetDict({"train": Dataset.from_list([sft])}).save_to_disk(str(tmp_path / "sft"))
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n# old\n")
    [row] = load_export(tmp_path, "sft")["train"].to_list()
    assert row["messages"] == [{"role": "user", "content": "hi"},
                               {"role": "assistant", "content": "", "tool_calls": [
                                   {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": {"b": 1}}}}]},
                               {"role": "tool", "content": "ok", "tool_call_id": "c1", "name": "f"}]
    assert row["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert row["checks"] == {"x": True} and row["parallel_tool_calls"] is False


def test_unknown_format_is_refused_with_the_fix(tmp_path):
    from synth.core.errors import ConfigError

    DatasetDict({"train": Dataset.from_list([{"a": 1}])}).save_to_disk(str(tmp_path / "sft"))
    (tmp_path / "README.md").write_text("---\nsynth_format: 9\n---\n")
    with pytest.raises(ConfigError, match="format 9.*upgrade synth"):
        load_export(tmp_path, "sft")
    with pytest.raises(ConfigError, match="synth export"):
        load_export(tmp_path / "nothing", "sft")


def test_message_keeps_only_its_keys_and_unparseable_arguments_stay_text():
    message = trainer_message({"role": "assistant", "content": None, "reasoning_content": "  ", "name": None,
                               "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{not json"}}]})
    assert message == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}


def test_split_keeps_results_next_to_their_calls():
    calls = [{"id": i, "type": "function", "function": {"name": "f", "arguments": {}}} for i in ("a", "b", "c")]
    messages = [{"role": "assistant", "content": "x", "reasoning_content": "r", "tool_calls": calls},
                {"role": "tool", "tool_call_id": "b", "content": "B"}, {"role": "tool", "tool_call_id": "a", "content": "A"},
                {"role": "tool", "tool_call_id": "zz", "content": "stray"}, {"role": "assistant", "content": "done"}]
    out = split_parallel_calls(messages)
    assert [(m["role"], m.get("tool_call_id") or m.get("content")) for m in out] == [
        ("assistant", "x"), ("tool", "a"), ("assistant", ""), ("tool", "b"), ("assistant", ""), ("tool", "zz"),
        ("assistant", "done")]
    assert out[0]["reasoning_content"] == "r" and "reasoning_content" not in out[2]
    assert [m["tool_calls"][0]["id"] for m in out if m.get("tool_calls")] == ["a", "b", "c"]
