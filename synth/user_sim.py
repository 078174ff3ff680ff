"""The LLM user simulator: a persona with a hidden goal and facts, driving the agent turn by turn.

tau2-bench found the user simulator behind up to 30% of failures, so ours checks itself with the
deterministic rules of judges/user_checks.py and records their flags on the trajectory
(`Trajectory.user_flags`: user_broke_role, user_invented_fact, fact_leaked_unasked,
premature_stop, empty_user_message); the manifest counts them (`user_flag_counts`), a measure of
simulator error. The judge runs the same rules again over the messages (judges/checks.py `USER`),
where a failed one drops the trajectory (`judge.drop_user_flags`).

It sees the conversation from the user's side only: roles swapped, tool traffic hidden, and only
what the agent said (`content`), never its reasoning.

The opening is asked for with a cue that restates the goal, not with the agent's greeting: SmolLM2-135M
broke role in 32 of 40 openings after the greeting, 16 after the cue and 13 with the retry below
(`python -m bench.user_sim`: 8 quickstart tasks x 5 seeds).
A message that speaks as the assistant (small models echo the agent's "How can I help you today?")
is asked again once, with the phrase it broke role on named in the instructions; the retry is
recorded (`user_role_retried`, not a drop reason), and a retry that breaks role again keeps its
`user_broke_role` flag, so the judge drops it. Role breaks are thus measured, never hidden.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from judges.user_checks import (BROKE_ROLE, EMPTY_MESSAGE, FACT_LEAKED, INVENTED_FACT, PREMATURE_STOP,
                                asked_about, content_words, fact_value, invented_values, is_write_tool,
                                leaked_facts, needs_tools as needs_tools_of, role_breaks)
from synth.core.llm import LLM, ChatResult
from synth.core.prompts import render
from synth.core.records import Task, ToolCallTrace, ToolSpec, Trajectory

STOP = "###STOP###"
ROLE_RETRIED = "user_role_retried"  # a role break asked again once (simulator error, repaired)
RETRY_SEED = 7919  # the retry's seed offset: another sample, not the cached one
__all__ = ["STOP", "ROLE_RETRIED", "BROKE_ROLE", "EMPTY_MESSAGE", "FACT_LEAKED", "INVENTED_FACT", "PREMATURE_STOP", "UserSimulator",
           "asked_about", "content_words", "count_usage", "fact_value", "is_write_tool", "leaked_facts",
           "needs_tools", "premature_stop", "user_flag_counts"]


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
        view = self.view(conversation)
        text, stopped = await self._ask(view, seed=self.seed + len(conversation))
        broke = role_breaks(text)
        if broke:
            self._flag(ROLE_RETRIED)
            view[0] = {"role": "system", "content": self.system + "\n\n" + render(
                __file__, "user_sim_retry", draft=text[:300], phrase=broke[0])}
            text, stopped = await self._ask(view, seed=self.seed + len(conversation) + RETRY_SEED)
        self._check(conversation, text, stopped)
        return text, stopped

    async def _ask(self, view: list[dict[str, Any]], *, seed: int) -> tuple[str, bool]:
        result = await self.llm.chat(view, seed=seed)
        count_usage(self.usage, result, "user_calls")
        raw = (result.message.get("content") or "").strip()
        return raw.replace(STOP, "").strip(), STOP in raw

    def view(self, conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The conversation from the user's side: roles swapped, tool traffic hidden."""
        view = [{"role": "system", "content": self.system}]
        for message in conversation:
            if message["role"] == "user":
                view.append({"role": "assistant", "content": message["content"]})
            elif message["role"] == "assistant" and message.get("content"):
                view.append({"role": "user", "content": message["content"]})
        if len(view) == 1:  # the opening: a cue, not a greeting (small models echo "how can I help you today?")
            view.append({"role": "user", "content": render(__file__, "user_sim_opening", goal=self.task.goal)})
        return view

    def _check(self, conversation: list[dict[str, Any]], text: str, stopped: bool) -> None:
        if not text and not stopped:
            self._flag(EMPTY_MESSAGE)
        said = [m["content"] for m in conversation if m["role"] == "user"]
        agent_said = [m["content"] for m in conversation if m["role"] == "assistant" and m.get("content")]
        agent = agent_said[-1] if agent_said else ""
        if leaked_facts(self.task.user_facts, agent, text, known=" ".join([self.task.goal, *said])):
            self._flag(FACT_LEAKED)
        if role_breaks(text):
            self._flag(BROKE_ROLE)
        known = "\n".join([*self.task.user_facts, self.task.goal, self.task.persona, *agent_said, *said])
        if invented_values(text, known):
            self._flag(INVENTED_FACT)

    def _flag(self, flag: str) -> None:
        if flag not in self.flags:
            self.flags.append(flag)


def count_usage(usage: Counter[str], result: ChatResult, calls_key: str) -> None:
    """Add one chat call's tokens to an episode's usage tally (cache hits keep their recorded tokens)."""
    usage[calls_key] += 1
    usage["prompt_tokens"] += result.prompt_tokens
    usage["completion_tokens"] += result.completion_tokens
    usage["cached_calls"] += int(result.cached)


def needs_tools(task: Task, specs: list[ToolSpec]) -> bool:
    return needs_tools_of(task, [(s.name, is_write_tool(s)) for s in specs])


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
    # The three flags of the first version are always listed (0 included), later ones when they occur,
    # so the manifests of runs made before them stay as they were.
    always = (FACT_LEAKED, PREMATURE_STOP, EMPTY_MESSAGE)
    return {"trajectories": total, **{flag: counts[flag] for flag in always},
            **{flag: n for flag, n in sorted(counts.items()) if flag not in always}}
