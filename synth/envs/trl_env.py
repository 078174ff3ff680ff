"""TRL's GRPOTrainer `environment_factory`: one environment class per exported toolset.

TRL makes one instance per rollout and lists its public methods as the rollout's tools (their
names, type hints and Google-style docstrings become the tool schema), calls `reset(**row)`, whose
string it appends to the prompt's last user message, then the tools, then `get_reward()`. Here
`reset` starts an `EpisodeSession` (sandbox + tool runtime + user simulator) for the row, each
tool method runs that tool in the sandbox, and `get_reward` is judges/reward.py on what the
episode did (the calls and the final state; TRL does not show the environment the assistant's text).

TRL calls these methods synchronously; the sessions' sandboxes and pipes live on one background
event loop per process (`_loop`), and sessions still open at exit are closed there.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import itertools
import json
import keyword
import threading
from typing import Any, Callable, Iterable

from synth.envs.session import EnvironmentOptions, EpisodeSession, check_rewardable
from synth.core.errors import ConfigError

_PY_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool, "array": list,
                             "object": dict}


class _Loop:
    """A daemon thread running the event loop that every session of this process uses."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self.open: set[EpisodeSession] = set()

    def run(self, coroutine) -> Any:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="synth-envs", daemon=True).start()
                atexit.register(self.close_all)
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close_all(self) -> None:
        async def close() -> None:
            await asyncio.gather(*(s.close() for s in list(self.open)), return_exceptions=True)

        if self._loop is not None and self.open:
            self.run(close())


_loop = _Loop()
_episodes = itertools.count()


def python_type(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the first non-null type, optional
        kinds = [k for k in kind if k != "null"]
        base = python_type({**schema, "type": kinds[0] if kinds else "string"})
        return base | None
    if kind == "array" and isinstance(schema.get("items"), dict) and schema["items"].get("type") in _PY_TYPES:
        return list[python_type(schema["items"])]
    return _PY_TYPES.get(kind, str)


def tool_method(function: dict[str, Any]) -> Callable[..., str]:
    """A method named after the tool whose signature, type hints and docstring say what its schema says."""
    name, parameters = function["name"], function.get("parameters") or {}
    properties, required = parameters.get("properties") or {}, set(parameters.get("required") or [])
    bad = [p for p in properties if not p.isidentifier() or keyword.iskeyword(p)]
    if bad or not name.isidentifier():
        raise ConfigError(f"tool {name!r} cannot be a Python method (argument names {bad or 'fine'}): TRL's "
                          "environment_factory needs identifiers; rename them in the toolset")

    def method(self, **arguments: Any) -> str:
        return self._call(name, arguments)

    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    annotations: dict[str, Any] = {}
    ordered = sorted(properties, key=lambda p: p not in required)  # required first: defaults come last
    for param in ordered:
        annotations[param] = python_type(properties[param])
        params.append(inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, annotation=annotations[param],
                                        default=inspect.Parameter.empty if param in required else None))
    annotations["return"] = str
    method.__name__ = method.__qualname__ = name
    method.__signature__ = inspect.Signature(params, return_annotation=str)  # type: ignore[attr-defined]
    method.__annotations__ = annotations
    method.__doc__ = _docstring(function.get("description") or name, properties)
    return method


def _docstring(description: str, properties: dict[str, Any]) -> str:
    lines = [description.strip() or "A tool.", "", "Args:"]
    for param, schema in properties.items():
        text = " ".join((schema.get("description") or param.replace("_", " ")).split())
        if schema.get("enum"):
            text += f" (choices: {json.dumps(schema['enum'])})"
        lines.append(f"    {param}: {text}")
    lines += ["", "Returns:", "    The tool's result (an error is reported as text)."]
    return "\n".join(lines)


class ToolEnvironment:
    """Base of the generated classes: reset, get_reward and the call path their tool methods share."""

    options = EnvironmentOptions()

    def __init__(self) -> None:
        self._session: EpisodeSession | None = None

    def reset(self, **row: Any) -> str:
        """Provision the row's environment (ending the previous episode); the user's opening message."""
        self._close()
        session = EpisodeSession(self.options, next(_episodes))
        _loop.open.add(session)
        self._session = session
        return _loop.run(session.start(row))

    def get_reward(self) -> float:
        """judges/reward.py on the episode: 0 when a check fails, else 1 (or the judge score with the judge)."""
        if self._session is None:
            raise RuntimeError("get_reward() before reset()")
        result = _loop.run(self._session.reward())
        self.last_reward = result
        self._close()
        return result.reward

    def _call(self, name: str, arguments: dict[str, Any]) -> str:
        if self._session is None:
            raise RuntimeError(f"{name}() before reset()")
        return _loop.run(self._session.call(name, arguments))

    def _close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            _loop.open.discard(session)
            _loop.run(session.close())


def environment_class(name: str, tools: list[dict[str, Any]], options: EnvironmentOptions | None = None) -> type:
    """A ToolEnvironment subclass whose public methods are `tools` (OpenAI function specs)."""
    namespace: dict[str, Any] = {"options": options or EnvironmentOptions(), "__doc__": f"synth environment {name}"}
    for tool in tools:
        function = tool.get("function", tool)
        if function["name"] in ("reset", "get_reward") or function["name"].startswith("_"):
            raise ConfigError(f"tool name {function['name']!r} clashes with the environment's own methods")
        namespace[function["name"]] = tool_method(function)
    class_name = "".join(part.capitalize() for part in name.split("_") if part) or "Toolset"
    return type(class_name, (ToolEnvironment,), namespace)


def trl_environments(rows: Iterable[dict[str, Any]], options: EnvironmentOptions | None = None) -> dict[str, type]:
    """`environment_factory` for GRPOTrainer: {environment name: class}, one per distinct `environment`
    of the RL rows (TRL routes each row by its `environment` column)."""
    rows = list(rows)
    check_rewardable(rows, options or EnvironmentOptions())
    classes: dict[str, type] = {}
    for row in rows:
        if row["environment"] not in classes:
            classes[row["environment"]] = environment_class(row["environment"], row["tools"], options)
    if not classes:
        raise ConfigError("no RL rows: export a run with tasks first (synth export)")
    return classes
