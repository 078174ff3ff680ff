"""Deterministic junk detectors over what the assistant and the tools wrote.

- A tool call written as text: the assistant's content holds `functions.x:` (llama.cpp's
  chatml-function-calling format leaking into text), a `<tool_call>` tag, a `{"name": ...,
  "arguments": ...}` object, or an offered tool's name followed by a JSON object
  (`get_weather({"city": ...})`, `get_weather: {...}`). A trainer would learn to print calls
  instead of making them.
- A tool result that repeats the tool simulator's own instructions: it shares a run of `ECHO_N`
  words with the literal text of the simulator's prompt templates (tools/prompts/simulator*.md;
  runs that cross a `$placeholder` do not count, nor runs the offered tools' own descriptions
  contain; a literal piece of 4-5 words between placeholders counts whole: "the tool was called
  with"). The quickstart kept rows whose "results" were the prompt's words ("a short JSON-like
  text with concrete values, consistent with the state").
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from pathlib import Path
from typing import Any, Iterable

from synth.core.text import word_runs, words

ECHO_N = 6  # words in a run shared with the simulator's prompt; 6 common words in a row are rare by chance
SHORT_RUN = 4  # a literal piece of the prompt this long, between placeholders, counts whole

_CALL_AS_TEXT = [re.compile(p, re.IGNORECASE) for p in (
    r"\bfunctions\.[A-Za-z_][\w.-]*\s*[:({]",
    r"</?tool_call>|<\|tool_call\|>|<function=|<\|python_tag\|>|\[TOOL_CALLS\]",
    r'\{\s*"(?:name|function|tool)"\s*:\s*"[^"]+"\s*,\s*"(?:arguments|parameters|args)"\s*:',
    r'\{\s*"(?:arguments|parameters|args)"\s*:\s*\{.*?\}\s*,\s*"(?:name|function|tool)"\s*:',
)]


def calls_in_text(text: str, tool_names: Iterable[str] = ()) -> list[str]:
    """The pieces of an assistant's text that are tool calls written out instead of made."""
    found = [m.group(0) for pattern in _CALL_AS_TEXT if (m := pattern.search(text))]
    for name in tool_names:
        if name and (m := re.search(rf"(?<![\w.]){re.escape(name)}\s*(?:\(\s*|:\s*|\s)\{{", text)):
            found.append(m.group(0))
    return found


def shingles(text: str, n: int = ECHO_N) -> set[tuple[str, ...]]:
    return word_runs(text, n)


@functools.cache
def simulator_prompt_shingles(n: int = ECHO_N) -> frozenset[tuple[str, ...]]:
    """The shingles (template_shingles) of the simulator's prompt templates."""
    spec = importlib.util.find_spec("tools.simulator")  # where its prompts are, without importing it
    prompts = Path(spec.origin).parent / "prompts"  # type: ignore[union-attr, arg-type]
    return template_shingles([p.read_text(encoding="utf-8") for p in sorted(prompts.glob("simulator*.md"))], n)


def template_shingles(templates: list[str], n: int = ECHO_N) -> frozenset[tuple[str, ...]]:
    """Runs of n words of the templates' literal text (between placeholders), and each literal piece
    of SHORT_RUN..n-1 words whole ("The tool was called with: $arguments" holds no run of n)."""
    out: set[tuple[str, ...]] = set()
    for template in templates:
        for literal in re.split(r"\$\{?\w+\}?", template):
            piece = tuple(words(literal))
            out |= shingles(literal, n) if len(piece) >= n else {piece} if len(piece) >= SHORT_RUN else set()
    return frozenset(out)


def echoed(text: str, prompt: frozenset[tuple[str, ...]], exempt: set[tuple[str, ...]] = frozenset(),
           n: int = ECHO_N) -> list[str]:
    """The runs of `text` that are the prompt's words (those also in `exempt` do not count)."""
    found = shingles(text, n) & prompt - exempt
    short = [run for run in prompt if len(run) < n]
    if short:
        joined, shielded = f" {' '.join(words(text))} ", {" ".join(e) for e in exempt}
        found |= {run for run in short if f" {' '.join(run)} " in joined
                  and not any(" ".join(run) in e for e in shielded)}
    return [" ".join(s) for s in sorted(found)]


def prompt_echoes(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[str]:
    """Tool results of a trajectory that repeat the simulator's instructions, one line each."""
    prompt = simulator_prompt_shingles()
    exempt = shingles(json.dumps([t.get("function", t) for t in tools]))
    found = []
    for message in messages:
        if message["role"] == "tool" and (runs := echoed(str(message.get("content") or ""), prompt, exempt)):
            found.append(f"{message.get('tool_call_id', '?')}: \"{runs[0]}\"")
    return found
