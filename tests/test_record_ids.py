"""Record ids are content hashes that old run dirs depend on: these were computed by the code that
wrote them (commit d6b5e47), so a change to how any record hashes itself fails here by name."""

from __future__ import annotations

from synth.core.records import ToolSpec

SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


def test_tool_spec_ids_are_the_ones_earlier_code_wrote():
    plain = ToolSpec(name="search", description="Search things.", inputSchema=SCHEMA, toolset="t", toolset_id="tid",
                     domain="d")
    imported = ToolSpec(name="search", description="Search things.", inputSchema=SCHEMA, kind="real", title="Search",
                        provenance={"server": "s", "version": "1"}, annotations={"readOnlyHint": True},
                        outputSchema={"type": "object"}, unit="u1")
    by_field_name = ToolSpec.model_validate({"name": "search", "description": "Search things.", "input_schema": SCHEMA})
    assert (plain.id, imported.id, by_field_name.id) == ("6a7e8550a9607c08", "9aa0b703e5873b7c", "469ed9ff712dab44")


def test_a_given_id_is_kept_and_the_id_is_not_hashed():
    spec = ToolSpec(id="given", name="search", description="Search things.", inputSchema=SCHEMA)
    assert spec.id == "given"
    assert ToolSpec.model_validate({**spec.model_dump(by_alias=True), "id": ""}).id == "469ed9ff712dab44"
