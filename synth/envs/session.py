"""One RL episode outside the pipeline: an exported RL row's environment, provisioned and scored.

`EpisodeSession.start(row)` provisions the sandbox named by the row's `env_spec` (or the one the
caller gives), starts its tool runtime (real MCP servers in the sandbox for their tools, the
executable module served over MCP in the sandbox, or the LLM tool simulator) on the task's
initial state (a real server's seed), and asks the user simulator for its opening.
`call` runs one tool call; `user_reply` is the user simulator's next turn; `reward` is
judges/reward.py over what the episode did: the one definition the judge stage filters with.
"""

from __future__ import annotations

import json
import os
from contextlib import AsyncExitStack
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from judges.judge import judge
from judges.checks import Subject
from judges.config import JudgeConfig
from judges.reward import Reward, episode_reward
from sandboxes import SandboxConfig, provision, sandbox_config
from synth.core.errors import ConfigError
from synth.core.hashing import content_hash
from synth.core.llm import LLM, LLMConfig
from synth.core.records import (Criterion, GoldAction, Implementation, StateAssertion, Task, ToolCallTrace, ToolSpec,
                                Trajectory)
from synth.user_sim import UserSimulator
from tools.launch import ServerLaunch, with_binds
from tools.runtime import ToolRuntime, call_tool
from tools.serving import RealPart, tool_runtime


class EnvironmentOptions(BaseModel):
    """How synth's RL environments run. Defaults: the row's own sandbox config, no judge."""

    model_config = ConfigDict(extra="forbid")

    llm: LLMConfig | None = Field(
        None, description="Endpoint of the user simulator (and of the tool simulator and judge when used; "
        "`roles` give each its own model or endpoint, as in the run config). "
        "None: env OPENAI_BASE_URL if set; else the user's opening is the task goal itself, and only "
        "executable toolsets (which need no LLM) can run.")
    sandbox: SandboxConfig | None = Field(None, description="Overrides the row's env_spec.sandbox (e.g. local on a trainer host).")
    judge: bool = Field(False, description="Add the rubric judge to the reward, as the judge stage scores.")
    judge_config: JudgeConfig = Field(default_factory=JudgeConfig)
    seed: int = 0


def task_from_row(row: dict[str, Any]) -> Task:
    """The task an RL row was exported from, as far as the reward needs it."""
    spec, user = row["env_spec"], row["user"]
    return Task(id=row["task_id"], agent_id="", goal=user["goal"], persona=user["persona"], user_facts=user["facts"],
                difficulty=row.get("difficulty") or "easy", initial_state=row.get("initial_state") or {},
                rubric=[Criterion.model_validate(c) for c in row["rubric"]],
                gold_actions=[GoldAction.model_validate(a) for a in spec.get("gold_actions") or []],
                assertions=[StateAssertion.model_validate(a) for a in spec.get("assertions") or []],
                gold_final_state=spec.get("gold_final_state") or {}, free_paths=spec.get("free_paths") or [])


def check_rewardable(rows: list[dict[str, Any]], options: EnvironmentOptions) -> None:
    """Refuse rows whose reward could not tell a good episode from a bad one: without the judge only
    verifiable checks score, and a task without final-state assertions passes them by doing nothing."""
    if options.judge:
        return
    blind = [r["task_id"] for r in rows if not (r["env_spec"].get("assertions"))]
    if blind:
        raise ConfigError(f"{len(blind)} of {len(rows)} RL rows have no final-state assertions (e.g. task {blind[0]}): "
                          "without the judge their reward is 1 whatever the policy does. Pass "
                          "EnvironmentOptions(judge=True, llm=...), or keep the rows with env_spec.assertions")


def specs_from_row(row: dict[str, Any]) -> list[ToolSpec]:
    return [ToolSpec.model_validate({**t["spec"], "kind": t["kind"]}) for t in row["env_spec"]["toolsets"]]


def real_parts_of(row: dict[str, Any], specs: list[ToolSpec]) -> list[RealPart]:
    """The row's real MCP servers (env_spec.servers) with the tools each serves."""
    by_name = {s.name: s for s in specs}
    return [RealPart(key=s["key"], launch=ServerLaunch.model_validate(s["launch"]),
                     specs=[by_name[n] for n in s["tools"] if n in by_name])
            for s in row["env_spec"].get("servers") or []]


class EpisodeSession:
    """One episode's sandbox, tool runtime and user simulator, and the record of what happened."""

    def __init__(self, options: EnvironmentOptions, episode: int = 0):
        self.options, self.episode = options, episode
        self.row: dict[str, Any] = {}
        self.task: Task | None = None
        self.messages: list[dict[str, Any]] = []
        self.traces: list[ToolCallTrace] = []
        self.final_state: dict[str, Any] | None = None
        self.user: UserSimulator | None = None
        self.llm: LLM | None = None
        self._runtime: ToolRuntime | None = None
        self._stack: AsyncExitStack | None = None

    async def start(self, row: dict[str, Any]) -> str:
        """Provision the row's environment; the user's opening message."""
        await self.close()
        self.row, self.task = row, task_from_row(row)
        spec = row["env_spec"]
        seed = int(content_hash([self.options.seed, row["task_id"], self.episode], 8), 16)
        sandbox_cfg = self.options.sandbox or sandbox_config(spec["sandbox"])
        # A local sandbox must see the real servers' installs (bound read-only), as in rollouts.
        sandbox_cfg = with_binds(sandbox_cfg, [ServerLaunch.model_validate(s["launch"]) for s in spec.get("servers") or []])
        self._stack = stack = AsyncExitStack()
        try:
            self.llm = self._llm()
            if self.llm is not None:
                stack.push_async_callback(self.llm.aclose)
            sandbox = await stack.enter_async_context(provision(sandbox_cfg, labels={"synth.env": row["task_id"]}))
            specs = specs_from_row(row)
            real = real_parts_of(row, specs)
            served = {t.name for part in real for t in part.specs}
            if not spec.get("module") and self.llm is None and any(s.name not in served for s in specs):
                raise ConfigError(f"task {row['task_id']} runs on the LLM tool simulator ({spec.get('runtime')}): give "
                                  "EnvironmentOptions(llm=...) or set OPENAI_BASE_URL")
            # The rollout's own runtime choice: real servers for their tools, the row's module on the sandbox's
            # tool host for the others, else the simulator.
            impl = Implementation(toolset_id="", toolset="", tool_ids=[], module=spec["module"], passed=True) \
                if spec.get("module") else None
            self._runtime = await stack.enter_async_context(
                tool_runtime(specs, sandbox, impl=impl, llm=self.llm and self.llm.role("tool_simulator"), seed=seed,
                             real=real))
            await self._runtime.reset(self.task.initial_state)
            system = next((m["content"] for m in row["prompt"] if m["role"] == "system"), "")
            if self.llm is not None:
                self.user = UserSimulator(self.llm.role("user"), self.task, seed=seed)
                opening = await self.user.opening()
            else:
                opening = self.task.goal
        except BaseException:
            await self.close()
            raise
        self.messages = [{"role": "system", "content": system}, {"role": "user", "content": opening}]
        self.traces, self.final_state, self.user_stopped = [], None, False
        return opening

    def _llm(self) -> LLM | None:
        if self.options.llm is None and not os.environ.get("OPENAI_BASE_URL"):
            return None
        return LLM(self.options.llm or LLMConfig())

    async def call(self, name: str, arguments: dict[str, Any] | str, call_id: str | None = None) -> str:
        """Run one tool call (arguments as an object, or the JSON text the model wrote); the text the
        agent sees: bad JSON, a timeout or a tool error is an error text, as in rollouts."""
        if self._runtime is None or self.final_state is not None:
            raise RuntimeError("EpisodeSession.call before start() or after finish()")
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
        limit = (self.row["env_spec"].get("rollout") or {}).get("tool_timeout_s", 60)
        outcome = await call_tool(self._runtime, name, raw, limit)
        call_id = call_id or f"call_{len(self.traces)}"
        self.traces.append(ToolCallTrace(call_id=call_id, name=name, arguments=raw, result=outcome.text,
                                         is_error=outcome.is_error, fault=outcome.fault))
        return outcome.text

    async def user_reply(self, conversation: list[dict[str, Any]]) -> tuple[str, bool]:
        """The user simulator's next message and whether it ends the conversation. Without an LLM the
        user has nothing to add: the conversation ends."""
        if self.user is None:
            self.user_stopped = True
            return "", True
        text, stopped = await self.user.reply(conversation[1:])
        self.user_stopped = stopped  # its closing message may then follow the last answer
        return text, stopped

    async def finish(self) -> dict[str, Any]:
        if self.final_state is None:
            if self._runtime is None:
                raise RuntimeError("EpisodeSession.finish before start()")
            self.final_state = await self._runtime.finish()
        return self.final_state

    def trajectory(self, messages: list[dict[str, Any]] | None = None) -> Trajectory:
        """The episode as a Trajectory: the given conversation, else one rebuilt from the tool calls
        (what TRL's environment sees: calls and results, not the assistant's text)."""
        if messages is None:
            messages = list(self.messages)
            for trace in self.traces:
                messages.append({"role": "assistant", "content": "", "tool_calls": [
                    {"id": trace.call_id, "type": "function", "function": {"name": trace.name, "arguments": trace.arguments}}]})
                messages.append({"role": "tool", "tool_call_id": trace.call_id, "name": trace.name, "content": trace.result})
        return Trajectory(task_id=self.row["task_id"], agent_id="", messages=messages, tools=list(self.row["tools"]),
                          tool_calls=list(self.traces), final_state=self.final_state or {},
                          user_stopped=self.user_stopped)

    async def reward(self, messages: list[dict[str, Any]] | None = None) -> Reward:
        """judges/reward.py on this episode. Without `messages` (TRL), checks of the assistant's text
        do not apply: the environment never sees it."""
        await self.finish()
        assert self.task is not None
        trajectory = self.trajectory(messages)
        subject = Subject(trajectory, self.task, frozenset(self.row["env_spec"].get("distractor_tools") or []))
        outcome = None
        if self.options.judge:
            if self.llm is None:
                raise ConfigError("the rubric judge needs an LLM: give EnvironmentOptions(llm=...) or set OPENAI_BASE_URL")
            outcome = await judge(self.llm.role("judge"), self.options.judge_config, self.task, trajectory,
                                  seed=int(content_hash(["judge", trajectory.id], 8), 16))
        return episode_reward(self.options.judge_config, subject, outcome, sees_text=messages is not None)

    async def close(self) -> None:
        """End the tool runtime and stop the sandbox (idempotent)."""
        stack, self._stack, self._runtime = self._stack, None, None
        if stack is not None:
            await stack.aclose()
