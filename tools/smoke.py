"""Smoke tests derived from the tool schemas: the harness's own tests of an LLM-written module.

`smoke_tests(tools)` returns the source of a tests file for tools/server/selftest.py: the generic
checks of tools/smoke_template.py plus a PLAN of cases built here from names and inputSchemas
(sample arguments that validate against the schema; ids passed from creators to readers by noun).
They call every tool, so the selftest's "every tool is tested" rule holds even with no LLM tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tools.scaffold import noun_of, verb_class
from tools.server.toolset import argument_problem

TEMPLATE = Path(__file__).with_name("smoke_template.py")
_SPECIAL = {"email": "ann@example.com", "date": "2025-01-15", "time": "09:30", "phone": "555-0100",
            "url": "https://example.com/a", "currency": "USD", "start_date": "2025-01-15",
            "end_date": "2025-01-20", "datetime": "2025-01-15T09:30:00"}


def is_id(param: str) -> bool:
    return param == "id" or param.endswith("_id")


def sample(param: str, prop: Any) -> Any:
    """A value for `param` that its schema accepts; the same param name always gets the same value,
    so a reader's `email` matches the creator's `email`."""
    prop = prop if isinstance(prop, dict) else {}
    if prop.get("enum"):
        return prop["enum"][0]
    kind = prop.get("type")
    kind = next((k for k in kind if k != "null"), "string") if isinstance(kind, list) else kind
    if kind == "integer":
        return 1 if is_id(param) else 2
    if kind == "number":
        return 2.5
    if kind == "boolean":
        return True
    if kind == "array":
        return [sample(param.rstrip("s"), prop.get("items") or {"type": "string"})]
    if kind == "object":
        return {}
    if is_id(param):
        return "1"
    return _SPECIAL.get(param) or next((v for k, v in _SPECIAL.items() if param.endswith("_" + k)), f"sample-{param}")


def _variant(value: Any, prop: Any) -> Any:
    """Another valid value for the same property: the next enum value, the other boolean, ..."""
    enum = prop.get("enum") if isinstance(prop, dict) else None
    if enum:
        return enum[1] if len(enum) > 1 else value
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        return value + "-2" if value.startswith("sample-") else "other-" + value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, list):
        return [_variant(v, prop.get("items") if isinstance(prop, dict) else None) for v in value]
    return value


def _args(tool: dict[str, Any], only_required: bool = False) -> dict[str, Any]:
    schema = tool.get("inputSchema") or {}
    required = set(schema.get("required") or [])
    props = schema.get("properties") or {}
    args = {p: sample(p, s) for p, s in props.items() if not only_required or p in required}
    if argument_problem(schema, args):  # a pattern or bound the samples miss: fall back to required ones
        args = {p: sample(p, s) for p, s in props.items() if p in required}
    return args


class _Toolset:
    def __init__(self, tools: list[dict[str, Any]]):
        self.tools = tools
        self.creators: dict[str, dict[str, Any]] = {}
        for t in tools:
            if verb_class(t["name"]) == "create":
                self.creators.setdefault(noun_of(t["name"]), t)

    def call(self, tool: dict[str, Any], only_required: bool = False) -> dict[str, Any]:
        props = (tool.get("inputSchema") or {}).get("properties") or {}
        own = noun_of(tool["name"])
        links = []
        for param in props:
            if not is_id(param):
                continue
            noun = own if param in ("id", f"{own}_id") else param[: -len("_id")]
            if noun == own and verb_class(tool["name"]) == "create":
                continue  # a creator given its own id chooses it
            if noun in self.creators:
                links.append([param, noun, props[param].get("type", "string") if isinstance(props[param], dict) else "string"])
        return {"tool": tool["name"], "noun": own, "args": _args(tool, only_required), "links": links,
                "id_params": [p for p in props if is_id(p)]}

    def setup(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        """Creator calls the call needs (its linked nouns), dependencies first."""
        out: list[dict[str, Any]] = []

        def need(noun: str, depth: int = 0) -> None:
            creator = self.creators.get(noun)
            if creator is None or creator["name"] == call["tool"] or depth > 3:
                return
            c = self.call(creator)
            for _, dep, _ in c["links"]:
                need(dep, depth + 1)
            if all(x["tool"] != c["tool"] for x in out):
                out.append(c)

        for _, noun, _ in call["links"]:
            need(noun)
        return out


def plan(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ts = _Toolset(tools)
    cases = []
    for tool in tools:
        verb = verb_class(tool["name"])
        call = ts.call(tool)
        id_params = [p for p in call["id_params"] if not (verb == "create" and p in ("id", f"{call['noun']}_id"))]
        linked_all = all(any(link[0] == p for link in call["links"]) for p in id_params)
        # A tool may refuse sample data only when it was not given existing ids, or when nothing ties
        # its arguments to the state ("other" verbs without ids, e.g. a price for a made-up room type).
        call["must_succeed"] = linked_all and (verb != "other" or bool(call["links"]))
        # Creators and updaters must write; what they (and tools of other verbs) do must depend on
        # their arguments. Strict on purpose: a false failure leaves a toolset simulated, a false
        # pass would serve a fake tool (measured: a 135M model's constant-reply bodies passed).
        call["writes"] = verb in ("create", "update")
        call["depends"] = verb in ("create", "update", "other")
        props = (tool.get("inputSchema") or {}).get("properties") or {}
        variant = {p: _variant(v, props.get(p)) if not is_id(p) else v for p, v in call["args"].items()}
        call["variant"] = variant if not argument_problem(tool.get("inputSchema") or {}, variant) else call["args"]
        cases.append({"name": f"run__{tool['name']}", "kind": "run", "call": call, "creators": ts.setup(call)})
    for noun, creator in ts.creators.items():
        c = ts.call(creator)
        expect = [v for p, v in c["args"].items() if isinstance(v, str) and not is_id(p)]
        if not expect:
            continue
        readers = [t for t in tools if noun_of(t["name"]) == noun and verb_class(t["name"]) in ("get", "list")]
        for reader in sorted(readers, key=lambda t: verb_class(t["name"]) != "get")[:1]:
            call = ts.call(reader, only_required=True)
            cases.append({"name": f"round_trip__{creator['name']}__{reader['name']}", "kind": "round_trip",
                          "call": call, "creators": ts.setup({**call, "links": call["links"] + [["", noun, ""]]}),
                          "expect": expect})
        getter = next((t for t in readers if verb_class(t["name"]) == "get"), None)
        for deleter in [t for t in tools if noun_of(t["name"]) == noun and verb_class(t["name"]) == "delete"][:1]:
            if getter is None:
                continue
            call = ts.call(deleter, only_required=True)
            cases.append({"name": f"delete__{deleter['name']}", "kind": "delete", "call": call,
                          "creators": ts.setup({**call, "links": call["links"] + [["", noun, ""]]}),
                          "reader": ts.call(getter, only_required=True), "expect": expect})
    return cases


def smoke_tests(tools: list[dict[str, Any]]) -> str:
    source = TEMPLATE.read_text()
    return source.replace("PLAN = []  # filled in by tools/smoke.py: one dict per case",
                          f"PLAN = json.loads({json.dumps(json.dumps(plan(tools)))})", 1)
