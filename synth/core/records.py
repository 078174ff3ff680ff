"""Pipeline records: one pydantic model per JSONL file in the run directory.

Every record carries a content-hash `id` and the `unit` it was made for (the id of the input unit
of work). Resume skips units that already have records, so a killed run neither loses nor repeats.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from synth.core.hashing import content_hash


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = ""
    unit: str = Field("", description="Id of the unit of work this record was made for.")

    def model_post_init(self, _context: Any) -> None:
        if not self.id:
            self.id = content_hash(self.identity())

    def identity(self) -> Any:
        """What the id hashes: the content, less what differs between two runs of the same work."""
        return self.model_dump(exclude={"id"})

    def _identity_without_defaults(self, fields: tuple[str, ...]) -> Any:
        """Fields added later are hashed only when set, so records written before them keep their ids."""
        data = self.model_dump(exclude={"id"}, by_alias=True)
        for name in fields:
            if data[name] == type(self).model_fields[name].get_default(call_default_factory=True):
                data.pop(name)
        return data


class ToolSpec(Record):
    """The one tool record. It *is* an MCP Tool (name, title, description, inputSchema, outputSchema,
    annotations) plus provenance; the OpenAI function-calling form is derived here only (to_openai)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    name: str
    title: str | None = None
    description: str
    input_schema: dict[str, Any] = Field(alias="inputSchema")
    output_schema: dict[str, Any] | None = Field(None, alias="outputSchema")
    annotations: dict[str, Any] | None = None
    kind: Literal["real", "executable", "simulated"] = "simulated"
    category: str = ""
    domain: str = ""
    toolset: str = ""
    toolset_id: str = ""
    state_model: str = Field("", description="The entities and fields the toolset's tools share.")
    provenance: dict[str, Any] | None = Field(
        None, description="Where an imported tool came from: server name/version, transport, package, command or URL, file."
    )

    def identity(self) -> Any:
        # MCP field names (aliases) are hashed; provenance=None stays out, so ids of records made
        # before the field existed hold.
        return self._identity_without_defaults(("provenance",))

    def to_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.input_schema},
        }

    def to_mcp(self) -> dict[str, Any]:
        tool: dict[str, Any] = {"name": self.name, "description": self.description, "inputSchema": self.input_schema}
        for key, value in (("title", self.title), ("outputSchema", self.output_schema), ("annotations", self.annotations)):
            if value is not None:
                tool[key] = value
        return tool


class Agent(Record):
    toolset_id: str
    toolset: str
    domain: str
    tool_ids: list[str]
    name: str
    system_prompt: str
    strategy: Literal["single", "mixed", "distractors"] = "single"
    toolset_ids: list[str] = Field(default_factory=list, description="Every toolset the tools come from (mixed: two).")
    distractor_tool_ids: list[str] = Field(
        default_factory=list, description="Tools from another domain offered on purpose; no task should need them.")

    def identity(self) -> Any:
        return self._identity_without_defaults(("strategy", "toolset_ids", "distractor_tool_ids"))


class Criterion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    weight: float = Field(1.0, gt=0)
    kind: Literal["essential", "important", "optional", "pitfall"] = "important"


class GoldAction(BaseModel):
    """One call of a reference solution. Arguments are a JSON object as a string (simple schemas, stable export)."""

    model_config = ConfigDict(extra="forbid")

    tool: str
    arguments: str = "{}"


class StateAssertion(BaseModel):
    """A check on the final state: `path` is dot-separated dict keys / list indexes, `value` a JSON string."""

    model_config = ConfigDict(extra="forbid")

    path: str
    op: Literal["equals", "exists", "absent", "contains"]
    value: str = ""


class Task(Record):
    agent_id: str
    goal: str
    persona: str
    user_facts: list[str] = Field(default_factory=list, description="Facts only the user knows.")
    difficulty: Literal["easy", "medium", "hard"] = "easy"
    initial_state: dict[str, Any] = Field(default_factory=dict)
    rubric: list[Criterion]
    gold_actions: list[GoldAction] = Field(default_factory=list, description="A reference solution (executable toolsets).")
    assertions: list[StateAssertion] = Field(default_factory=list, description="Must hold on the final state.")
    validated: bool = Field(False, description="The gold actions replayed cleanly and every assertion held.")
    gold_final_state: dict[str, Any] = Field(
        default_factory=dict, description="The whole state after the gold replay (gold tasks): a trajectory's final "
        "state must match it, but for free_paths (judges/state_match.py).")
    free_paths: list[str] = Field(
        default_factory=list, description="Paths of gold_final_state a trajectory may differ in (generated ids, "
        "timestamps), found by replaying the gold actions twice: '*' is any one key or index; a path ending in "
        "'{key}' names a collection whose keys are generated (its records are matched by content).")
    reference: list[str] = Field(
        default_factory=list, description="The reference solution the rubric writer sketched (tasks without gold actions).")
    rubric_problems: list[str] = Field(
        default_factory=list, description="Why the rubric fails validation (judges/rubric_rules.py); empty when it passes.")

    def identity(self) -> Any:
        return self._identity_without_defaults(("gold_actions", "assertions", "validated", "gold_final_state",
                                                "free_paths", "reference", "rubric_problems"))


# Set on an assistant message the model cut at max_tokens even after a second try; the LLM client never
# sends it back, the export leaves it out, and the check `agent_turns_complete` drops the trajectory.
TRUNCATED = "truncated"


class ToolCallTrace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    call_id: str
    name: str
    arguments: str
    result: str
    is_error: bool = False
    fault: str | None = Field(None, description="A fault injected by the runtime, if any.")
    latency_s: float = 0.0
    turn: int = 0
    truncated: int | None = Field(None, description="The result's length before it was cut to "
                                  "rollout.tool_result_max_chars, if it was.")
    runtime: Literal["real", "executable", "simulated"] | None = Field(
        None, description="What answered: a real MCP server, an executable implementation or the LLM tool "
        "simulator (None in trajectories written before it was recorded).")


class Trajectory(Record):
    task_id: str
    agent_id: str
    sample: int = 0
    seed: int = 0
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = Field(description="OpenAI function specs offered to the agent.")
    tool_calls: list[ToolCallTrace] = Field(default_factory=list)
    final_state: dict[str, Any] = Field(default_factory=dict)
    user_stopped: bool = Field(False, description="The user simulator ended the conversation itself.")
    turns: int = 0
    duration_s: float = 0.0
    user_flags: list[str] = Field(default_factory=list, description="User-simulator self-check flags (synth/user_sim.py).")
    usage: dict[str, int] = Field(default_factory=dict, description="LLM calls and tokens of this episode.")

    def identity(self) -> Any:
        # Timings and cache hits vary between runs; ids must not, so shards and reruns agree.
        # `runtime` follows from the run's tools and implementations: not hashed, so trajectories written
        # before it was recorded keep their ids.
        data = self.model_dump(exclude={"id": True, "duration_s": True, "usage": True,
                                        "tool_calls": {"__all__": {"latency_s", "runtime"}}})
        for call in data["tool_calls"]:  # added later: hashed only when set, so older ids stay
            if call["truncated"] is None:
                del call["truncated"]
        return data


class CriterionResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    passed: bool
    reason: str
    turn: int | None = None


class JudgeSample(BaseModel):
    """One of several judge calls on a trajectory, kept so the judge's agreement with itself can be audited."""

    model_config = ConfigDict(extra="forbid")

    seed: int
    score: float = Field(description="This sample's normalized score.")
    keep: bool = Field(description="This sample's own keep decision: essential criteria and threshold only "
                                   "(checks and require_user_stop are the same for every sample).")
    results: list[CriterionResult] = Field(default_factory=list)


class Verdict(Record):
    trajectory_id: str
    task_id: str
    results: list[CriterionResult] = Field(default_factory=list, description="Combined over samples (majority).")
    checks: dict[str, bool] = Field(default_factory=dict, description="Verifiable checks by name.")
    score: float = 0.0
    keep: bool = False
    reasons: list[str] = Field(default_factory=list, description="Why it was dropped (empty when kept).")
    samples: list[JudgeSample] = Field(
        default_factory=list, description="Every judge sample when judge.samples > 1; empty for one (`results` is it).")

    def identity(self) -> Any:
        return self._identity_without_defaults(("samples",))


class Implementation(Record):
    toolset_id: str
    toolset: str
    domain: str = ""
    tool_ids: list[str] = Field(description="The ToolSpec ids this module implements.")
    module: str = Field("", description="The last module drafted (the passing one when passed).")
    tests: str = ""
    passed: bool = False
    rounds: int = Field(0, description="Drafts tried: the first plus the repair rounds used.")
    errors: list[str] = Field(default_factory=list, description="Why each failed round failed, in order.")
    sandbox: str = Field("", description="The sandbox backend the tests ran in.")
    provenance: dict[str, str] = Field(
        default_factory=dict, description="Who wrote which part of module and tests: the harness (scaffold, smoke "
        "tests) or the LLM (function bodies), and how many LLM replies it took.")

    def identity(self) -> Any:
        return self._identity_without_defaults(("provenance",))


class ErrorRecord(Record):
    stage: str
    error_type: str
    message: str
    raw: str = ""


RECORD_FILES: dict[str, type[Record]] = {
    "tools": ToolSpec,
    "agents": Agent,
    "tasks": Task,
    "trajectories": Trajectory,
    "verdicts": Verdict,
    "errors": ErrorRecord,
    "implementations": Implementation,
}
