"""Checks on tool specs (core.records.ToolSpec): is the schema one a model can be offered, are these arguments valid."""

from __future__ import annotations

import re
from typing import Any

import jsonschema

from synth.core.errors import ConfigError
from synth.core.records import ToolSpec
from tools.server.toolset import argument_problem

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # what OpenAI function calling accepts


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
