"""Composite implementations: one module source that serves the tools of several toolsets.

Mixed and distractor agents draw tools from two toolsets. When each of those toolsets has a passing
`Implementation`, `compose` writes one module that the tool host (tools/server/host.py) loads like
any other: a module-level `STATE_DEFAULT` and one function `name(state, **arguments)` per tool.

How the composed module works, once the host execs it (inside the sandbox):
- each part's source is embedded as a string literal and exec'd into its own `types.ModuleType`,
  with the `ToolFailure` the host predefined in the composite's globals, so every part keeps its own
  globals (two parts may both define `STATE_DEFAULT`, helpers, `next_id` logic...);
- each part's state lives under its own key: `{"<key A>": <A's state>, "<key B>": <B's state>}`,
  and `STATE_DEFAULT` is `{key: <part's STATE_DEFAULT>}`. Scaffolded modules all keep `next_id`
  (and often the same collections), so a shared flat state would mix the parts up;
- one wrapper per exposed tool calls the part's function on `state[key]`. A part state given
  without some of the part's top-level keys (an initial state seeding only `{"notes": {...}}`) gets
  them from the part's default on the first call: the same rule the host applies to a single
  toolset's top-level keys (STATE_DEFAULT updated with the initial state). The wrapper carries the
  original's signature (`__signature__`, which `inspect.signature` honours) and docstring, so the
  host's contract check (`contract_problems`) still checks the part's real signature;
- a nested function that is never called holds the parts' import statements: the host's hygiene
  check for shared episodes (tools/server/hygiene.py `imported_modules`) finds a module's imports in
  its compiled code, and the parts' code is only a string there.

State keys: each part's toolset name with every character other than a letter, digit, `_` or `-`
replaced by `_` (assertion paths are dot-separated, so a key must not contain a dot); an empty name
becomes `toolset`. Parts are keyed in the order given; a key already taken gets `_2`, `_3`, ... So
the same parts in the same order always get the same keys.

The harness never executes generated code: this works on source text only (`ast` to read literals
and imports). When every part's STATE_DEFAULT is a literal, the composite's is written as a literal
too, so `tools.scaffold.read_state_default` reads it for gold-task prompts; otherwise it is built at import.

Part sources are embedded as raw triple-quoted strings when that reads back exactly (checked with
`ast.literal_eval`), else as repr: the gold-task prompt shows the module to an LLM, which reads code
better than one escaped line.

The composite record: `passed=True` (every part passed), `toolset_id` = "composite:" + the parts'
toolset ids joined by "+" (it never equals a real toolset id, so it cannot shadow one in a
toolset_id -> implementation map), `toolset` = the parts' names joined by " + " (as Agent.toolset
names a mixed agent's), `domain` = the first part's, `tool_ids` = the exposed tools (in `order`
when given), `tests` = "" (the parts were tested; the composition is plumbing checked by
tests/test_compose.py), `provenance["composed"]` naming the parts' ids and keys. It is derived on
the fly (tools/serving.py `Serving`) and never stored.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from synth.core.records import Implementation, ToolSpec
from tools.scaffold import read_state_default

COMPOSITE_PREFIX = "composite:"  # composite toolset ids never equal a real toolset id
RESERVED = frozenset({"STATE_DEFAULT", "ToolFailure"})  # module names the host reads itself


class Part:
    """One implementation, the tools it exposes in the composite, and its state key."""

    def __init__(self, impl: Implementation, specs: list[ToolSpec], key: str):
        self.impl, self.specs, self.key = impl, specs, key
        self.names = [s.name for s in specs]
        self.default = read_state_default(impl.module)


def compose(parts: list[tuple[Implementation, list[ToolSpec]]], order: list[str] | None = None) -> Implementation:
    """One Implementation serving the given tools of every part (see the module docstring).

    `order`: tool ids in the order `tool_ids` should list them (the agent's), else part by part.
    Raises ValueError when the parts cannot be composed: fewer than two, a tool name exposed by two
    parts (one module cannot hold two functions of one name), a reserved name, or a part that does
    not parse."""
    if len(parts) < 2:
        raise ValueError(f"compose needs at least two implementations, got {len(parts)}: serve a single one as is")
    resolved = [Part(impl, specs, key) for (impl, specs), key in zip(parts, state_keys([i.toolset for i, _ in parts]))]
    _check_names(resolved)
    for part in resolved:
        try:
            ast.parse(part.impl.module)
        except SyntaxError as e:
            raise ValueError(f"implementation {part.impl.id} of toolset {part.impl.toolset!r} does not parse "
                             f"({e.msg}, line {e.lineno}): it cannot be composed") from e
    ids = [s.id for p in resolved for s in p.specs]
    if order is not None:
        ours, wanted = set(ids), set(order)
        ids = [i for i in order if i in ours] + [i for i in ids if i not in wanted]
    first = resolved[0].impl
    return Implementation(
        toolset_id=COMPOSITE_PREFIX + "+".join(p.impl.toolset_id for p in resolved),
        toolset=" + ".join(p.impl.toolset for p in resolved), domain=first.domain, tool_ids=ids,
        module=composed_source(resolved), tests="", passed=True,
        provenance={"composed": "harness: tools/compose.py, from implementations "
                                + ", ".join(f"{p.impl.id} (toolset {p.impl.toolset!r}, state key {p.key!r})"
                                            for p in resolved)},
    )


def state_keys(names: list[str]) -> list[str]:
    """A state key per toolset name: sanitized, made unique in order (see the module docstring)."""
    keys: list[str] = []
    for name in names:
        base = re.sub(r"[^A-Za-z0-9_-]", "_", name) or "toolset"
        key, n = base, 1
        while key in keys:
            n += 1
            key = f"{base}_{n}"
        keys.append(key)
    return keys


def _check_names(parts: list[Part]) -> None:
    owners: dict[str, list[str]] = {}
    for part in parts:
        for name in part.names:
            owners.setdefault(name, []).append(part.impl.toolset)
    clashes = {name: toolsets for name, toolsets in owners.items() if len(toolsets) > 1}
    if clashes:
        shown = "; ".join(f"{name!r} ({' and '.join(map(repr, toolsets))})" for name, toolsets in sorted(clashes.items()))
        raise ValueError(f"tool names exposed by more than one toolset cannot be composed into one module: {shown}")
    reserved = sorted(RESERVED & owners.keys())
    if reserved:
        raise ValueError(f"tool names {reserved} are names the tool host reads from the module itself")


# ---------------------------------------------------------------- the composed source


DOC = """Composite toolset module, written by the harness (tools/compose.py), not by an LLM.

It serves the tools of {count} toolsets. Each part's module below runs in a module of its own, and
its state lives under its key in this module's state:
{parts}
A tool `name(state, ...)` here calls the part's function on `state[key]`.
"""

IMPORTS = """
import copy as _synth_copy
import inspect as _synth_inspect
import types as _synth_types
"""

RUNTIME = '''

def _synth_load(key, source):
    """Run one part's source in a module of its own, with the host's ToolFailure predefined."""
    try:
        failure = ToolFailure
    except NameError:
        raise RuntimeError("ToolFailure is not predefined: load this module with the tool host (tools/server)")
    part = _synth_types.ModuleType(f"impl_part_{key}")
    part.ToolFailure = failure
    exec(compile(source, f"impl_part_{key}.py", "exec"), part.__dict__)
    if not isinstance(getattr(part, "STATE_DEFAULT", None), dict):
        raise TypeError(f"part {key!r}: STATE_DEFAULT must be a dict")
    return part


def _synth_part_state(state, key, default):
    """The part's state (its missing top-level keys filled from its default, as the host does)."""
    part = state.setdefault(key, {})
    if not isinstance(part, dict):
        raise ToolFailure(f"state[{key!r}] must be a JSON object (the state of toolset part {key!r})")
    for name, value in default.items():
        if name not in part:
            part[name] = _synth_copy.deepcopy(value)
    return part


def _synth_wrap(key, fn):
    def tool(state, *args, **kwargs):
        return fn(_synth_part_state(state, key, STATE_DEFAULT[key]), *args, **kwargs)

    tool.__name__ = tool.__qualname__ = getattr(fn, "__name__", "tool")
    tool.__doc__ = fn.__doc__
    try:  # the host's contract check must see the part's own signature, not (state, *args, **kwargs)
        tool.__signature__ = _synth_inspect.signature(fn)
    except (TypeError, ValueError):
        pass
    return tool


_synth_modules = {key: _synth_load(key, source) for key, source, _ in _SYNTH_PARTS}
'''

DEFAULT_EXPRESSION = '''
STATE_DEFAULT = {key: _synth_copy.deepcopy(module.STATE_DEFAULT) for key, module in _synth_modules.items()}
'''

EXPOSE = '''

def _synth_expose():
    for key, _, names in _SYNTH_PARTS:
        for name in names:
            fn = getattr(_synth_modules[key], name, None)
            if callable(fn):  # else the host's contract check names the missing function
                globals()[name] = _synth_wrap(key, fn)


_synth_expose()
'''


def composed_source(parts: list[Part]) -> str:
    listing = "".join(f"- {p.key!r}: toolset {p.impl.toolset!r} (domain {p.impl.domain or '-'}), implementation "
                      f"{p.impl.id}, tools {', '.join(p.names)}\n" for p in parts)
    entries = "".join(f"    ({p.key!r}, {string_literal(p.impl.module)}, {p.names!r}),\n" for p in parts)
    defaults = {p.key: p.default for p in parts}
    literal = _literal(defaults) if all(isinstance(p.default, dict) for p in parts) else None
    return "".join([
        string_literal(DOC.format(count=len(parts), parts=listing), quote='"""'), "\n",
        IMPORTS,
        _imports_holder(parts),
        f"\n# (state key, source, exposed tool names) per part\n_SYNTH_PARTS = [\n{entries}]\n",
        f"\nSTATE_DEFAULT = {literal}\n" if literal is not None else "",
        RUNTIME,
        DEFAULT_EXPRESSION if literal is None else "",
        EXPOSE,
    ])


def string_literal(text: str, quote: str = "r'''") -> str:
    """A Python string literal of the text: triple-quoted when that reads back exactly (the gold-task
    prompt shows this module to an LLM, which reads code better than one escaped line), else repr."""
    literal = f"{quote}{text}{quote.lstrip('r')}"
    try:
        if ast.literal_eval(literal) == text:
            return literal
    except (SyntaxError, ValueError):
        pass
    return repr(text)


def _literal(value: dict[str, Any]) -> str | None:
    """`value` as Python source that literal_eval reads back equal, else None (inf, nan...)."""
    text = repr(value)
    try:
        return text if ast.literal_eval(text) == value else None
    except (SyntaxError, ValueError):
        return None


def _imports_holder(parts: list[Part]) -> str:
    """A never-called function holding the parts' absolute imports, for the host's hygiene check."""
    names: set[str] = set()
    for part in parts:
        for node in ast.walk(ast.parse(part.impl.module)):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    names.discard("__future__")
    if not names:
        return ""
    body = "".join(f"    import {name}\n" for name in sorted(names))
    return ('\n\ndef _synth_part_imports():\n    """Never called: the parts\' imports, where the host\'s hygiene '
            'check reads a module\'s imports."""\n' + body)
