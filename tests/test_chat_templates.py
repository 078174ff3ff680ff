"""Every exported row renders through the chat templates TRL ships, each call, argument object and
tool result once and un-escaped; assistant-only masks cover the assistant's text and nothing else."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trl
from datasets import load_from_disk
from transformers.utils.chat_template_utils import render_jinja_template

from synth.stages.export import export_run
from tests.exported_run import build

TEMPLATES = Path(trl.__file__).parent / "chat_templates"
# Qwen3, Qwen2.5 (Hermes-style <tool_call> JSON), Llama-3.1 (JSON calls, one per message), and the
# training variants whose {% generation %} tags give assistant_only_loss its mask.
NAMES = ["qwen3", "qwen2_5", "llama3_1", "qwen3_training", "qwen2_5_training"]


def template(name: str) -> str:
    return (TEMPLATES / f"{name}.jinja").read_text()


def render(row: dict, name: str, mask: bool = False) -> tuple[str, list]:
    [text], masks = render_jinja_template([row["messages"]], tools=row["tools"], chat_template=template(name),
                                          return_assistant_tokens_mask=mask, bos_token="<s>", eos_token="</s>")
    return text, (masks[0] if masks else [])


def tool_result_form(name: str, content: str) -> str:
    # Llama-3.1's template runs every tool result through tojson (a string is iterable in Jinja): that
    # is the form its model was trained on, so it is the form to expect there, once.
    return json.dumps(content, ensure_ascii=False) if name == "llama3_1" else content


def held_text(name: str, message: dict) -> str:
    """A message's text as the template shows it."""
    content = str(message.get("content") or "")
    return tool_result_form(name, content) if message["role"] == "tool" else content


def rendering_problems(row: dict, name: str) -> list[str]:
    text, _ = render(row, name)
    problems = []
    for message in row["messages"]:
        for call in message.get("tool_calls") or []:
            arguments = call["function"]["arguments"]
            if not isinstance(arguments, dict):
                problems.append(f"{call['id']}: arguments are {type(arguments).__name__}, not an object")
                continue
            shown = json.dumps(arguments, ensure_ascii=False)
            if text.count(shown) != 1:
                problems.append(f"{call['id']}: arguments {shown} appear {text.count(shown)} times")
            escaped = json.dumps(shown, ensure_ascii=False)[1:-1]
            if escaped != shown and escaped in text:
                problems.append(f"{call['id']}: arguments double-encoded")
        if message["role"] == "tool":
            form = tool_result_form(name, message["content"])
            held = sum(held_text(name, m).count(form) for m in row["messages"])  # a reply may quote a result
            if text.count(form) != held:
                problems.append(f"tool result {form!r} appears {text.count(form)} times, the row holds it {held} times")
        # Llama-3.1's template drops the text of a message that makes a call (its format has no room for it).
        dropped = name == "llama3_1" and message.get("tool_calls")
        if message["role"] in ("user", "assistant") and message["content"].strip() and not dropped:
            if message["content"].strip() not in text:
                problems.append(f"{message['role']} text {message['content']!r} missing")
    return problems


@pytest.fixture
def exported(tmp_path):
    ctx = build(tmp_path)
    export_run(ctx)
    yield ctx.store.root / "export"
    ctx.store.close()


def rows(export, name: str) -> list[dict]:
    data = load_from_disk(str(export / name))
    return [row for split in data.values() for row in split.to_list()]


@pytest.mark.parametrize("name", NAMES)
def test_every_exported_row_renders_once_and_unescaped(exported, name):
    checked = 0
    for dataset in ("sft", "all"):
        for row in rows(exported, dataset):
            if name == "llama3_1" and row["parallel_tool_calls"]:
                with pytest.raises(Exception, match="single tool-calls"):
                    render(row, name)
                continue
            assert rendering_problems(row, name) == [], row["trajectory_id"]
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("name", ["qwen3", "llama3_1"])
def test_a_reply_quoting_a_tool_result_is_not_a_double_render_but_a_repeat_is(exported, name, monkeypatch):
    row = next(r for r in rows(exported, "sft") if any(m["role"] == "tool" for m in r["messages"]))
    result = next(m["content"] for m in row["messages"] if m["role"] == "tool")
    last = row["messages"][-1]
    quoting = {**row, "messages": [*row["messages"][:-1], {**last, "content": f"The tool said: {result}"}]}
    assert rendering_problems(quoting, name) == []
    # A template that showed the conversation twice is still caught.
    shown_once = render
    monkeypatch.setattr(sys.modules[__name__], "render", lambda r, n, mask=False: (shown_once(r, n)[0] * 2, []))
    assert any("appears" in p and "the row holds it" in p for p in rendering_problems(quoting, name))


def test_reasoning_reaches_the_qwen3_template(exported):
    [row] = [r for r in rows(exported, "sft") if r["sample"] == 0]
    assert row["messages"][2]["reasoning_content"] == "The user wants flights; search first."
    text, _ = render(row, "qwen3_training")
    assert "<think>\nThe user wants flights; search first.\n</think>" in text


def test_split_parallel_calls_renders_with_llama(tmp_path):
    ctx = build(tmp_path, split_parallel_calls=True)
    export_run(ctx)
    parallel = [r for r in rows(ctx.store.root / "export", "sft") if r["sample"] == 1]
    assert parallel and not parallel[0]["parallel_tool_calls"]
    messages = parallel[0]["messages"]
    assert [m["role"] for m in messages[2:6]] == ["assistant", "tool", "assistant", "tool"]
    assert messages[2]["content"] == "Searching both." and messages[4]["content"] == ""
    assert [m["tool_call_id"] for m in messages[3:6:2]] == [c["tool_calls"][0]["id"] for c in messages[2:5:2]]
    assert rendering_problems(parallel[0], "llama3_1") == []
    ctx.store.close()


@pytest.mark.parametrize("name", ["qwen3_training", "qwen2_5_training"])
def test_generation_mask_covers_the_assistant_only(exported, name):
    for row in rows(exported, "sft"):
        text, mask = render(row, name, mask=True)
        assert mask, "the template has no {% generation %} spans"
        inside = "".join(text[start:end] for start, end in mask)
        for message in row["messages"]:
            if message["role"] == "assistant":
                assert message["content"].strip() in inside
                for call in message.get("tool_calls") or []:
                    assert json.dumps(call["function"]["arguments"], ensure_ascii=False) in inside
            elif message["role"] in ("user", "tool", "system") and message["content"].strip():
                assert message["content"].strip() not in inside, message["content"]
