"""The run config: pydantic models with extra="forbid", loaded from YAML.

A misspelled key or a bad value fails before any work, naming the key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from judges.config import JudgeConfig
from sandboxes import SandboxConfig
from sandboxes.local import LocalConfig
from synth.core.errors import ConfigError
from synth.core.hashing import content_hash
from synth.core.llm_config import LLMConfig, hashed_llm_section
from synth.core.local_llm import EmbeddedConfig
from tools.config import ToolsConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentsConfig(_Strict):
    per_toolset: int = Field(1, ge=1, le=20, description="Agents (fresh system prompts) per toolset and strategy.")
    strategies: list[Literal["single", "mixed", "distractors"]] = Field(
        default_factory=lambda: ["single"], min_length=1,
        description="How an agent's tools are sampled, each giving per_toolset agents per toolset: single (one "
        "toolset), mixed (two toolsets of different domains), distractors (one toolset plus 1-2 decoy tools "
        "of another domain that no task needs).")
    near_duplicate_jaccard: float = Field(
        0.9, gt=0, le=1, description="Drop an agent whose drafted persona (role, rules, style; not "
        "the shared template) has at least this token Jaccard with an earlier variant over the same toolsets.")


Difficulty = Literal["easy", "medium", "hard"]


class RubricWeights(_Strict):
    """The weight of a rubric item by its kind (categorical, as in Rubrics-as-Rewards): the writer picks the kind only."""

    essential: float = Field(5, gt=0, description="Must hold; a failed essential item also drops the trajectory.")
    important: float = Field(3, gt=0)
    optional: float = Field(1, gt=0)
    pitfall: float = Field(5, gt=0, description="Subtracted from the score when the pitfall happened.")


class TasksConfig(_Strict):
    per_agent: int = Field(2, ge=1, le=50, description="Tasks generated for each agent.")
    rubric_items: int | dict[Difficulty, Annotated[int, Field(ge=2, le=20)]] = Field(
        default_factory=lambda: {"easy": 7, "medium": 9, "hard": 12},
        description="Rubric items per task, by difficulty ({easy: 7, medium: 9, hard: 12}), or one number for all.")
    rubric_weights: RubricWeights = Field(default_factory=RubricWeights)
    rubric_repairs: int = Field(1, ge=0, le=5, description="Times a rubric that fails validation is asked again "
                                "with its problems shown; one that still fails is recorded as rejected (Task.rubric_problems).")
    world: bool = Field(True, description="Tasks for simulated toolsets get a seeded world (the records the task talks "
                        "about plus distractors) as their initial state; the tool simulator answers not-found for "
                        "anything else, and state assertions apply.")
    gold: bool = Field(False, description="For agents whose tools all have a passing implementation, also write an "
                       "initial state, gold actions and final-state assertions, and keep only tasks whose assertions "
                       "fail on the initial state and hold after the gold actions replay in a sandbox; the replay's "
                       "whole final state is stored and checked (final_state_matches_gold).")

    @field_validator("rubric_items")
    @classmethod
    def _enough_items(cls, value: int | dict[str, int]) -> int | dict[str, int]:
        if isinstance(value, int) and not 2 <= value <= 20:
            raise ValueError("rubric_items must be 2-20: a rubric needs at least an essential and a pitfall item")
        if isinstance(value, dict) and set(value) != {"easy", "medium", "hard"}:
            raise ValueError("rubric_items by difficulty needs easy, medium and hard")
        return value

    def items_for(self, difficulty: str) -> int:
        return self.rubric_items if isinstance(self.rubric_items, int) else self.rubric_items[difficulty]


class RolloutConfig(_Strict):
    samples_per_task: int = Field(1, ge=1, le=64, description="Episodes per task (for pass@k).")
    max_turns: int = Field(3, ge=1, le=50, description="User turns before the episode is cut off.")
    max_tool_steps: int = Field(4, ge=1, le=50, description="Agent steps (tool-call rounds) per user turn.")
    episode_timeout_s: float = Field(600, gt=0, description="Wall-clock limit of one episode.")
    tool_timeout_s: float = Field(60, gt=0, description="Limit of one tool call; a timed-out call is an error result the agent sees.")
    fault_rate: float = Field(0.0, ge=0, le=1, description="Probability that a valid tool call gets an injected, seeded fault.")
    concurrency: int = Field(4, ge=1, le=4096, description="Episodes running at once.")
    workers: int = Field(1, ge=1, le=64, description="Processes the episodes are spread over, each with its own "
                         "event loop, LLM client and sandbox pool, sharing concurrency and pool_size: one Python "
                         "process saturates a core at a few hundred LLM calls per second.")
    tool_process: Literal["per_episode", "shared"] = Field(
        "per_episode", description="Executable toolsets: per_episode serves each episode in a fresh process the "
        "sandbox's tool host forks and relays to (nothing of an episode reaches another, and its code cannot answer "
        "for the host): for untrusted code, which generated modules are. shared runs a sandbox's episodes one after "
        "another in the host's own interpreter, each with a fresh module, state and seeded random (no fork per "
        "episode: faster with hundreds of episodes in flight, bench/README.md): for trusted modules only, since an "
        "episode's code can then leave state in the interpreter for later episodes and write the host's replies.")
    tool_result_max_chars: int = Field(
        65536, ge=256, description="A tool result longer than this (in characters) is cut to it, with a note saying "
        "so in the result; the trace records the length before (ToolCallTrace.truncated).")
    sandbox: SandboxConfig = Field(default_factory=LocalConfig, description="Where tools run: {type: local}, {type: docker} or {type: k8s} (a Pod per episode).")


class PrivilegedConfig(_Strict):
    """The `privileged` column of SFT and RL rows: hints from what the student will not have (synth/privileged.py)."""

    format: Literal["tools", "calls", "compact"] = Field(
        "compact", description="tools: tool names of the reference actions; calls: calls with full arguments; "
        "compact: calls with long values cut, facts and state shortened.")
    include: list[Literal["facts", "actions", "state"]] = Field(
        default_factory=lambda: ["facts", "actions", "state"],
        description="Parts of the hint: the user's hidden facts, reference actions (gold actions, else the best "
        "other kept sample of the task), the task's initial state.")


class ExportConfig(_Strict):
    parquet: bool = Field(True, description="Also write parquet files beside save_to_disk output.")
    split_parallel_calls: bool = Field(
        False, description="Split an assistant message with several tool calls into consecutive single-call turns "
        "(for chat templates such as Llama-3.1's that refuse parallel calls); rows say `parallel_tool_calls` otherwise.")
    privileged: PrivilegedConfig = Field(default_factory=PrivilegedConfig)
    license: str = Field("apache-2.0", description="License named in the dataset card.")
    test_fraction: float = Field(
        0.2, ge=0, lt=1, description="Share of domains held out as the test split (never in train); one domain: all train.")


class RunConfig(_Strict):
    """One pipeline run. Every section has defaults; a YAML file overrides any of them."""

    name: str = Field("quickstart", pattern=r"^[A-Za-z0-9._-]+$", description="Run name: the directory under runs_dir.")
    runs_dir: str = Field("runs", description="Parent directory of run directories.")
    seed: int = Field(0, description="Seeds sampling so reruns are reproducible.")
    llm: LLMConfig = Field(default_factory=LLMConfig, description="The OpenAI-compatible endpoint. No base_url and no OPENAI_BASE_URL: the embedded server.")
    embedded: EmbeddedConfig = Field(default_factory=EmbeddedConfig, description="The embedded llama.cpp server used when no endpoint is configured.")
    concurrency: int = Field(8, ge=1, le=4096, description="Units of work in flight per stage (tools, agents, tasks, judge).")
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    agents: AgentsConfig = Field(default_factory=AgentsConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    def content_hash(self) -> str:
        """Hash of what decides the records: not the name, paths, endpoint, concurrency, prices or budget.

        Fields left at their defaults are not hashed, so a release that adds a config field does
        not orphan existing run directories.
        """
        data = self.model_dump(mode="json", exclude_defaults=True)
        for key in ("name", "runs_dir", "embedded", "concurrency", "export"):
            data.pop(key, None)
        if "llm" in data:
            data["llm"] = hashed_llm_section(data["llm"])  # without its endpoint keys, roles' included
        # How the work runs, not what it makes: the tool process mode and the sandbox's resource limits
        # (whose defaults changed: a run dir written with `memory_mb: null` must keep its hash).
        limits = ("memory_mb", "cpu_s", "max_processes", "file_mb", "pids_limit", "cpus", "exec_timeout_s")
        sandbox = data.get("rollout", {}).get("sandbox", {})
        for key in limits:
            sandbox.pop(key, None)
        if sandbox == {} and "sandbox" in data.get("rollout", {}) and self.rollout.sandbox.type == "local":
            # Nothing but limits on the default backend: hashed as before they were settings (an
            # empty dict stays for another backend: it is what tells that backend apart).
            data["rollout"].pop("sandbox")
        for key in ("concurrency", "tool_process"):
            data.get("rollout", {}).pop(key, None)
        for section in ("llm", "rollout"):
            if data.get(section) == {}:
                data.pop(section)
        return content_hash(data)


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read YAML (or nothing: all defaults), apply top-level overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass a YAML file such as examples/quickstart.yaml")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path)) from None


def _explain(exc: ValidationError, path: Path | None) -> str:
    lines = [f"invalid config{f' in {path}' if path else ''}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check the spelling; allowed keys are listed in README.md#config-reference)")
        else:
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
