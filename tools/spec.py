"""ToolSpec: the one tool record. It *is* an MCP Tool plus provenance; OpenAI form is derived here only."""

from __future__ import annotations

import re
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field

from synth.errors import ConfigError
from synth.hashing import content_hash
from tools.server.toolset import argument_problem

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # what OpenAI function calling accepts


class ToolSpec(BaseModel):

    id: str = ""
    unit: str = ""
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

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    def model_post_init(self, _context: Any) -> None:
        if not self.id:
            # provenance=None stays out of the hash so ids of records made before the field existed hold.
            exclude = {"id"} if self.provenance is not None else {"id", "provenance"}
            self.id = content_hash(self.model_dump(exclude=exclude, by_alias=True))

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


def schema_problems(spec: ToolSpec) -> list[str]:
    """Why a tool spec cannot be offered to a model; empty when it can."""
    problems = []
    if not TOOL_NAME.match(spec.name):
        problems.append(f"name {spec.name!r} must match {TOOL_NAME.pattern}")
    if not spec.description.strip():
        problems.append("description is empty")
    schema = spec.input_schema
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        problems.append(f"inputSchema is not valid JSON Schema: {exc.message}")
        return problems
    if schema.get("type") != "object":
        problems.append('inputSchema must have "type": "object"')
    properties = schema.get("properties", {})
    missing = [name for name in schema.get("required", []) if name not in properties]
    if missing:
        problems.append(f"inputSchema requires undeclared properties {missing}")
    return problems


def validate_arguments(spec_schema: dict[str, Any], arguments: Any) -> str | None:
    """The error a real server would give for these arguments, or None when they are valid.

    The runner shipped into sandboxes owns the wording, so simulated and executable tools agree."""
    return argument_problem(spec_schema, arguments)


def require_valid(spec: ToolSpec) -> ToolSpec:
    problems = schema_problems(spec)
    if problems:
        raise ConfigError(f"tool {spec.name!r}: " + "; ".join(problems))
    return spec
