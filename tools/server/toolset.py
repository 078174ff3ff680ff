"""Load a toolset module, validate arguments, call tools, persist state after every call."""

from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import os
import sys
from types import CodeType, ModuleType
from typing import Any

import jsonschema

from tools.server import ToolFailure


def load_module(path: str, name: str = "impl") -> ModuleType:
    """Import the file as `name`; ToolFailure is predefined in it so generated code need not import it."""
    spec = importlib.util.spec_from_file_location(name, os.path.abspath(path))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load a module from {path!r}")
    module = importlib.util.module_from_spec(spec)
    module.ToolFailure = ToolFailure  # type: ignore[attr-defined]
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def module_from_code(code: CodeType, name: str = "impl") -> ModuleType:
    """Run compiled module source as `name`, with ToolFailure predefined as in load_module."""
    module = ModuleType(name)
    module.__file__ = code.co_filename
    module.ToolFailure = ToolFailure  # type: ignore[attr-defined]
    sys.modules[name] = module
    exec(code, module.__dict__)
    return module


def load_tools(module: ModuleType, specs_path: str | None) -> list[dict[str, Any]]:
    """MCP tool dicts: the --specs file, else the module's TOOLS, else SCHEMAS + docstrings."""
    if specs_path:
        with open(specs_path, encoding="utf-8") as f:
            return json.load(f)
    if isinstance(getattr(module, "TOOLS", None), list):
        return module.TOOLS
    schemas = getattr(module, "SCHEMAS", None)
    if not isinstance(schemas, dict):
        raise ValueError("no tool schemas: pass --specs or define TOOLS or SCHEMAS in the module")
    return [{"name": name, "description": inspect.getdoc(getattr(module, name, None)) or name, "inputSchema": schema}
            for name, schema in schemas.items()]


def contract_problems(module: ModuleType, tools: list[dict[str, Any]]) -> list[str]:
    """Why the module cannot serve these tools: missing functions, signatures that disagree with schemas."""
    problems = []
    default = getattr(module, "STATE_DEFAULT", None)
    if not isinstance(default, dict):
        problems.append("STATE_DEFAULT must be a dict")
    else:
        try:
            json.dumps(default)
        except (TypeError, ValueError) as e:
            problems.append(f"STATE_DEFAULT is not JSON-serializable: {e}")
    for tool in tools:
        name, schema = tool["name"], tool.get("inputSchema") or {}
        fn = getattr(module, name, None)
        if not callable(fn):
            problems.append(f"no function {name}(state, ...) for tool {name!r}")
            continue
        params = list(inspect.signature(fn).parameters.values())
        if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
            problems.append(f"{name}: the first parameter must be `state`")
            continue
        rest = {p.name: p for p in params[1:]}
        if any(p.kind is p.VAR_KEYWORD for p in rest.values()):
            continue
        properties, required = schema.get("properties", {}), set(schema.get("required", []))
        for prop in properties:
            if prop not in rest:
                problems.append(f"{name}: no parameter for schema property {prop!r}")
        for p in rest.values():
            if p.kind is p.VAR_POSITIONAL:
                continue
            if p.name not in properties:
                problems.append(f"{name}: parameter {p.name!r} is not in the schema")
            elif p.default is p.empty and p.name not in required:
                problems.append(f"{name}: optional property {p.name!r} needs a default value")
    return problems


def argument_problem(schema: dict[str, Any], arguments: Any,
                     validator: Any = None) -> str | None:
    """The error a real server would give for these arguments (tools/spec.validate_arguments uses it too)."""
    if not isinstance(arguments, dict):
        return f"arguments must be a JSON object, got {type(arguments).__name__}"
    validator = validator or jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "arguments"
    return f"invalid arguments at {where}: {error.message}"


def render(result: Any) -> str:
    return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)


class Toolset:
    """One toolset over one state file. A call is all or nothing: a failing call leaves state unchanged."""

    def __init__(self, module: ModuleType, tools: list[dict[str, Any]], state_path: str,
                 initial_state: dict[str, Any] | None = None):
        """The state is STATE_DEFAULT updated with `initial_state`, else with the state file if present."""
        self.module, self.state_path = module, state_path
        self.tools = {t["name"]: t for t in tools}
        self._validators: dict[str, Any] = {}
        self._saved: str | None = None  # the state file's content: an unchanged state is not rewritten
        self.state = copy.deepcopy(module.STATE_DEFAULT)
        if initial_state is not None:
            self.state.update(copy.deepcopy(initial_state))
        elif os.path.exists(state_path):
            with open(state_path, encoding="utf-8") as f:
                self.state.update(json.load(f))  # the episode's initial state over the defaults
        self.save(json.dumps(self.state, sort_keys=True))

    def _validator(self, name: str) -> Any:
        # Built once per tool: constructing one costs more than most validations.
        if name not in self._validators:
            self._validators[name] = jsonschema.Draft202012Validator(self.tools[name].get("inputSchema") or {})
        return self._validators[name]

    def call(self, name: str, arguments: Any) -> tuple[str, bool]:
        """(text, is_error). Synchronous on purpose: calls never interleave, so state stays consistent."""
        tool = self.tools.get(name)
        if tool is None:
            return f"unknown tool {name!r}; available: {sorted(self.tools)}", True
        schema = tool.get("inputSchema") or {}
        if problem := argument_problem(schema, arguments if arguments is not None else {}, self._validator(name)):
            return problem, True
        work = copy.deepcopy(self.state)
        try:
            text = render(getattr(self.module, name)(work, **(arguments or {})))
            saved = json.dumps(work, sort_keys=True)  # also proves the state is still JSON
        except ToolFailure as e:
            return str(e) or "tool failed", True
        except Exception as e:  # a bug in generated code is the caller's error result, not a dead server
            return f"{type(e).__name__}: {e}", True
        self.state = work
        self.save(saved)
        return text, False

    def save(self, text: str) -> None:
        """Write the state file (`text`: the state as JSON) unless it already holds exactly that."""
        if text == self._saved:
            return
        tmp = f"{self.state_path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.state_path)  # a snapshot never reads a half-written file
        self._saved = text
