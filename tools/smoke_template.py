"""Smoke tests of a toolset module, derived by synth from the tool schemas (not written by an LLM).

Run by `python -m tools.server.selftest` inside the sandbox (`import impl` is the module under test).
Each case calls tools with schema-valid sample arguments on a fresh copy of STATE_DEFAULT:
- run:        every creator works on a fresh state, then the tool is called with ids from what the
              creators returned; it must return (the runner checks result and state are JSON) or,
              when it could not be given an existing id, may raise ToolFailure; a creator or updater
              must change the state; a creator, updater or other-verb tool must return or store
              something different for different arguments (a constant reply is not an implementation);
- round_trip: what a creator stored is found again by a reader (get/list) of the same noun;
- delete:     after a deleter removed it, the reader no longer finds it (ToolFailure or absent).
"""

import copy
import json

import impl

PLAN = []  # filled in by tools/smoke.py: one dict per case


def _fresh():
    return copy.deepcopy(impl.STATE_DEFAULT)


def _call(state, tool, args):
    return getattr(impl, tool)(state, **args)


def _id_of(result, call):
    """The id a creator's result names: `id`, `<noun>_id`, any `*_id`, or the result itself."""
    if isinstance(result, dict):
        for key in ["id", call["noun"] + "_id"] + sorted(k for k in result if str(k).endswith("_id")):
            if key in result and isinstance(result[key], (str, int)) and not isinstance(result[key], bool):
                return result[key]
        for value in result.values():  # {"note": {"id": 1, ...}}
            if isinstance(value, dict) and "id" in value:
                return value["id"]
    if isinstance(result, (str, int)) and not isinstance(result, bool):
        return result
    for key in call.get("id_params", []):  # the caller chose the id itself
        if key in call["args"]:
            return call["args"][key]
    return None


def _with_ids(call, ids):
    """The call's arguments with its id parameters set to the ids the creators returned."""
    args = dict(call["args"])
    linked = True
    for param, noun, kind in call.get("links", []):
        if ids.get(noun) is None:
            linked = False
            continue
        value = ids[noun]
        if kind == "integer":
            try:
                value = int(value)
            except (TypeError, ValueError):
                linked = False
                continue
        elif kind == "string":
            value = str(value)
        args[param] = value
    return args, linked


def _setup(state, creators):
    ids = {}
    for call in creators:
        try:
            result = _call(state, call["tool"], call["args"])
        except impl.ToolFailure as e:
            raise AssertionError(f"{call['tool']}{_show(call['args'])} failed on a fresh state: {e}") from e
        ids[call["noun"]] = _id_of(result, call)
        assert state != impl.STATE_DEFAULT, f"{call['tool']}{_show(call['args'])} did not change the state"
    return ids


def _show(args):
    return "(state, " + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"


def _run(case, variant=False):
    state = _fresh()
    ids = _setup(state, case["creators"])
    call = case["call"]
    args, linked = _with_ids({**call, "args": call["variant"]} if variant else call, ids)
    before = copy.deepcopy(state)
    try:
        result = _call(state, call["tool"], args)
    except impl.ToolFailure as e:
        if linked and call.get("must_succeed", True):
            raise AssertionError(f"{call['tool']}{_show(args)} raised ToolFailure on existing data: {e}") from e
        return None
    assert result is not None, f"{call['tool']}{_show(args)} returned nothing (None)"
    if call.get("writes"):
        assert state != before, f"{call['tool']}{_show(args)} did not change the state"
    if call.get("depends") and not variant and call.get("variant") and call["variant"] != call["args"]:
        other = _run(case, variant=True)
        assert other is None or other != (json.dumps(result, sort_keys=True), json.dumps(state, sort_keys=True)), (
            f"{call['tool']} returns the same result and leaves the same state whatever its arguments")
    return json.dumps(result, sort_keys=True), json.dumps(state, sort_keys=True)


def _round_trip(case):
    state = _fresh()
    ids = _setup(state, case["creators"])
    creator = case["creators"][-1]
    assert ids.get(creator["noun"]) is not None or not case["call"].get("links"), (
        f"{creator['tool']} returned no id (looked for 'id', '{creator['noun']}_id', '*_id')")
    args, _ = _with_ids(case["call"], ids)
    try:
        found = _call(state, case["call"]["tool"], args)
    except impl.ToolFailure as e:
        raise AssertionError(f"{case['call']['tool']}{_show(args)} did not find what "
                             f"{creator['tool']} created: {e}") from e
    text = json.dumps(found)
    assert any(value in text for value in case["expect"]), (
        f"{case['call']['tool']}{_show(args)} returned {text[:200]}, without any of {case['expect']} "
        f"given to {creator['tool']}")


def _delete(case):
    state = _fresh()
    ids = _setup(state, case["creators"])
    args, _ = _with_ids(case["call"], ids)
    _call(state, case["call"]["tool"], args)
    reader = case["reader"]
    read_args, _ = _with_ids(reader, ids)
    try:
        found = _call(state, reader["tool"], read_args)
    except impl.ToolFailure:
        return
    text = json.dumps(found)
    assert not any(value in text for value in case["expect"]), (
        f"after {case['call']['tool']}{_show(args)}, {reader['tool']}{_show(read_args)} still returns {text[:200]}")


def _make(case):
    check = {"run": _run, "round_trip": _round_trip, "delete": _delete}[case["kind"]]

    def test():
        check(case)

    return test


for _case in PLAN:
    globals()["test_" + _case["name"]] = _make(_case)
