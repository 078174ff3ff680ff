"""Messages in the form trainers and chat templates expect, and reading exports written before it.

Format 2 (this one): a message holds only the keys it has (Llama-3.1's template tests
`'tool_calls' in message` and then fails on None), tool-call `arguments` are JSON objects (Qwen2.5's
and Llama-3.1's templates `tojson` them: a string would be double-encoded), and `reasoning_content`
is kept where the model gave one. Stored with `datasets.Json()` features, so rows of different
shapes are not unified into one struct. Format 1 (exports before it, no `format_version` in the
card): five keys per message with nulls, JSON-string arguments, `tools` a JSON string;
`upgrade_sft_row` turns such a row into format 2.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

FORMAT_VERSION = 2


def trainer_message(message: dict[str, Any]) -> dict[str, Any]:
    """One message with only the keys it has; `content` always present (templates concatenate it)."""
    out: dict[str, Any] = {"role": message["role"], "content": message.get("content") or ""}
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning.strip():
        out["reasoning_content"] = reasoning
    if message.get("tool_calls"):
        out["tool_calls"] = [trainer_call(c) for c in message["tool_calls"]]
    for key in ("tool_call_id", "name"):
        if message.get(key):
            out[key] = message[key]
    return out


def trainer_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {"id": call.get("id") or "", "type": call.get("type") or "function",
            "function": {"name": function.get("name") or "", "arguments": arguments_object(function.get("arguments"))}}


def arguments_object(arguments: Any) -> Any:
    """A call's arguments as a JSON object. Text that is not a JSON object stays text: only dropped
    trajectories can hold it (the `tool_arguments_valid` check vetoes kept ones), and it is data."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or arguments == "":
        return {}
    try:
        parsed = json.loads(arguments)
    except (TypeError, ValueError):
        return arguments
    return parsed if isinstance(parsed, dict) else arguments


def trainer_messages(messages: Iterable[dict[str, Any]], *, split_parallel: bool = False) -> list[dict[str, Any]]:
    out = [trainer_message(m) for m in messages]
    return split_parallel_calls(out) if split_parallel else out


def has_parallel_calls(messages: Iterable[dict[str, Any]]) -> bool:
    """Some assistant message makes two or more tool calls (Llama-3.1's template refuses those)."""
    return any(len(m.get("tool_calls") or []) > 1 for m in messages if m.get("role") == "assistant")


def split_parallel_calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each assistant message with N calls becomes N consecutive single-call turns, each followed by
    its own tool result. The calls ran concurrently on the same state, so their results do not
    depend on the order; the message's text and reasoning stay with the first call."""
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(messages):
        message = messages[i]
        calls = message.get("tool_calls") or []
        if message["role"] != "assistant" or len(calls) < 2:
            out.append(message)
            i += 1
            continue
        results: dict[str, dict[str, Any]] = {}
        j = i + 1
        while j < len(messages) and messages[j]["role"] == "tool":
            results.setdefault(messages[j].get("tool_call_id") or "", messages[j])
            j += 1
        answered = set()
        for n, call in enumerate(calls):
            turn = {k: v for k, v in message.items() if k != "tool_calls"} if n == 0 else {"role": "assistant", "content": ""}
            out.append({**turn, "tool_calls": [call]})
            if call["id"] in results:
                out.append(results[call["id"]])
                answered.add(call["id"])
        # Tool messages that answer no call of this message stay, in order, after the split turns.
        out.extend(m for m in messages[i + 1:j] if (m.get("tool_call_id") or "") not in answered)
        i = j
    return out


# ---------------------------------------------------------------- exports written in format 1


def upgrade_sft_row(row: dict[str, Any]) -> dict[str, Any]:
    """A format-1 SFT row as format 2: messages stripped of null keys, arguments and JSON columns parsed."""
    out = dict(row)
    out["messages"] = [trainer_message({k: v for k, v in m.items() if v is not None}) for m in row["messages"]]
    for key in ("tools", "criteria", "checks"):
        if isinstance(row.get(key), str):
            out[key] = json.loads(row[key] or "null")
    out.setdefault("parallel_tool_calls", has_parallel_calls(out["messages"]))
    return out


def upgrade_rl_row(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["prompt"] = [trainer_message({k: v for k, v in m.items() if v is not None}) for m in row["prompt"]]
    for key in ("tools", "rubric", "user", "initial_state", "environment"):
        if isinstance(row.get(key), str):
            out[key] = json.loads(row[key] or "null")
    return out
