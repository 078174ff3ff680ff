"""The LLM user simulator: a persona with a hidden goal and facts, driving the agent turn by turn.

tau2-bench found the user simulator behind up to 30% of failures, so ours checks itself with
cheap deterministic rules and records flags on the trajectory (`Trajectory.user_flags`); the
manifest counts them (`user_flag_counts`). A flag measures simulator error; it is not a drop rule.

- `fact_leaked_unasked`: a user message contains a hidden fact's distinctive value (see
  `fact_value`) that the agent's preceding message did not ask about: that message has no '?', or
  shares no content word with the fact. Values already in the goal or said before do not count.
- `premature_stop`: the user ended the conversation before any tool call succeeded, although the
  task needs tools (its rubric names a tool, or the toolset has a write tool; see `needs_tools`).
- `empty_user_message`: the simulator said nothing (and did not stop).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterable

from synth.core.llm import LLM, ChatResult
from synth.core.prompts import render
from synth.core.records import Task, ToolCallTrace, ToolSpec, Trajectory

STOP = "###STOP###"
FACT_LEAKED = "fact_leaked_unasked"
PREMATURE_STOP = "premature_stop"
EMPTY_MESSAGE = "empty_user_message"

_STOPWORDS = frozenset(
    "the and for you your yours are was were with that this have has had what which when where who whom "
    "how can could would should will shall may might must our ours their there then than them they its "
    "it's from into onto about please just also any all some one not but can't don't i'm i've is be".split()
)
# First word of a tool name that changes state, for tools without an MCP readOnlyHint annotation.
_WRITE_VERBS = frozenset(
    "add assign book cancel change close create delete edit insert issue make modify move open order pay "
    "place post put refund remove rename reschedule reserve reset schedule send set submit transfer update "
    "upload upsert write".split()
)


class UserSimulator:
    def __init__(self, llm: LLM, task: Task, *, seed: int, usage: Counter[str] | None = None):
        self.llm = llm
        self.task = task
        self.seed = seed
        self.usage = usage if usage is not None else Counter()
        self.flags: list[str] = []
        self.system = render(__file__, "user_sim", persona=task.persona, goal=task.goal, stop=STOP,
                             facts="\n".join(f"- {fact}" for fact in task.user_facts) or "- (none)")

    async def opening(self) -> str:
        """The first user message: the goal in the persona's words."""
        text, _ = await self.reply([])
        return text or self.task.goal

    async def reply(self, conversation: list[dict[str, Any]]) -> tuple[str, bool]:
        """The user's next message and whether it ends the conversation (the marker is removed)."""
        result = await self.llm.chat(self.view(conversation), seed=self.seed + len(conversation))
        count_usage(self.usage, result, "user_calls")
        raw = (result.message.get("content") or "").strip()
        stopped = STOP in raw
        text = raw.replace(STOP, "").strip()
        self._check(conversation, text, stopped)
        return text, stopped

    def view(self, conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The conversation from the user's side: roles swapped, tool traffic hidden."""
        view = [{"role": "system", "content": self.system}]
        for message in conversation:
            if message["role"] == "user":
                view.append({"role": "assistant", "content": message["content"]})
            elif message["role"] == "assistant" and message.get("content"):
                view.append({"role": "user", "content": message["content"]})
        if len(view) == 1:
            view.append({"role": "user", "content": "Hello, how can I help you today?"})
        return view

    def _check(self, conversation: list[dict[str, Any]], text: str, stopped: bool) -> None:
        if not text and not stopped:
            self._flag(EMPTY_MESSAGE)
        said = [m["content"] for m in conversation if m["role"] == "user"]
        agent = next((m["content"] for m in reversed(conversation) if m["role"] == "assistant" and m.get("content")), "")
        if leaked_facts(self.task.user_facts, agent, text, known=" ".join([self.task.goal, *said])):
            self._flag(FACT_LEAKED)

    def _flag(self, flag: str) -> None:
        if flag not in self.flags:
            self.flags.append(flag)


def count_usage(usage: Counter[str], result: ChatResult, calls_key: str) -> None:
    """Add one chat call's tokens to an episode's usage tally (cache hits keep their recorded tokens)."""
    usage[calls_key] += 1
    usage["prompt_tokens"] += result.prompt_tokens
    usage["completion_tokens"] += result.completion_tokens
    usage["cached_calls"] += int(result.cached)


def fact_value(fact: str) -> str:
    """The distinctive part of a fact: after its first ':' ("Order id: A-17"), else after its last
    ' is '/' are ' ("My name is Ann Lee"), else the whole fact; outer punctuation stripped."""
    if ":" in fact:
        value = fact.split(":", 1)[1]
    else:
        parts = re.split(r"\s(?:is|are|was|=)\s", fact)
        value = parts[-1]
    return value.strip().strip(".,;!?\"'`()[] ")


def content_words(text: str) -> set[str]:
    """Lowercase words of 3+ letters minus stopwords, with a plural 's' dropped (crude, on purpose)."""
    words = re.findall(r"[a-z0-9][a-z0-9'@.-]*[a-z0-9]|[a-z0-9]", text.lower())
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words if len(w) >= 3 and w not in _STOPWORDS}


def asked_about(agent_message: str, fact: str) -> bool:
    return "?" in agent_message and bool(content_words(agent_message) & content_words(fact))


def leaked_facts(facts: Iterable[str], agent_message: str, user_message: str, *, known: str = "") -> list[str]:
    """Hidden facts whose value `user_message` gives although `agent_message` did not ask for them."""
    said, known = user_message.lower(), known.lower()
    leaked = []
    for fact in facts:
        value = fact_value(fact).lower()
        if len(value) < 3 or value not in said or value in known:
            continue
        if not asked_about(agent_message, fact):
            leaked.append(fact)
    return leaked


def is_write_tool(spec: ToolSpec) -> bool:
    """MCP's readOnlyHint when the spec has it, else whether the name starts with a write verb."""
    hint = (spec.annotations or {}).get("readOnlyHint")
    if isinstance(hint, bool):
        return not hint
    first = re.split(r"[_\-\s]|(?<=[a-z0-9])(?=[A-Z])", spec.name, maxsplit=1)[0].lower()
    return first in _WRITE_VERBS


def needs_tools(task: Task, specs: list[ToolSpec]) -> bool:
    rubric = " ".join(c.text for c in task.rubric).lower()
    return any(s.name.lower() in rubric for s in specs) or any(is_write_tool(s) for s in specs)


def premature_stop(task: Task, specs: list[ToolSpec], traces: list[ToolCallTrace], stopped: bool) -> bool:
    """The user ended the episode before any tool call succeeded, on a task that needs tools."""
    return stopped and not any(not t.is_error for t in traces) and needs_tools(task, specs)


def user_flag_counts(trajectories: Iterable[Trajectory]) -> dict[str, int]:
    """For the manifest: trajectories in all, and how many carry each user-simulator flag."""
    counts: Counter[str] = Counter()
    total = 0
    for trajectory in trajectories:
        total += 1
        counts.update(set(trajectory.user_flags))
    return {"trajectories": total, **{flag: counts[flag] for flag in (FACT_LEAKED, PREMATURE_STOP, EMPTY_MESSAGE)},
            **{flag: n for flag, n in sorted(counts.items()) if flag not in (FACT_LEAKED, PREMATURE_STOP, EMPTY_MESSAGE)}}
