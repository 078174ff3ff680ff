"""One episode: the user simulator drives the agent, whose tool calls run in a sandbox.

The rollout stage runs one per unit (synth/stages/rollout.py); anything else that needs an
episode (an RL environment, a replay) calls `run_episode` with an LLM and the rollout config,
without the stage machinery.

An episode is all or nothing: it returns one Trajectory, or raises (recorded as an error by the
caller, redone whole on resume). Several tool calls in one agent message run concurrently (their
results keep the message's order); each call has its own time limit (`rollout.tool_timeout_s`),
and a call that runs out is an error result the agent sees, not a failed episode.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from sandboxes import provision
from synth.config import RolloutConfig
from synth.core.llm import LLM, ChatResult
from synth.core.records import TRUNCATED, Agent, Implementation, Task, ToolCallTrace, ToolSpec, Trajectory
from synth.user_sim import PREMATURE_STOP, UserSimulator, count_usage, premature_stop
from tools.runtime import ToolRuntime, call_tool
from tools.serving import tool_runtime

if TYPE_CHECKING:
    from sandboxes.pool import WarmPool
    from tools.serving import RealPart

# Always present in Trajectory.usage. Tool-simulator calls go through LLM.structured, which does not
# return token counts: they are in the stage's usage in manifest.json, not here.
USAGE_KEYS = ("agent_calls", "user_calls", "cached_calls", "prompt_tokens", "completion_tokens")


async def run_episode(llm: LLM, cfg: RolloutConfig, task: Task, agent: Agent, specs: list[ToolSpec], *, seed: int,
                      labels: dict[str, str], unit_id: str = "", sample: int = 0,
                      impl: Implementation | None = None, pool: WarmPool | None = None,
                      real: list[RealPart] | None = None) -> Trajectory:
    """The episode of `task` for `agent` over `specs`, in a sandbox of cfg.sandbox (borrowed from `pool`
    when given) with `impl` served for real (else the tool simulator) and the tools of `real` parts
    on their MCP servers; `seed` seeds every request."""
    usage: Counter[str] = Counter({key: 0 for key in USAGE_KEYS})
    started = time.monotonic()
    async with asyncio.timeout(cfg.episode_timeout_s):
        async with (provision(cfg.sandbox, labels=labels, pool=pool) as sandbox,
                    tool_runtime(specs, sandbox, impl=impl, llm=llm.role("tool_simulator"), seed=seed,
                                 fault_rate=cfg.fault_rate, process=cfg.tool_process,
                                 max_result_chars=cfg.tool_result_max_chars, real=real) as runtime):
            await runtime.reset(task.initial_state)
            agent_side = AgentSide(llm.role("agent"), cfg, agent, specs, runtime, seed, usage)
            user = UserSimulator(llm.role("user"), task, seed=seed, usage=usage)
            agent_side.messages.append({"role": "user", "content": await user.opening()})
            stopped, turns = False, 0
            while turns < cfg.max_turns:
                turns += 1
                await agent_side.turn(turns)
                text, stopped = await user.reply(agent_side.messages[1:])
                if stopped and text:
                    # The closing turn (thanks, or a complaint) is data the filter reads; nothing answers it.
                    agent_side.messages.append({"role": "user", "content": text})
                if stopped or turns == cfg.max_turns:
                    break  # cut off by max_turns: the user's unanswered next request is not kept
                agent_side.messages.append({"role": "user", "content": text})
            final_state = await runtime.finish()
    flags = list(user.flags)
    if premature_stop(task, specs, agent_side.traces, stopped):
        flags.append(PREMATURE_STOP)
    return Trajectory(
        unit=unit_id, task_id=task.id, agent_id=agent.id, sample=sample, seed=seed, messages=agent_side.messages,
        tools=[s.to_openai() for s in specs], tool_calls=agent_side.traces, final_state=final_state,
        user_stopped=stopped, turns=turns, duration_s=round(time.monotonic() - started, 3),
        user_flags=flags, usage=dict(usage),
    )


class AgentSide:
    """The agent side of one episode: messages so far and the trace of tool calls."""

    def __init__(self, llm: LLM, cfg: RolloutConfig, agent: Agent, specs: list[ToolSpec], runtime: ToolRuntime,
                 seed: int, usage: Counter[str]):
        self.llm, self.cfg, self.runtime, self.seed, self.usage = llm, cfg, runtime, seed, usage
        self.tools = [s.to_openai() for s in specs]
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": agent.system_prompt}]
        self.traces: list[ToolCallTrace] = []

    async def turn(self, turn: int) -> None:
        """Agent steps until it answers in text; after max_tool_steps it must answer without tools."""
        for step in range(self.cfg.max_tool_steps + 1):
            offer = self.tools if step < self.cfg.max_tool_steps else None
            message = await self._agent_step(offer)
            self.messages.append(message)
            if not message.get("tool_calls"):
                return
            # All calls of one message run at once; every one completes (or times out) before the
            # first failure is raised, so no call outlives the episode's sandbox.
            results = await asyncio.gather(*(self._run_tool(c, turn) for c in message["tool_calls"]),
                                           return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            for tool_message, trace in results:  # type: ignore[misc]
                self.messages.append(tool_message)
                self.traces.append(trace)

    async def _agent_step(self, offer: list[dict[str, Any]] | None) -> dict[str, Any]:
        """One agent reply. An empty one (no text, no call: small models do this when offered tools)
        is asked again once without tools, so the conversation gets an answer it can go on from."""
        for tools in (offer, None) if offer else (None,):
            reply = await self._reply(tools)
            message = self._assistant_message(reply.message)
            if reply.finish_reason == "length":
                message[TRUNCATED] = True  # never kept silently: the check agent_turns_complete drops it
            if message["content"].strip() or message.get("tool_calls"):
                break
        return message

    async def _reply(self, tools: list[dict[str, Any]] | None) -> ChatResult:
        """The agent model's reply; one cut at max_tokens (finish_reason "length": a reasoning model
        that thought too long, a call cut mid-arguments) is asked again once with twice the room."""
        seed = self.seed + len(self.messages)
        reply = await self.llm.chat(self.messages, tools=tools, seed=seed)
        count_usage(self.usage, reply, "agent_calls")
        if reply.finish_reason == "length":
            reply = await self.llm.chat(self.messages, tools=tools, seed=seed, max_tokens=2 * self.llm.cfg.max_tokens)
            count_usage(self.usage, reply, "agent_calls")
        return reply

    def _assistant_message(self, raw: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": raw.get("content") or ""}
        # Reasoning models return their thinking beside the content (vLLM/SGLang: reasoning_content;
        # some servers: reasoning); it is training data, and chat templates such as Qwen3's render it.
        reasoning = raw.get("reasoning_content") or raw.get("reasoning")
        if isinstance(reasoning, str) and reasoning.strip():
            message["reasoning_content"] = reasoning
        calls = []
        for call in raw.get("tool_calls") or []:
            function = call.get("function") or {}
            arguments = function.get("arguments")
            calls.append({
                "id": f"call_{len(self.traces) + len(calls)}",  # unique per trajectory; servers' ids may repeat
                "type": "function",
                "function": {"name": function.get("name", ""),
                             "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments or {})},
            })
        if calls:
            message["tool_calls"] = calls
        return message

    async def _run_tool(self, call: dict[str, Any], turn: int) -> tuple[dict[str, Any], ToolCallTrace]:
        name, raw_args = call["function"]["name"], call["function"]["arguments"]
        started = time.monotonic()
        outcome = await call_tool(self.runtime, name, raw_args, self.cfg.tool_timeout_s,
                                  self.cfg.tool_result_max_chars)
        trace = ToolCallTrace(call_id=call["id"], name=name, arguments=raw_args, result=outcome.text,
                              is_error=outcome.is_error, fault=outcome.fault, truncated=outcome.truncated,
                              runtime=outcome.runtime,
                              latency_s=round(time.monotonic() - started, 4), turn=turn)
        return {"role": "tool", "tool_call_id": call["id"], "name": name, "content": outcome.text}, trace
