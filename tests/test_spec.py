"""ToolSpec: schema problems, argument validation, OpenAI/MCP shapes, stable content-hash ids."""

import json

import pytest

from synth.core.errors import ConfigError
from synth.core.records import ToolSpec
from tools.spec import require_valid, schema_problems, validate_arguments

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"},
                                           "when": {"type": "object", "properties": {"days": {"type": "integer",
                                                                                              "minimum": 1}}}},
          "required": ["city"]}


def spec(**kw) -> ToolSpec:
    fields = {"name": "get_weather", "description": "Weather forecast for a city.", "inputSchema": SCHEMA} | kw
    return ToolSpec(**fields)


# -- schema_problems -------------------------------------------------------------------------

def test_good_spec_has_no_problems():
    assert schema_problems(spec()) == []
    assert require_valid(spec()) == spec()


@pytest.mark.parametrize("kw, needle", [
    ({"inputSchema": {"type": "object", "properties": {"x": {"type": "strnig"}}}}, "not valid JSON Schema"),
    ({"inputSchema": {"type": "array", "items": {"type": "string"}}}, '"type": "object"'),
    ({"inputSchema": {"properties": {"x": {"type": "string"}}}}, '"type": "object"'),
    ({"inputSchema": {"type": "object", "properties": {"a": {}}, "required": ["a", "b"]}}, "undeclared properties ['b']"),
    ({"inputSchema": {"type": "object", "required": ["a"]}}, "undeclared properties ['a']"),
    ({"name": "get weather"}, "name 'get weather'"),
    ({"name": "x" * 65}, "must match"),
    ({"name": ""}, "must match"),
    ({"description": "  "}, "description is empty"),
], ids=["bad-type", "array-root", "no-root-type", "required-undeclared", "required-no-properties", "name-space",
        "name-too-long", "name-empty", "blank-description"])
def test_each_problem_is_reported(kw, needle):
    [problem] = schema_problems(spec(**kw))
    assert needle in problem


def test_problems_accumulate_and_require_valid_names_the_tool():
    bad = spec(name="bad name!", description="", inputSchema={"type": "object", "required": ["q"]})
    assert len(schema_problems(bad)) == 3
    with pytest.raises(ConfigError) as info:
        require_valid(bad)
    message = str(info.value)
    assert message.startswith("tool 'bad name!': ")
    assert "description is empty" in message and "undeclared" in message


# -- validate_arguments ----------------------------------------------------------------------

def test_valid_arguments():
    assert validate_arguments(SCHEMA, {"city": "Oslo"}) is None
    assert validate_arguments(SCHEMA, {"city": "Oslo", "when": {"days": 3}}) is None


@pytest.mark.parametrize("arguments, where, needle", [
    ({"city": "Oslo", "when": {"days": 0}}, "when/days", "minimum"),
    ({"city": "Oslo", "when": {"days": "three"}}, "when/days", "integer"),
    ({"city": 5}, "city", "string"),
    ({}, "arguments", "'city' is a required property"),
])
def test_invalid_arguments_give_the_error_path(arguments, where, needle):
    error = validate_arguments(SCHEMA, arguments)
    assert error.startswith(f"invalid arguments at {where}: ")
    assert needle in error


@pytest.mark.parametrize("arguments, kind", [(["Oslo"], "list"), ("Oslo", "str"), (None, "NoneType")])
def test_non_object_arguments(arguments, kind):
    assert validate_arguments(SCHEMA, arguments) == f"arguments must be a JSON object, got {kind}"


# -- shapes ----------------------------------------------------------------------------------

def test_to_openai_shape():
    assert spec().to_openai() == {"type": "function", "function": {
        "name": "get_weather", "description": "Weather forecast for a city.", "parameters": SCHEMA}}


def test_to_mcp_shape_minimal_and_full():
    assert spec().to_mcp() == {"name": "get_weather", "description": "Weather forecast for a city.",
                               "inputSchema": SCHEMA}
    output = {"type": "object", "properties": {"temp": {"type": "number"}}}
    full = spec(title="Weather", outputSchema=output, annotations={"readOnlyHint": True}, domain="travel")
    assert full.to_mcp() == {"name": "get_weather", "description": "Weather forecast for a city.",
                             "inputSchema": SCHEMA, "title": "Weather", "outputSchema": output,
                             "annotations": {"readOnlyHint": True}}


def test_to_mcp_is_a_valid_mcp_tool():
    mcp_types = pytest.importorskip("mcp.types")
    mcp_form = spec(title="Weather", annotations={"readOnlyHint": True}).to_mcp()
    tool = mcp_types.Tool.model_validate(mcp_form)
    assert tool.model_dump(by_alias=True, exclude_none=True) == mcp_form


# -- ids -------------------------------------------------------------------------------------

def test_id_is_a_stable_content_hash():
    assert spec().id == spec().id
    assert len(spec().id) == 16
    by_field_name = ToolSpec(name="get_weather", description="Weather forecast for a city.", input_schema=SCHEMA)
    assert by_field_name.id == spec().id  # field name or alias: same content, same id
    assert spec(description="Other.").id != spec().id
    assert spec(kind="executable").id != spec().id
    assert spec(inputSchema={**SCHEMA, "required": []}).id != spec().id


def test_id_ignores_key_order():
    reordered = {"required": ["city"], "properties": dict(reversed(list(SCHEMA["properties"].items()))),
                 "type": "object"}
    assert spec(inputSchema=reordered).id == spec().id


def test_explicit_id_is_kept():
    assert spec(id="fixed").id == "fixed"


def test_json_round_trip_keeps_id_and_alias():
    original = spec(title="Weather", outputSchema={"type": "object"}, toolset="meteo")
    text = original.model_dump_json()
    data = json.loads(text)
    assert "inputSchema" in data and "input_schema" not in data
    assert "outputSchema" in data
    back = ToolSpec.model_validate_json(text)
    assert back == original
    assert back.id == original.id
    assert ToolSpec(**{k: v for k, v in data.items() if k != "id"}).id == original.id  # recomputed, same


def test_unknown_field_is_rejected():
    with pytest.raises(ValueError):
        spec(inputschema=SCHEMA)
