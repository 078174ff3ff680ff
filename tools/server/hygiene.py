"""What an episode left behind in the tool host: processes (both modes), and in the host's own
interpreter (`tool_process: shared`).

Processes: the host is a child subreaper (tools/server/host.py), so whatever an episode starts stays
its descendant, double-forked or in a session of its own; `end_descendants` kills them all after
every episode, before the host answers `synth/end`.

The interpreter: a shared episode gets a fresh module object, a fresh state and a reseeded `random`. What it can
still leave for the sandbox's later episodes is process-wide:
- a thread still running;
- a changed working directory, environment or umask;
- in a module it imports (and always in builtins, sys, os, json and random), a function, class or
  module rebound (monkeypatching) or a public name added (stashing data).
The host checks these after every shared episode. If one changed, it ends after answering
`synth/end`, and the sandbox's next episode gets a new host: no later episode sees the change.

This check runs inside the interpreter it checks, so it catches accidents of trusted code, not an
adversary: mutations inside existing objects (a mutable default, `sys.meta_path`, `gc.garbage`),
private names, attributes of functions, C-level state (`os.putenv`, audit hooks, the decimal
context) and the check itself (reached through frames) are all beyond it; tests/security lists
them. `tool_process: per_episode` (a fresh process per episode, the default) has none of these gaps.
"""

from __future__ import annotations

import dis
import os
import signal
import sys
import threading
import time
from types import CodeType, FunctionType, ModuleType
from typing import Any

Fingerprint = tuple[frozenset[str], list[tuple[str, Any]]]  # all names; the public callables and modules


def imported_modules(code: CodeType) -> frozenset[str]:
    """Every module name an import statement in the code names, in nested functions too, with
    the packages above it ("os.path" -> "os.path", "os")."""
    names: set[str] = set()
    stack = [code]
    while stack:
        current = stack.pop()
        for instruction in dis.get_instructions(current):
            if instruction.opname == "IMPORT_NAME" and isinstance(instruction.argval, str):
                parts = instruction.argval.split(".")
                names.update(".".join(parts[: i + 1]) for i in range(len(parts)))
        stack.extend(c for c in current.co_consts if isinstance(c, CodeType))
    return frozenset(names)


def fingerprint(module: ModuleType) -> Fingerprint:
    # Data attributes change in normal use (tempfile.tempdir, caches); rebinding a function or class is a patch.
    names = vars(module)
    return frozenset(names), [(k, v) for k, v in names.items() if not k.startswith("_") and _patchable(v)]


def _patchable(value: Any) -> bool:
    return isinstance(value, (FunctionType, type, ModuleType)) or callable(value)


class ProcessBaseline:
    """The host process as it was before any episode ran in it."""

    def __init__(self) -> None:
        self.threads = threading.active_count()
        self.cwd = os.getcwd()
        self.environ = dict(os.environ)
        self.umask = _umask()
        self._modules: dict[str, Fingerprint] = {}

    def watch(self, names: frozenset[str]) -> None:
        """Fingerprint the already imported modules among `names` (before the episode runs)."""
        for name in names:
            if name not in self._modules and isinstance(module := sys.modules.get(name), ModuleType):
                self._modules[name] = fingerprint(module)

    def leaks(self, names: frozenset[str]) -> list[str]:
        """What differs now from the baseline, as reasons; modules first imported by this episode
        are fingerprinted now, for the next ones."""
        found = []
        if (threads := threading.active_count()) > self.threads:
            found.append(f"{threads - self.threads} thread(s) still running")
        if os.getcwd() != self.cwd:
            found.append(f"working directory changed to {os.getcwd()}")
        if os.environ != self.environ:
            changed = sorted(set(os.environ.items()) ^ set(self.environ.items()))
            found.append(f"environment changed ({', '.join(sorted({k for k, _ in changed}))})")
        if _umask() != self.umask:
            found.append("umask changed")
        for name in sorted(names):
            module = sys.modules.get(name)
            if not isinstance(module, ModuleType):
                continue
            if name not in self._modules:
                self._modules[name] = fingerprint(module)
                continue
            names_before, patchable = self._modules[name]
            names_now = vars(module)
            if added := sorted(k for k in names_now.keys() - names_before if not k.startswith("_")):
                found.append(f"module {name} gained {added}")
            if rebound := [k for k, v in patchable if names_now.get(k, v) is not v]:
                found.append(f"module {name}: {rebound} rebound")
        return found


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def end_descendants(root: int | None = None, rounds: int = 50) -> int:
    """SIGKILL every process descended from `root` (this one by default) and reap what becomes ours;
    repeat until none is left (a forking process may add children while the first ones die).
    Returns how many were killed."""
    root = os.getpid() if root is None else root
    killed = 0
    for round_ in range(rounds):
        if round_:
            time.sleep(0.001 * min(round_, 20))  # SIGKILL is delivered at once, dying takes a moment
        found = _descendants(root)
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed += len(found)
        _reap()
        if not found:
            return killed
    raise RuntimeError(f"processes keep appearing under {root} after {rounds} rounds of SIGKILL")


def _descendants(root: int) -> list[int]:
    """Live descendants of `root`: down the task/*/children files (cheap), or from all of /proc where
    the kernel has no such files (without the host's pid namespace, /proc is the whole machine's)."""
    if not _HAS_CHILDREN_FILES:
        return _descendants_by_scan(root)
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # gone meanwhile
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue  # a thread that ended meanwhile
            found += children
            stack += children
    return [pid for pid in found if not _zombie(pid)]


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True  # gone: nothing to kill
    return stat[stat.rindex(b")") + 2:].split()[0] == b"Z"


def _descendants_by_scan(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        state, ppid = stat[stat.rindex(b")") + 2:].split()[:2]
        if state != b"Z":
            children.setdefault(int(ppid), []).append(int(entry))
    found, stack = [], list(children.get(root, []))
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


_HAS_CHILDREN_FILES = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
