"""The synth-tools chat handler's control flow against a scripted stand-in for llama_cpp.Llama (no model).

The real model is met in test_tool_chat_llm.py; here: which prompt is rendered, when a grammar
is used, and what comes back for each kind of reply.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp")

from synth.core.tool_chat import make_handler  # noqa: E402

TOOLS_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
                  "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}"
                  "<|im_end|>\n{% endfor %}{% if tools %}TOOLS:{{ tools | tojson }}{% endif %}{{ '<|im_start|>assistant\\n' }}")
PLAIN_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{{ '<|im_start|>assistant\\n' }}"
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


class ScriptedLlama:
    """Answers create_completion with the next scripted text; records prompts and whether a grammar was set."""

    def __init__(self, template: str, replies: list[str]):
        self.metadata = {"tokenizer.chat_template": template}
        self.replies, self.calls = list(replies), []

    def token_bos(self):
        return 1

    def token_eos(self):
        return 2

    def detokenize(self, tokens, special=False):
        return {1: b"<s>", 2: b"<|im_end|>"}[tokens[0]]

    def create_completion(self, *, prompt, stop, max_tokens, grammar, stream, **sampling):
        self.calls.append({"prompt": prompt, "grammar": grammar is not None, "stop": stop})
        text = self.replies.pop(0)
        return {"id": f"cmpl-{len(self.calls)}", "object": "text_completion", "created": 0, "model": "m",
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


def ask(llama, messages, **kw):
    return make_handler()(llama=llama, messages=messages, **kw)["choices"][0]


USER = [{"role": "user", "content": "Weather in Paris?"}]


def test_a_tagged_call_becomes_a_tool_call_from_one_free_generation():
    llama = ScriptedLlama(TOOLS_TEMPLATE, ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'])
    choice = ask(llama, USER, tools=[WEATHER], tool_choice="auto")
    (call,) = choice["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"} and choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (only,) = llama.calls
    assert not only["grammar"] and "TOOLS:" in only["prompt"] and "<|im_end|>" in only["stop"]


def test_text_with_tools_offered_stays_text():
    llama = ScriptedLlama(TOOLS_TEMPLATE, ["It is a lovely day to ask me."])
    choice = ask(llama, USER, tools=[WEATHER], tool_choice="auto")
    assert choice["message"] == {"role": "assistant", "content": "It is a lovely day to ask me."}
    assert choice["finish_reason"] == "stop"


def test_a_botched_call_is_regenerated_once_under_the_tools_grammar():
    llama = ScriptedLlama(TOOLS_TEMPLATE, ['Checking. <tool_call>\n{"name": "get_weather", "city": Paris',
                                           '{"name": "get_weather", "arguments": {"city": "Paris"}}'])
    choice = ask(llama, USER, tools=[WEATHER], tool_choice="auto")
    assert [c["grammar"] for c in llama.calls] == [False, True]
    assert llama.calls[1]["prompt"].endswith("<|im_start|>assistant\nChecking. <tool_call>\n")
    assert choice["message"]["content"] == "Checking."
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}


def test_a_named_tool_choice_generates_under_its_grammar():
    llama = ScriptedLlama(TOOLS_TEMPLATE, ['{"name": "get_weather", "arguments": {"city": "Oslo"}}'])
    choice = ask(llama, USER, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert llama.calls[0]["grammar"] and llama.calls[0]["prompt"].endswith("<tool_call>\n")
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    with pytest.raises(ValueError, match="not in tools"):
        ask(ScriptedLlama(TOOLS_TEMPLATE, []), USER, tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "send_email"}})


def test_a_template_without_tools_gets_them_in_the_system_message_and_history_as_text():
    history = USER + [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "1", "content": '{"temp_c": 18}'}]
    llama = ScriptedLlama(PLAIN_TEMPLATE, ["18 degrees."])
    assert ask(llama, history, tools=[WEATHER], tool_choice="auto")["message"]["content"] == "18 degrees."
    prompt = llama.calls[0]["prompt"]
    assert prompt.startswith("<|im_start|>system\n# Tools") and '"name": "get_weather"' in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert '<|im_start|>user\n<tool_response>\n{"temp_c": 18}\n</tool_response>' in prompt


def test_a_tojson_template_sees_arguments_as_objects_and_json_mode_uses_a_grammar():
    history = USER + [{"role": "assistant", "content": "", "tool_calls": [{"id": "1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}]}]
    llama = ScriptedLlama(TOOLS_TEMPLATE, ["ok", '{"a": 1}'])
    ask(llama, history, tools=[WEATHER], tool_choice="auto")
    assert '"arguments": {"city": "Paris"}' in llama.calls[0]["prompt"], "not a JSON string encoded twice"
    choice = ask(llama, USER, response_format={"type": "json_object", "schema": {"type": "object"}})
    assert llama.calls[1]["grammar"] and "TOOLS:" not in llama.calls[1]["prompt"]
    assert choice["message"]["content"] == '{"a": 1}'
