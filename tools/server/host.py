"""`python -m tools.server --host`: one resident server per sandbox, a fresh process per episode.

Starting a Python tool server costs ~0.2 s of CPU (interpreter, jsonschema); rollouts of thousands of
short episodes would spend more on that than on everything else. So the host starts once per sandbox
and on `synth/begin` forks: the child closes the host's channel to the harness, loads the episode's
module (fresh globals) and serves the episode over a socket pair, through the host, which passes on
only well-formed replies to the requests it forwarded (tools/server/relay.py). The host itself runs
no episode code; it only compiles modules (cached by content; compiling runs no code) and relays.

The host hardens itself before anything else: it is not dumpable (no process of the sandbox, the
episodes' included, can open /proc/<host>/fd or /proc/<host>/mem or ptrace it) and it is a child
subreaper (whatever an episode starts stays the host's descendant, however it detaches). When an
episode ends (synth/end, its process dying, or its protocol broken), every process it started is
killed before the host answers (hygiene.end_descendants).

`process: "shared"` in synth/begin runs the episode inside the host instead, with a fresh module
object and state all the same: no fork and exit (4-5 ms of CPU per episode here). The episode's code
then runs in the process that holds the channel and the interpreter later episodes use: it is for
trusted modules only (tests/security lists the channels it leaves open). What it does to the process
beyond its own globals is checked after the episode (tools/server/hygiene.py), to catch accidents;
if anything changed, `synth/end` says so (`recycle`) and the host ends after it. Either way `random`
is seeded with the episode's seed, and a tool result over `max_result_chars` is cut and marked.

Methods, besides initialize and ping:
- host:  tools/list -> no tools; synth/begin {module, tools, state, state_file, seed, process,
  max_result_chars} -> {pid, host} (or an error naming why the module cannot serve the tools);
- episode: tools/list, tools/call; synth/snapshot -> {state}; synth/end -> {state} (shared:
  {state, recycle?: [reasons]}, and the host exits after it when recycle is there).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import random
import socket
import sys
from dataclasses import dataclass
from types import CodeType
from typing import Any, Callable

from tools.server.hygiene import ProcessBaseline, end_descendants, imported_modules
from tools.server.relay import ENDED, EOF, Relay
from tools.server.toolset import Toolset, contract_problems, module_from_code
from tools.server.wire import (INVALID_PARAMS, INVALID_REQUEST, MAX_RESULT_CHARS, LineChannel, RpcError, answer,
                               initialize, tool_result)


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
    max_result_chars: int = MAX_RESULT_CHARS


RECYCLE = "recycle"
ALWAYS_WATCHED = frozenset({"builtins", "sys", "os", "json", "random"})  # patched without being imported
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36


def private_channel() -> LineChannel:
    """The wire on fresh descriptors; fds 0 and 1 become /dev/null and stderr, so a module that
    prints or reads stdin (it or a process it starts) cannot corrupt the protocol."""
    channel = LineChannel(os.dup(0), os.dup(1))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return channel


def seal() -> None:
    """Not dumpable (same-uid processes cannot open our fds or memory, or ptrace us), and a child
    subreaper (orphans of an episode stay ours to kill). A host that cannot do both does not serve."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for option, value in ((PR_SET_DUMPABLE, 0), (PR_SET_CHILD_SUBREAPER, 1)):
        if libc.prctl(option, value, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed: the tool host cannot protect itself")


def _no_episode(params: dict[str, Any]) -> dict[str, Any]:
    raise RpcError(INVALID_REQUEST, "no episode is open on this tool host (it ended, or synth/begin failed)")


def run_host(channel: LineChannel) -> int:
    seal()
    host_id = f"{os.getpid()}-{os.urandom(4).hex()}"  # pids repeat across pid namespaces (bwrap)
    compiled: dict[str, tuple[CodeType, frozenset[str]]] = {}
    baseline = ProcessBaseline()
    gc.freeze()  # a collection in a child would touch (and so copy) every page it shares with the host
    handlers = {"initialize": initialize, "ping": lambda p: {}, "tools/list": lambda p: {"tools": []},
                "tools/call": _no_episode, "synth/snapshot": _no_episode, "synth/end": _no_episode}
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
        if episode.fork:
            if serve_forked(channel, message.get("id"), episode, host_id) == EOF:
                return 0
            continue
        watched = episode.imports | ALWAYS_WATCHED
        baseline.watch(watched)
        ending = run_episode(channel, message.get("id"), episode, host_id, lambda: baseline.leaks(watched),
                             at_end=end_descendants)
        if ending in (RECYCLE, EOF):
            end_descendants()
            return 0
    return 0


def serve_forked(channel: LineChannel, begin_id: Any, episode: Episode, host_id: str) -> str:
    """Fork the episode's process and relay to it until the episode ends; ENDED or EOF."""
    host_end, episode_end = socket.socketpair()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 70
        try:  # the harness's channel goes before any episode code runs: it never holds it
            os.close(channel.read_fd)
            os.close(channel.write_fd)
            host_end.close()
            gc.disable()  # a short life: reference counting frees what it makes
            run_episode(LineChannel(episode_end.fileno(), episode_end.fileno()), begin_id, episode, host_id)
            code = 0
        finally:
            sys.stderr.flush()
            os._exit(code)
    episode_end.close()
    return Relay(channel, host_end, pid, begin_id, episode.max_result_chars).run()


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
    limit = params.get("max_result_chars", MAX_RESULT_CHARS)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise RpcError(INVALID_PARAMS, "synth/begin: max_result_chars must be a positive integer")
    source = params["module"]
    key = hashlib.sha256(source.encode()).hexdigest()
    if key not in compiled:
        try:
            code = compile(source, "impl.py", "exec")
        except SyntaxError as e:
            raise RpcError(INVALID_PARAMS, f"toolset module does not compile: {e.msg} (line {e.lineno})") from e
        compiled[key] = code, imported_modules(code)
    return Episode(*compiled[key], tools, state, str(params.get("state_file") or "state.json"), seed,
                   fork=params.get("process", "per_episode") != "shared", max_result_chars=limit)


def run_episode(channel: LineChannel, begin_id: Any, episode: Episode, host_id: str,
                leaks: Callable[[], list[str]] | None = None, at_end: Callable[[], Any] | None = None) -> str:
    """Load a fresh module, answer begin, serve until synth/end (ENDED) or stdin closes (EOF).
    `leaks`: what the episode left in the process, asked at synth/end (RECYCLE when not empty);
    `at_end`: run before synth/end is answered (a shared host ends the episode's processes)."""
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
    handlers = episode_handlers(toolset, episode.max_result_chars)
    while (message := channel.receive()) is not None:
        if isinstance(message, RpcError):
            channel.error(None, message)
        elif message.get("method") == "synth/end":
            found = leaks() if leaks else []
            if at_end is not None:
                at_end()
            if found:
                print(f"tool host: episode left {'; '.join(found)}; the host ends", file=sys.stderr)
            channel.reply(message.get("id"), {"state": toolset.state, **({"recycle": found} if found else {})})
            return RECYCLE if found else ENDED
        else:
            answer(channel, message, handlers)
    return EOF


def episode_handlers(toolset: Toolset, max_result_chars: int = MAX_RESULT_CHARS) -> dict[str, Any]:
    """What a server over one toolset answers (an episode's process, and the one-shot server)."""
    listed = {"tools": list(toolset.tools.values())}

    def call(params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str):
            raise RpcError(INVALID_PARAMS, "tools/call needs params.name")
        return tool_result(*toolset.call(name, params.get("arguments")), max_result_chars)

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
