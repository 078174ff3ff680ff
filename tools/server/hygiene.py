"""What an episode run inside the tool host (`tool_process: shared`) left in the process.

A shared episode gets a fresh module object, a fresh state and a reseeded `random`. What it can
still leave for the sandbox's later episodes is process-wide:
- a thread still running;
- a changed working directory, environment or umask;
- in a module it imports (and always in builtins, sys, os, json and random), a function, class or
  module rebound (monkeypatching) or a public name added (stashing data).
The host checks these after every shared episode. If one changed, it ends after answering
`synth/end`, and the sandbox's next episode gets a new host: no later episode sees the change.

Not seen: mutations inside existing objects (appending to a list another module owns, say), and
what a module changes while it is first imported by the host's first episode that imports it.
`tool_process: per_episode` (a process per episode) has neither gap.
"""

from __future__ import annotations

import dis
import os
import sys
import threading
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
