"""The `synth-tools` chat handler of the embedded server: the model's own chat template, real tool calls.

Why not llama-cpp-python's `chatml-function-calling` (measured with 0.3.36): it renders a ChatML
template of its own whatever the model was trained on, drops `tool` messages from the prompt (the
model never sees a tool result), and once tools are offered it cannot answer in text: after its
grammar picks "message:", a second grammar allows only "functions.NAME:" or the end, so a text
answer arrives as `content: "functions.get_weather:"` (Qwen2.5-Coder-0.5B did this for "tell me a
joke"), or as a call nobody asked for.

This handler renders the GGUF's chat template verbatim (or a preset's template for a GGUF without
one), with tools rendered by the template when it can and by `tool_calls.as_plain_messages` when
it cannot; generates freely; reads `<tool_call>` blocks back into `tool_calls`. A call the model
botched (bad JSON, unknown tool, cut off) is regenerated once from where it started, under a
grammar of the tools' schemas, so what comes back is either text or calls that parse.
Runs inside the server process only (it imports llama_cpp); `install()` registers it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import llama_cpp
import llama_cpp.llama_chat_format as chat_format
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from synth.core.tool_calls import (OPEN, as_plain_messages, call_schema, parse_reply, template_renders_tools,
                                   with_object_arguments)

NAME = "synth-tools"
TEMPLATE_FLAG = "--synth_chat_template"
_END_OF_TURN = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>")
_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "typical_p", "seed", "presence_penalty",
             "frequency_penalty", "repeat_penalty", "tfs_z", "mirostat_mode", "mirostat_tau", "mirostat_eta",
             "logits_processor", "logit_bias")


class _Prompter:
    """The chat template of one loaded model, with its stop strings."""

    def __init__(self, llama: llama_cpp.Llama, template: str | None):
        template = template or llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"the model has no chat template in its GGUF metadata: pass {TEMPLATE_FLAG} FILE")
        self.template = template
        self.renders_tools = template_renders_tools(template)
        bos, eos = (self._token_text(llama, t) for t in (llama.token_bos(), llama.token_eos()))
        self.formatter = chat_format.Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        self.stop = [s for s in dict.fromkeys([eos, *(t for t in _END_OF_TURN if t in template)]) if s]

    @staticmethod
    def _token_text(llama: llama_cpp.Llama, token: int) -> str:
        return llama.detokenize([token], special=True).decode("utf-8", errors="ignore") if token >= 0 else ""

    def prompt(self, messages: list[dict], tools: list[dict] | None) -> str:
        if tools and self.renders_tools:
            return self.formatter(messages=with_object_arguments(messages), tools=tools).prompt
        return self.formatter(messages=as_plain_messages(messages, tools)).prompt


def _grammar(schema: dict | None) -> LlamaGrammar:
    """A grammar for JSON of `schema`; any JSON when the schema is missing or beyond the converter."""
    if schema:
        try:
            return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        except Exception:  # the converter rejects some schemas (e.g. huge maxLength): plain JSON then
            pass
    return LlamaGrammar.from_string(JSON_GBNF, verbose=False)


def make_handler(template: str | None = None):
    """A llama-cpp-python chat completion handler; `template` replaces the GGUF's chat template."""
    prompters: dict[int, _Prompter] = {}

    def handler(*, llama: llama_cpp.Llama, messages: list[dict], tools: list[dict] | None = None,
                tool_choice: Any = None, functions: list[dict] | None = None, function_call: Any = None,
                response_format: dict | None = None, stream: bool = False, stop: Any = None,
                max_tokens: int | None = None, grammar: LlamaGrammar | None = None, **kwargs: Any):
        prompter = prompters.get(id(llama))
        if prompter is None:
            prompter = prompters[id(llama)] = _Prompter(llama, template)
        if functions and not tools:  # the legacy form
            tools = [{"type": "function", "function": f} for f in functions]
            tool_choice = function_call if isinstance(function_call, str) else (
                {"type": "function", "function": function_call} if function_call else None)
        stops = prompter.stop + ([stop] if isinstance(stop, str) else list(stop or []))
        sampling = {k: v for k, v in kwargs.items() if k in _SAMPLING}

        def complete(prompt: str, *, grammar: LlamaGrammar | None = None, streaming: bool = False):
            return llama.create_completion(prompt=prompt, stop=stops, max_tokens=max_tokens, grammar=grammar,
                                           stream=streaming, **sampling)

        if not tools or tool_choice == "none":
            if response_format and response_format.get("type") == "json_object":
                grammar = _grammar(response_format.get("schema"))
            prompt = prompter.prompt(messages, None)
            return chat_format._convert_completion_to_chat(
                llama.create_completion(prompt=prompt, stop=stops, max_tokens=max_tokens, grammar=grammar,
                                        stream=stream, **sampling), stream=stream)
        if stream:
            raise ValueError(f"the {NAME} chat format does not stream replies that may call tools")
        names = {t["function"]["name"] for t in tools}
        prompt = prompter.prompt(messages, tools)
        if isinstance(tool_choice, dict) or tool_choice == "required":
            chosen = [t for t in tools if not isinstance(tool_choice, dict)
                      or t["function"]["name"] == tool_choice["function"]["name"]]
            if not chosen:
                raise ValueError(f"tool_choice names a tool that is not in tools: {tool_choice}")
            first = complete(prompt + OPEN + "\n", grammar=_grammar(call_schema(chosen)))
            return _reply(llama, [first], None, parse_reply(OPEN + "\n" + _text(first), names).calls)
        first = complete(prompt)
        text = _text(first)
        parsed = parse_reply(text, names)
        completions = [first]
        if parsed.broken_at is not None:  # regenerate that call under the tools' grammar
            prefix = text[:parsed.broken_at] + OPEN + "\n"
            retry = complete(prompt + prefix, grammar=_grammar(call_schema(tools)))
            completions.append(retry)
            parsed.calls += parse_reply(OPEN + "\n" + _text(retry), names).calls
        return _reply(llama, completions, parsed.content, parsed.calls)

    return handler


def _text(completion: dict) -> str:
    return completion["choices"][0]["text"]


def _reply(llama: llama_cpp.Llama, completions: list[dict], content: str | None, calls: list[dict]) -> dict:
    """An OpenAI chat completion from the completions made for one reply (usage summed)."""
    last = completions[-1]
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)}}
            for c in calls
        ]
    finish = "tool_calls" if calls else last["choices"][0]["finish_reason"]
    usage = {k: sum(c["usage"][k] for c in completions) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return {"id": "chat" + last["id"], "object": "chat.completion", "created": last["created"], "model": last["model"],
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}], "usage": usage}


def install(argv: list[str]) -> list[str]:
    """Register the handler (with the template file that `TEMPLATE_FLAG PATH` names); `argv` without that flag."""
    template = None
    if TEMPLATE_FLAG in argv:
        i = argv.index(TEMPLATE_FLAG)
        template = Path(argv[i + 1]).read_text(encoding="utf-8")
        argv = argv[:i] + argv[i + 2:]
    chat_format.register_chat_completion_handler(NAME)(make_handler(template))
    return argv
