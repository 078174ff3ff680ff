"""A verifiers environment over exported RL rows (verifiers' classic multi-turn API).

`load_environment(path)` reads export/rl and returns a `MultiTurnEnv` whose setup provisions the
row's sandbox and tool runtime (`EpisodeSession`) and puts the user simulator's opening in the
prompt; whose environment turn answers the agent's tool calls from the sandbox, or, when the agent
answered in text, lets the user simulator reply (its stop marker ends the episode, as in rollouts);
and whose rubric is judges/reward.py over the whole conversation: the one reward definition.
"""

from __future__ import annotations

import json
from typing import Any

import verifiers as vf
from datasets import Dataset, load_from_disk

from synth.envs.session import EnvironmentOptions, EpisodeSession, check_rewardable
from synth.core.errors import ConfigError

SESSION = "synth_session"  # state key of the episode's session


def as_dict(message: Any) -> dict[str, Any]:
    """A verifiers message (pydantic) as the OpenAI-style dict the rest of synth reads."""
    data = message.model_dump(exclude_none=True) if hasattr(message, "model_dump") else dict(message)
    out: dict[str, Any] = {"role": data["role"], "content": data.get("content") or ""}
    if data.get("tool_calls"):
        out["tool_calls"] = [{"id": c["id"], "type": "function",
                              "function": {"name": c["name"], "arguments": c.get("arguments") or "{}"}}
                             for c in data["tool_calls"]]
    if data.get("tool_call_id"):
        out["tool_call_id"] = data["tool_call_id"]
    return out


class SynthToolEnv(vf.MultiTurnEnv):
    def __init__(self, rows: list[dict[str, Any]], options: EnvironmentOptions | None = None, **kwargs: Any):
        if not rows:
            raise ConfigError("no RL rows: export a run with tasks first (synth export)")
        self.options = options or EnvironmentOptions()
        check_rewardable(rows, self.options)
        self.max_tool_steps = {r["task_id"]: r["env_spec"].get("rollout", {}).get("max_tool_steps", 4) for r in rows}
        dataset = Dataset.from_dict({
            "prompt": [r["prompt"] for r in rows], "answer": ["" for _ in rows],
            "info": [json.dumps(r) for r in rows]})
        turns = max(r["env_spec"].get("rollout", {}).get("max_turns", 3) for r in rows)
        steps = max(self.max_tool_steps.values())
        kwargs.setdefault("max_turns", turns * (steps + 1))
        super().__init__(dataset=dataset, rubric=vf.Rubric(funcs=[self.synth_reward]), **kwargs)

    async def setup_state(self, state: vf.State) -> vf.State:
        row = state["info"]
        session = EpisodeSession(self.options)
        state[SESSION] = session
        opening = await session.start(row)
        prompt = [as_dict(m) for m in state["prompt"]]
        prompt[-1] = {**prompt[-1], "content": prompt[-1]["content"] + opening}
        state["prompt"] = _normalize(prompt)
        state["offered_tools"] = self._normalize_tool_defs([t["function"] for t in row["tools"]]) or []
        state["tool_defs"], state["tool_steps"] = state["offered_tools"], 0
        return state

    async def env_response(self, messages: vf.Messages, state: vf.State, **kwargs: Any) -> vf.Messages:
        session: EpisodeSession = state[SESSION]
        last = as_dict(messages[-1])
        if last.get("tool_calls"):
            # As in rollouts: after max_tool_steps tool rounds in one user turn, the agent must answer in text.
            state["tool_steps"] += 1
            if state["tool_steps"] >= self.max_tool_steps[state["info"]["task_id"]]:
                state["tool_defs"] = []
            replies = []
            for call in last["tool_calls"]:
                text = await session.call(call["function"]["name"], call["function"]["arguments"], call["id"])
                replies.append({"role": "tool", "tool_call_id": call["id"], "content": text})
            return _normalize(replies)
        state["tool_defs"], state["tool_steps"] = state["offered_tools"], 0
        text, stopped = await session.user_reply([as_dict(m) for m in messages])
        if stopped:
            # The closing user message ends the episode and, as in rollouts, stays in the conversation
            # the reward reads (verifiers appends a final env response to the completion).
            state["final_env_response"] = _normalize([{"role": "user", "content": text}]) if text else []
            return []
        return _normalize([{"role": "user", "content": text}])

    async def synth_reward(self, state: vf.State, **kwargs: Any) -> float:
        """judges/reward.py over the whole conversation (the same definition that filtered export/sft)."""
        session: EpisodeSession | None = state.get(SESSION)
        if session is None:
            return 0.0
        messages = [as_dict(m) for m in list(state["prompt"]) + list(state.get("completion") or [])]
        try:
            result = await session.reward(messages)
        finally:
            await session.close()
        state["synth_reward_detail"] = result.model_dump()
        return result.reward

    @vf.cleanup
    async def close_session(self, state: vf.State) -> None:
        """An episode that errored before scoring still stops its sandbox (scoring closes it otherwise)."""
        session: EpisodeSession | None = state.get(SESSION)
        if session is not None and state.get("error") is not None:
            await session.close()


def _normalize(messages: list[dict[str, Any]]) -> vf.Messages:
    from verifiers.legacy.utils.message_utils import normalize_messages

    return normalize_messages(messages, field_name="env_response")


def load_environment(path: str, split: str = "train", options: EnvironmentOptions | None = None,
                     **kwargs: Any) -> SynthToolEnv:
    """The verifiers environment over export/rl at `path` (a save_to_disk DatasetDict or Dataset)."""
    data = load_from_disk(str(path))
    rows = (data[split] if hasattr(data, "keys") else data).to_list()
    return SynthToolEnv(rows, options, **kwargs)
