"""What the judge reads besides the criteria: the agent's instructions, what the user knew, the tools,
what the tools really changed, and the conversation as the user saw it.

A judge that sees only the goal and the transcript cannot tell a policy violation from a policy
(it never saw the system prompt), an invented fact from a given one (it never saw the user's
facts), or a claimed action from a real one (it never saw the state). Each part is capped so the
prompt fits small context windows; what is cut says so. Reasoning (`reasoning_content`, and any
`<think>` block left in a message) is never shown: the judge grades what was said and done.
"""

from __future__ import annotations

import json
from typing import Any

from synth.core.llm import split_thinking
from synth.core.records import Task, Trajectory

SYSTEM_CHARS = 3000
TOOLS_CHARS = 2500
STATE_CHARS = 2500
VALUE_CHARS = 160


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}\n[... {len(text) - limit} more characters not shown]"


def visible(message: dict[str, Any]) -> str:
    """A message's text as the other side saw it: without reasoning, `<think>` blocks removed."""
    text = str(message.get("content") or "")
    inline = split_thinking(text)
    return inline[1] if inline is not None else text


def system_prompt(trajectory: Trajectory) -> str:
    text = next((str(m.get("content") or "") for m in trajectory.messages if m["role"] == "system"), "")
    return _cap(text.strip(), SYSTEM_CHARS) or "(none)"


def user_knowledge(task: Task) -> str:
    facts = "\n".join(f"- {fact}" for fact in task.user_facts) or "- (none)"
    return f"Goal: {task.goal}\nDetails only the user knew (it should give them when asked):\n{facts}"


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if "enum" in schema:
        return "|".join(json.dumps(v) for v in schema["enum"][:6])
    if kind == "array":
        return f"list[{_type_of(schema.get('items') or {})}]"
    return kind if isinstance(kind, str) else "any"


def tool_schemas(trajectory: Trajectory) -> str:
    """One line per offered tool: name(arg: type, optional?: type) - description."""
    lines = []
    for tool in trajectory.tools:
        fn = tool.get("function", tool)
        params = fn.get("parameters") or {}
        required = set(params.get("required") or [])
        args = ", ".join(f"{name}{'' if name in required else '?'}: {_type_of(schema if isinstance(schema, dict) else {})}"
                         for name, schema in (params.get("properties") or {}).items())
        lines.append(f"- {fn.get('name', '?')}({args}): {str(fn.get('description') or '').strip()}")
    return _cap("\n".join(lines), TOOLS_CHARS) or "(no tools)"


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves by dot path; a JSON string value (the simulator's ledger stores those) is opened up."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            value = json.loads(value)
        except ValueError:
            pass
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, item in enumerate(value):
            out.update(_flat(item, f"{prefix}.{i}" if prefix else str(i)))
        return out
    return {prefix: value} if prefix else {}


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS] + "..."


def state_changes(initial: dict[str, Any], final: dict[str, Any]) -> list[str]:
    """What the episode changed in the tools' state, path by path (added, removed, changed)."""
    before, after = _flat(initial), _flat(final)
    lines = []
    for path in sorted(before.keys() | after.keys()):
        if path not in before:
            lines.append(f"+ {path} = {_short(after[path])}")
        elif path not in after:
            lines.append(f"- {path} (was {_short(before[path])})")
        elif before[path] != after[path]:
            lines.append(f"~ {path}: {_short(before[path])} -> {_short(after[path])}")
    return lines


def state_report(task: Task, trajectory: Trajectory) -> str:
    """The final state's diff from the task's initial state, or a plain statement that nothing changed."""
    if not trajectory.final_state and not task.initial_state:
        return "(the tools keep no state, or none was recorded)"
    changes = state_changes(task.initial_state, trajectory.final_state)
    if not changes:
        return "(nothing changed: the final state equals the initial state)"
    return _cap("\n".join(changes), STATE_CHARS)


def transcript(messages: list[dict[str, Any]], user_stopped: bool = False) -> str:
    """The conversation with numbered user turns, tool calls and results; no reasoning."""
    lines, turn = [], 0
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "system":
            continue
        if role == "user":
            closing = " (closing message)" if user_stopped and i == last_user == len(messages) - 1 else ""
            turn += 1
            lines.append(f"[turn {turn}] USER{closing}: {visible(message)}")
        elif role == "assistant":
            if text := visible(message):
                lines.append(f"[turn {turn}] ASSISTANT: {text}")
            for call in message.get("tool_calls") or []:
                fn = call["function"]
                lines.append(f"[turn {turn}] ASSISTANT CALLS {fn['name']}({fn['arguments']})")
        elif role == "tool":
            lines.append(f"[turn {turn}] TOOL RESULT ({message.get('name', '')}): {message['content']}")
    return "\n".join(lines) if lines else json.dumps(messages)
