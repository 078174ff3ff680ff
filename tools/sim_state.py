"""The simulated tools' state: a JSON world of collections, and what the harness decides about it
without asking the LLM.

A seeded world (written by the task writer, synth/stages/tasks_world.py) has the shape the scaffold
gives executable toolsets (tools/scaffold.py `state_default`): one collection per noun of the tool
names, a dict of records keyed by id, e.g. {"bookings": {"B-1001": {...}}, "customers": {...}}.
Over such a world the harness decides deterministically:
- not found: an id argument (`id`, `*_id`, `*_ids`) of an entity the world has a collection of
  (or of the tool's own noun), naming a record the world does not hold, gets the error a real
  service would give, before any LLM call;
- new ids: a creating call is given a fresh id (next in the collection's own pattern, never one
  the state holds), and a reply that overwrites an existing record instead is moved to that id,
  so two creates never share an id;
- updates are applied as `set` or `delete` at dot paths.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Iterator

from synth.core.records import ToolSpec
from tools.scaffold import noun_of, plural, singular, verb_class, words

_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def parse_value(text: str) -> Any:
    """An update's value: JSON, or the bare text when it is not JSON (models often drop the quotes)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_update(state: dict[str, Any], op: str, path: str, value: Any = None) -> bool:
    """Set or delete the value at a dot path of `state` in place (dicts made on the way); False when
    the path runs through a value that is not an object."""
    parts = [p for p in path.split(".") if p]
    if not parts:
        return False
    node: Any = state
    for part in parts[:-1]:
        if not isinstance(node, dict):
            return False
        if op == "delete" and part not in node:
            return True  # nothing to delete
        node = node.setdefault(part, {})
    if not isinstance(node, dict):
        return False
    if op == "delete":
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value
    return True


def collections(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The top-level values that hold records: dicts of objects (by id) and lists of objects (as dicts by index)."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in state.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            out[name] = value
        elif isinstance(value, dict) and not value:
            out[name] = value
        elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
            out[name] = {str(i): v for i, v in enumerate(value)}
    return out


def collection_of(entity: str, state: dict[str, Any]) -> str | None:
    """The collection an entity name (e.g. "customer") refers to, if the state has one."""
    names = collections(state)
    for candidate in (plural(entity), entity, plural(entity.split("_")[-1]), entity.split("_")[-1]):
        if candidate in names:
            return candidate
    return next((n for n in names if singular(n) == entity), None)


def _holds(records: dict[str, Any], value: str, fields: tuple[str, ...]) -> bool:
    return value in records or any(str(r.get(f)) == value for r in records.values() for f in fields)


def id_entities(spec: ToolSpec) -> list[str]:
    """The entities a tool's id parameters name (customer_id -> customer), its own noun left out."""
    props = (spec.input_schema.get("properties") or {}) if isinstance(spec.input_schema, dict) else {}
    dummy = {name: ([] if words(name)[-1:] == ["ids"] else "") for name in props}
    return sorted({entity for _, _, entity in id_arguments(spec, dummy, values=False)} - {noun_of(spec.name)})


def id_arguments(spec: ToolSpec, arguments: dict[str, Any], values: bool = True) -> Iterator[tuple[str, str, str]]:
    """(argument, value, entity) for each id the call names: `id` (the tool's own noun), `x_id`, `x_ids`.
    A creating tool's id of its own noun is the new record's, not a reference: left out."""
    creates, own = verb_class(spec.name) == "create", noun_of(spec.name)
    for name, value in arguments.items():
        parts = words(name)  # note_id, noteId -> [note, id]
        if parts[-1:] == ["id"]:
            entity, items = "_".join(parts[:-1]) or own, [value]
        elif parts[-1:] == ["ids"] and isinstance(value, list):
            entity, items = "_".join(parts[:-1]) or own, value
        else:
            continue
        if creates and entity in (own, own.split("_")[-1]):
            continue
        if not values:
            yield name, "", entity
            continue
        for item in items:
            if isinstance(item, (str, int)) and not isinstance(item, bool):
                yield name, str(item), entity


def missing_entity(spec: ToolSpec, arguments: dict[str, Any], state: dict[str, Any]) -> str | None:
    """The not-found error for an id argument the state does not hold, or None."""
    names = collections(state)
    own = noun_of(spec.name)
    for argument, value, entity in id_arguments(spec, arguments):
        fields = ("id", argument, f"{entity}_id")
        home = collection_of(entity, state)
        if home is None and entity != own:
            continue  # an entity the world does not model (no collection of it): the LLM decides
        found = _holds(names[home], value, fields) if home else any(_holds(r, value, fields) for r in names.values())
        if not found:
            return f"{entity.replace('_', ' ')} {value!r} not found"
    return None


def creates_in(spec: ToolSpec, state: dict[str, Any]) -> str | None:
    """The collection a creating tool adds to (None for other verbs)."""
    if verb_class(spec.name) != "create":
        return None
    noun = noun_of(spec.name)
    return collection_of(noun, state) or plural(noun)


def new_id(state: dict[str, Any], collection: str, taken: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    """A fresh id in the collection's own pattern (B-1003 after B-1001, B-1002), held by no record anywhere."""
    everywhere = {k for records in collections(state).values() for k in records} | set(taken)
    everywhere |= {str(r.get("id")) for records in collections(state).values() for r in records.values()}
    keys = list(collections(state).get(collection, {}))
    numbered = [m for k in keys if (m := _NUMBERED.match(k))]
    if numbered:
        prefix = numbered[-1].group(1)
        width = len(numbered[-1].group(2))
        n = max(int(m.group(2)) for m in numbered if m.group(1) == prefix) + 1
    else:
        prefix, width, n = singular(collection)[:3].upper() + "-", 1, len(keys) + 1
    while f"{prefix}{n:0{width}d}" in everywhere:
        n += 1
    return f"{prefix}{n:0{width}d}"


def claim_new_ids(state: dict[str, Any], collection: str | None, fresh: str,
                  updates: list[tuple[str, str, Any]], result: str) -> tuple[list[tuple[str, str, Any]], str]:
    """A creating call's updates and result with any record it wrote over an existing one (an id the
    state already holds) moved to `fresh`: two creates never share an id."""
    if collection is None:
        return updates, result
    existing = collections(state).get(collection, {})
    out = []
    for op, path, value in updates:
        parts = path.split(".")
        if op == "set" and len(parts) == 2 and parts[0] == collection and parts[1] in existing and parts[1] != fresh:
            old = parts[1]
            if isinstance(value, dict) and str(value.get("id")) == old:
                value = {**value, "id": fresh}
            result = re.sub(rf"(?<![\w-]){re.escape(old)}(?![\w-])", fresh, result)
            path = f"{collection}.{fresh}"
        out.append((op, path, value))
    return out, result


def applied(state: dict[str, Any], updates: list[tuple[str, str, Any]]) -> dict[str, Any]:
    """A copy of `state` with the updates applied in order (one that cannot be applied is skipped)."""
    new = copy.deepcopy(state)
    for op, path, value in updates:
        apply_update(new, op, path, value)
    return new
