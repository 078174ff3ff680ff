"""`python -m tools.server --host`: one resident server per sandbox, a fresh process per episode.

Starting a Python tool server costs ~0.2 s of CPU (interpreter, jsonschema); rollouts of thousands of
short episodes would spend more on that than on everything else. So the host starts once per sandbox
and on `synth/begin` forks: the child loads the episode's module (fresh globals), takes the MCP
session over, serves the episode until `synth/end` and exits. An episode's state lives and dies with
its child; the parent only compiles modules (cached by content; compiling runs no code) and waits.

A child that ends any other way (a module calling os._exit, an OOM kill) ends the host too: the pipe
closes, every pending request fails at once, and the client starts a new host.

`process: "shared"` in synth/begin runs the episode inside the host instead, with a fresh module
object and state all the same: no fork and exit (4-5 ms of CPU per episode here, ~0.4 ms per LLM
call in bench/rollout.py). What a module could do to the process beyond its own globals (threads,
the working directory, patching a module it imports) is checked after the episode
(tools/server/hygiene.py); if anything changed, `synth/end` says so (`recycle`) and the host ends
after it, so the sandbox's next episode gets a new host. Either way `random` is seeded with the
episode's seed.

Methods, besides initialize and ping:
- host:  tools/list -> no tools; synth/begin {module, tools, state, state_file, seed, process} ->
  {pid, host} (or an error naming why the module cannot serve the tools);
- child: tools/list, tools/call; synth/snapshot -> {state}; synth/end -> {state}, then it exits
  (shared: {state, recycle?: [reasons]}, and the host exits after it when recycle is there).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import random
import sys
from dataclasses import dataclass
from types import CodeType
from typing import Any, Callable

from tools.server.hygiene import ProcessBaseline, imported_modules
from tools.server.toolset import Toolset, contract_problems, module_from_code
from tools.server.wire import INVALID_PARAMS, LineChannel, RpcError, answer, initialize, tool_result

@dataclass
class Episode:
    """What synth/begin asked for."""

    code: CodeType
    imports: frozenset[str]  # the modules it imports: what a shared episode's hygiene check looks at
    tools: list[dict[str, Any]]
    state: dict[str, Any]
    state_file: str
    seed: int | None
    fork: bool  # a process of its own (process "per_episode", the default), or the host's ("shared")


ENDED, EOF, RECYCLE = "ended", "eof", "recycle"
ALWAYS_WATCHED = frozenset({"builtins", "sys", "os", "json", "random"})  # patched without being imported


def private_channel() -> LineChannel:
    """The wire on fresh descriptors; fds 0 and 1 become /dev/null and stderr, so a module that
    prints or reads stdin (it or a process it starts) cannot corrupt the protocol."""
    channel = LineChannel(os.dup(0), os.dup(1))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return channel


def run_host(channel: LineChannel) -> int:
    host_id = f"{os.getpid()}-{os.urandom(4).hex()}"  # pids repeat across pid namespaces (bwrap)
    compiled: dict[str, tuple[CodeType, frozenset[str]]] = {}
    baseline = ProcessBaseline()
    gc.freeze()  # a collection in a child would touch (and so copy) every page it shares with the host
    handlers = {"initialize": initialize, "ping": lambda p: {}, "tools/list": lambda p: {"tools": []}}
    while (message := channel.receive()) is not None:
        if isinstance(message, RpcError):
            channel.error(None, message)
            continue
        if message.get("method") != "synth/begin":
            answer(channel, message, handlers)
            continue
        try:
            episode = prepare(message.get("params"), compiled)
        except RpcError as e:
            channel.error(message.get("id"), e)
            continue
        if not episode.fork:
            watched = episode.imports | ALWAYS_WATCHED
            baseline.watch(watched)
            ending = run_episode(channel, message.get("id"), episode, host_id, lambda: baseline.leaks(watched))
            if ending in (RECYCLE, EOF):
                return 0
            continue
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            gc.disable()  # a short life: reference counting frees what it makes
            code = 70
            try:
                run_episode(channel, message.get("id"), episode, host_id)
                code = 0
            finally:
                sys.stderr.flush()
                os._exit(code)
        channel.buffer = b""  # anything read ahead belongs to the child's episode, which consumed it
        _, status = os.waitpid(pid, 0)
        if status != 0:
            print(f"episode process {pid} ended abnormally (wait status {status}); the host stops",
                  file=sys.stderr)
            return 1
    return 0


def prepare(params: Any, compiled: dict[str, tuple[CodeType, frozenset[str]]]) -> Episode:
    """Check begin's params and compile the module (cached: episodes of one toolset share it)."""
    if not isinstance(params, dict) or not isinstance(params.get("module"), str):
        raise RpcError(INVALID_PARAMS, "synth/begin needs params {module: str, tools: list, state: object}")
    tools, state, seed = params.get("tools"), params.get("state") or {}, params.get("seed")
    if not isinstance(tools, list) or not all(isinstance(t, dict) and "name" in t for t in tools):
        raise RpcError(INVALID_PARAMS, "synth/begin: tools must be a list of MCP tool objects")
    if not isinstance(state, dict):
        raise RpcError(INVALID_PARAMS, "synth/begin: state must be an object")
    if seed is not None and not isinstance(seed, int):
        raise RpcError(INVALID_PARAMS, "synth/begin: seed must be an integer")
    source = params["module"]
    key = hashlib.sha256(source.encode()).hexdigest()
    if key not in compiled:
        try:
            code = compile(source, "impl.py", "exec")
        except SyntaxError as e:
            raise RpcError(INVALID_PARAMS, f"toolset module does not compile: {e.msg} (line {e.lineno})") from e
        compiled[key] = code, imported_modules(code)
    return Episode(*compiled[key], tools, state, str(params.get("state_file") or "state.json"), seed,
                   fork=params.get("process", "per_episode") != "shared")


def run_episode(channel: LineChannel, begin_id: Any, episode: Episode, host_id: str,
                leaks: Callable[[], list[str]] | None = None) -> str:
    """Load a fresh module, answer begin, serve until synth/end (ENDED) or stdin closes (EOF).
    `leaks`: what the episode left in the process, asked at synth/end (RECYCLE when not empty)."""
    random.seed(episode.seed)  # the module's randomness repeats with the episode, whatever ran before
    try:
        module = module_from_code(episode.code)
        problems = contract_problems(module, episode.tools)
    except Exception as e:  # the module's top level raised
        problems = [f"loading the module raised {type(e).__name__}: {e}"]
    if problems:
        channel.error(begin_id, RpcError(INVALID_PARAMS, "toolset module does not fit its tools:\n" + "\n".join(problems)))
        return ENDED
    toolset = Toolset(module, episode.tools, episode.state_file, initial_state=episode.state)
    channel.reply(begin_id, {"pid": os.getpid(), "host": host_id})
    handlers = episode_handlers(toolset)
    while (message := channel.receive()) is not None:
        if isinstance(message, RpcError):
            channel.error(None, message)
        elif message.get("method") == "synth/end":
            found = leaks() if leaks else []
            if found:
                print(f"tool host: episode left {'; '.join(found)}; the host ends", file=sys.stderr)
            channel.reply(message.get("id"), {"state": toolset.state, **({"recycle": found} if found else {})})
            return RECYCLE if found else ENDED
        else:
            answer(channel, message, handlers)
    return EOF


def episode_handlers(toolset: Toolset) -> dict[str, Any]:
    """What a server over one toolset answers (the host's child, and the one-shot server)."""
    listed = {"tools": list(toolset.tools.values())}

    def call(params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str):
            raise RpcError(INVALID_PARAMS, "tools/call needs params.name")
        return tool_result(*toolset.call(name, params.get("arguments")))

    return {"initialize": initialize, "ping": lambda p: {}, "tools/list": lambda p: listed,
            "tools/call": call, "synth/snapshot": lambda p: {"state": toolset.state}}


def serve_once(channel: LineChannel, toolset: Toolset) -> int:
    """The one-shot server: one toolset over its state file until EOF."""
    handlers = episode_handlers(toolset)
    while (message := channel.receive()) is not None:
        if isinstance(message, RpcError):
            channel.error(None, message)
        else:
            answer(channel, message, handlers)
    return 0


def warm_up() -> None:
    """Import what episodes use lazily now, once, instead of in every child."""
    import jsonschema

    validator = jsonschema.Draft202012Validator({"type": "object", "properties": {"x": {"type": "integer"}}})
    jsonschema.exceptions.best_match(validator.iter_errors({"x": "no"}))
    json.dumps({})
