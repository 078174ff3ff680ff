"""Seeded worlds for tasks on simulated toolsets, and the checks a task's state must pass.

The task writer lists the world's records (collection, id, fields): the records the task talks
about plus distractors. Collections are the ones the scaffold would give the toolset (one per noun
of its tool names, tools/scaffold.py), offered as an enum, so a world always has the shape the
tool simulator's deterministic rules read (tools/sim_state.py). A world is kept only if
- it holds at least two records (the task's and at least one distractor), no id twice;
- every id the goal or the user's facts mention is in it (else the agent meets "not found" for
  what the user says exists);
- its assertions, if any, point into its collections and do not all hold on it already (a
  conversation that does nothing must fail them).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Iterable, Literal

from pydantic import BaseModel, Field

from judges.assertions import assertion_failures
from judges.gold import DO_NOTHING_PASSES
from synth.core.records import StateAssertion, ToolSpec
from tools.scaffold import plural, state_default
from tools.sim_state import id_entities, parse_value

MIN_RECORDS = 2
# Ids in a user's words: '#' and digits, or letters and digits with a capital, '-' or '_' (B-1001,
# ORD123, #4411), not amounts, times or dates.
_ID = re.compile(r"(?<![\w#-])(#\w*\d\w*|(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)+|"
                 r"(?=\w*\d)[A-Z][A-Z0-9]{2,})(?![\w-])")


class FieldDraft(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=30)]
    value: Annotated[str, Field(max_length=60)]  # JSON or plain text


def world_collections(specs: list[ToolSpec]) -> list[str]:
    """The collections a seeded world may use: one per noun of the tool names (as the scaffold names
    them) and one per entity their id parameters name (create_booking(customer_id) -> customers)."""
    nouns = {k for k in state_default([{"name": s.name} for s in specs]) if k != "next_id"}
    return sorted(nouns | {plural(e) for s in specs for e in id_entities(s)})


def record_model(collections: list[str]) -> type[BaseModel]:
    names = tuple(collections) or ("items",)

    class RecordDraft(BaseModel):
        collection: Literal[names]  # type: ignore[valid-type]
        id: Annotated[str, Field(min_length=1, max_length=40)]
        fields: list[FieldDraft] = Field(min_length=1, max_length=4)

    return RecordDraft


def build_world(records: Iterable[Any]) -> tuple[dict[str, Any], list[str]]:
    """The world state from drafted records, and problems (an id given twice)."""
    world: dict[str, dict[str, Any]] = {}
    problems = []
    for record in records:
        collection = world.setdefault(record.collection, {})
        if record.id in collection:
            problems.append(f"world record {record.collection}.{record.id} is given twice")
            continue
        collection[record.id] = {f.name: parse_value(f.value) for f in record.fields}
    return world, problems


def mentioned_ids(texts: Iterable[str]) -> list[str]:
    found: list[str] = []
    for text in texts:
        for token in _ID.findall(text):
            if token not in found:
                found.append(token)
    return found


def missing_ids(state: dict[str, Any], texts: Iterable[str]) -> list[str]:
    """Ids the goal or facts mention that the state holds nowhere (as a key or a value)."""
    held = json.dumps(state, ensure_ascii=False).lower()
    return [i for i in mentioned_ids(texts) if i.lstrip("#").lower() not in held]


def world_problems(world: dict[str, Any], texts: list[str]) -> list[str]:
    records = sum(len(c) for c in world.values() if isinstance(c, dict))
    problems = []
    if records < MIN_RECORDS:
        problems.append(f"the world holds {records} record(s): seed the records the task talks about and at "
                        "least one other")
    problems += [f"the goal or the user's facts mention {i!r}, which is not in the world"
                 for i in missing_ids(world, texts)]
    return problems


def assertion_problems(state: dict[str, Any], assertions: list[StateAssertion], collections: list[str]) -> list[str]:
    """Assertions must point into the state's collections and not all hold on it (a do-nothing run fails)."""
    if not assertions:
        return []
    problems = [f"assertion path {a.path!r} is not in the world's collections ({', '.join(collections)})"
                for a in assertions if a.path.split(".")[0] not in collections]
    if not problems and not assertion_failures(state, assertions):
        problems.append(DO_NOTHING_PASSES)
    return problems
