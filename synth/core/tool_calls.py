"""Tool calls as text: how the embedded server shows tools to a model and reads its calls back.

Every preset speaks one syntax, the one Qwen2.5's chat template teaches (Hermes style): a call is
`<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, a result comes back inside
`<tool_response>...</tool_response>`. A template that renders tools itself (Qwen2.5's) gets the
OpenAI messages as they are; one that knows only role and content (SmolLM2's, Gemma's) gets
`as_plain_messages()`: the tools described in the system message, calls and results as text.
Pure functions, no llama_cpp: the parsing is unit-tested on strings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from synth.core.prompts import render

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


@dataclass
class ParsedReply:
    """A model's reply split into text and tool calls.

    `broken_at` is the offset of the first `<tool_call>` whose body is not a call of a known tool
    (bad JSON, cut off, unknown name): the server regenerates from there under a grammar.
    """

    content: str | None
    calls: list[dict[str, Any]] = field(default_factory=list)
    broken_at: int | None = None


def template_renders_tools(template: str) -> bool:
    """Whether a chat template shows `tools` to the model itself (Qwen2.5's does, SmolLM2's does not)."""
    return re.search(r"\btools\b", template) is not None


def _call_from_json(text: str, tool_names: set[str]) -> dict[str, Any] | None:
    """{"name", "arguments": dict} if `text` is one JSON call of a known tool, else None."""
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        # Qwen2.5-Coder's own template shows the call format as {{"name": ...}}, and models copy it
        if not (text.startswith("{{") and text.endswith("}}")):
            return None
        try:
            obj = json.loads(text[1:-1])
        except json.JSONDecodeError:
            return None
    if not isinstance(obj, dict) or obj.get("name") not in tool_names:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models encode the arguments twice
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return {"name": obj["name"], "arguments": args}


def parse_reply(text: str, tool_names: set[str]) -> ParsedReply:
    """Split a generated reply into content and calls.

    Besides tagged calls, a reply that is nothing but one JSON call of a known tool (what small
    models often write) counts as that call: it can mean nothing else.
    """
    if OPEN not in text:
        bare = _call_from_json(text, tool_names)
        if bare is not None:
            return ParsedReply(None, [bare])
        return ParsedReply(text.strip() or None)
    calls, outside, pos = [], [], 0
    while (start := text.find(OPEN, pos)) != -1:
        outside.append(text[pos:start])
        body_start = start + len(OPEN)
        end = text.find(CLOSE, body_start)
        body = text[body_start:] if end == -1 else text[body_start:end]
        call = _call_from_json(body, tool_names)
        if call is None:
            return ParsedReply(_join(outside), calls, broken_at=start)
        calls.append(call)
        pos = len(text) if end == -1 else end + len(CLOSE)
    outside.append(text[pos:])
    return ParsedReply(_join(outside), calls)


def _join(parts: list[str]) -> str | None:
    return "".join(parts).strip() or None


def _arguments(arguments: Any) -> Any:
    """Call arguments as an object: OpenAI messages carry them as a JSON string."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            pass  # shown as the string it is: the model sees what it sent
    return arguments


def with_object_arguments(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`messages` with each tool call's arguments as an object, for templates that `tojson` them
    (Qwen2.5's): a JSON string would reach the model encoded twice, and it copies that."""
    out = []
    for msg in messages:
        if msg.get("tool_calls"):
            calls = [{**c, "function": {**c["function"], "arguments": _arguments(c["function"].get("arguments", {}))}}
                     for c in msg["tool_calls"]]
            msg = {**msg, "tool_calls": calls}
        out.append(msg)
    return out


def format_call(name: str, arguments: Any) -> str:
    """One call as the model should write it (also how past calls are shown to it)."""
    arguments = _arguments(arguments)
    return f"{OPEN}\n{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}\n{CLOSE}"


def call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """JSON Schema of one call object of any of `tools` (OpenAI form): the grammar for a forced call."""
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": t["function"]["name"]},
                           "arguments": t["function"].get("parameters") or {"type": "object"}},
            "required": ["name", "arguments"],
        }
        for t in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def tools_prompt(tools: list[dict[str, Any]]) -> str:
    """The system-message section that describes `tools` to a model whose template cannot."""
    listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return render(__file__, "tools_system", tools=listing, open=OPEN, close=CLOSE)


def as_plain_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[dict[str, str]]:
    """OpenAI messages (tool calls, tool results) as role + content only, for a template without tool support.

    Tools go at the end of the system message (one is added if there is none); calls become
    tagged text in the assistant's message; consecutive tool results become one user message.
    """
    out: list[dict[str, str]] = []
    for msg in messages:
        role, content = msg["role"], _text(msg.get("content"))
        if role == "assistant" and msg.get("tool_calls"):
            calls = [format_call(c["function"]["name"], c["function"].get("arguments", {})) for c in msg["tool_calls"]]
            out.append({"role": "assistant", "content": "\n".join([content] * bool(content) + calls)})
        elif role == "tool":
            result = f"<tool_response>\n{content}\n</tool_response>"
            if out and out[-1].get("_tool"):
                out[-1]["content"] += "\n" + result
            else:
                out.append({"role": "user", "content": result, "_tool": "1"})
        else:
            out.append({"role": role, "content": content})
    for msg in out:
        msg.pop("_tool", None)
    if tools:
        section = tools_prompt(tools)
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{section}" if out[0]["content"] else section
        else:
            out.insert(0, {"role": "system", "content": section})
    return out


def _text(content: Any) -> str:
    """Message content as text: None is "", a list of parts is their text joined."""
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)
