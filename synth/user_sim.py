"""The LLM user simulator: a persona with a hidden goal and facts, driving the agent turn by turn."""

from __future__ import annotations

from typing import Any

from synth.llm import LLM
from synth.prompts import render
from synth.records import Task

STOP = "###STOP###"


class UserSimulator:
    def __init__(self, llm: LLM, task: Task, *, seed: int):
        self.llm = llm
        self.task = task
        self.seed = seed
        self.system = render(__file__, "user_sim", persona=task.persona, goal=task.goal, stop=STOP,
                             facts="\n".join(f"- {fact}" for fact in task.user_facts) or "- (none)")

    async def opening(self) -> str:
        """The first user message: the goal in the persona's words."""
        text, _ = await self.reply([])
        return text or self.task.goal

    async def reply(self, conversation: list[dict[str, Any]]) -> tuple[str, bool]:
        """The user's next message and whether it ends the conversation."""
        reply = await self.llm.chat(self._view(conversation), seed=self.seed + len(conversation))
        text = (reply.message.get("content") or "").strip()
        stopped = STOP in text
        return text.replace(STOP, "").strip(), stopped

    def _view(self, conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
