"""Tool calls as text (synth/core/tool_calls.py): what the synth-tools chat format shows models and reads back."""

from __future__ import annotations

import pytest

from synth.core.tool_calls import (as_plain_messages, call_schema, format_call, parse_reply, template_renders_tools,
                                   with_object_arguments)

NAMES = {"get_weather", "create_note"}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_tagged_calls_and_the_text_around_them_are_split():
    text = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "create_note", "arguments": {"title": "t", "body": "b"}}\n</tool_call>')
    parsed = parse_reply(text, NAMES)
    assert parsed.content == "Let me check."
    assert parsed.calls == [{"name": "get_weather", "arguments": {"city": "Paris"}},
                            {"name": "create_note", "arguments": {"title": "t", "body": "b"}}]
    assert parsed.broken_at is None


@pytest.mark.parametrize("body", [
    '{"name": "get_weather", "argu',                        # cut off by max_tokens
    '{"name": "send_email", "arguments": {}}',              # a tool that is not offered
    '{"name": "get_weather", "arguments": [1, 2]}',         # arguments that are not an object
])
def test_a_botched_call_is_marked_where_it_starts(body):
    text = f"Sure. <tool_call>\n{body}"
    parsed = parse_reply(text, NAMES)
    assert parsed.calls == [] and parsed.broken_at == text.index("<tool_call>") and parsed.content == "Sure."


def test_a_bare_json_call_counts_but_other_json_is_text():
    assert parse_reply('```json\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}\n```', NAMES).calls == [
        {"name": "get_weather", "arguments": {"city": "Rome"}}]
    doubled = parse_reply('{{"name": "get_weather", "arguments": {"city": "Rome"}}}', NAMES)  # as its template shows it
    assert doubled.calls == [{"name": "get_weather", "arguments": {"city": "Rome"}}] and doubled.content is None
    other = parse_reply('{"name": "Alice", "age": 3}', NAMES)
    assert other.calls == [] and other.content == '{"name": "Alice", "age": 3}'
    assert parse_reply("   ", NAMES).content is None


def test_plain_messages_carry_tools_calls_and_results_as_text():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "1", "content": '{"temp_c": 18}'},
        {"role": "tool", "tool_call_id": "2", "content": '{"temp_c": 23}'},
    ]
    out = as_plain_messages(messages, [WEATHER])
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[0]["content"].startswith("Be brief.\n\n# Tools") and '"name": "get_weather"' in out[0]["content"]
    assert out[2]["content"] == format_call("get_weather", {"city": "Paris"}) + "\n" + format_call("get_weather", {"city": "Rome"})
    assert out[3]["content"] == '<tool_response>\n{"temp_c": 18}\n</tool_response>\n<tool_response>\n{"temp_c": 23}\n</tool_response>'
    assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in out)
    assert as_plain_messages([{"role": "user", "content": "hi"}], [WEATHER])[0]["role"] == "system"
    assert as_plain_messages([{"role": "user", "content": None}], None) == [{"role": "user", "content": ""}]


def test_arguments_reach_a_tojson_template_as_objects():
    msg = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
    (out,) = with_object_arguments([msg])
    assert out["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert msg["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}', "the request is not modified"


def test_call_schema_and_template_detection():
    assert call_schema([WEATHER])["properties"]["name"] == {"const": "get_weather"}
    note = {"type": "function", "function": {"name": "create_note"}}
    both = call_schema([WEATHER, note])
    assert [o["properties"]["name"]["const"] for o in both["anyOf"]] == ["get_weather", "create_note"]
    assert both["anyOf"][1]["properties"]["arguments"] == {"type": "object"}
    assert template_renders_tools("{%- if tools %}{{ tool | tojson }}{% endif %}")
    assert not template_renders_tools("{% for message in messages %}{{ message['content'] }}{% endfor %}")
