"""What the adversarial suite runs inside sandboxes, and the harness side that drives it.

Every attack goes through the project's own code paths: a warm pool (`sandboxes/pool.py`) of one
sandbox, so consecutive episodes share it as pooled rollouts do, and `ExecutableToolset` talking to
the sandbox's tool host. The module under attack is `EXEC_MODULE`: its one tool `run(code)` execs
whatever code the test passes, which is the most a generated module could do.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from sandboxes.pool import WarmPool
from synth.core.errors import SandboxError, ToolError
from tools.executable import _HOSTS, ExecutableToolset
from tools.runtime import ToolOutcome
from synth.core.records import ToolSpec

EXEC_MODULE = '''STATE_DEFAULT = {}


def run(state, code):
    """Run `code` with `state` in scope; its `result` is the tool's result."""
    scope = {"state": state}
    exec(code, scope)
    return scope.get("result")
'''
EXEC_SPECS = [ToolSpec(name="run", description="Run Python code.", toolset_id="attack", toolset="attack",
                       inputSchema={"type": "object", "properties": {"code": {"type": "string"}},
                                    "required": ["code"], "additionalProperties": False})]

_seeded = random.Random(7)
EXPECTED_DRAWS = [_seeded.randint(1, 100) for _ in range(3)]

# Cross-episode channels: (what episode A plants, what episode B runs; B's result is "clean" unless
# it sees A). The first group lives in the interpreter: only a fresh process per episode closes it.
INTERPRETER_CHANNELS = {
    "builtins_private_name": ("import builtins; builtins._synth_leak = 'LEAK'",
                              "import builtins; result = getattr(builtins, '_synth_leak', 'clean')"),
    "stdlib_function_attribute": ("import json; json.dumps.synth_leak = 'LEAK'",
                                  "import json; result = getattr(json.dumps, 'synth_leak', 'clean')"),
    "stdlib_class_attribute": ("import fractions; fractions.Fraction.synth_leak = 'LEAK'",
                               "import fractions; result = getattr(fractions.Fraction, 'synth_leak', 'clean')"),
    "mutable_default": ("import copy; copy.deepcopy.__defaults__[-1].append('LEAK')",
                        "import copy; result = 'LEAK' if copy.deepcopy.__defaults__[-1] else 'clean'"),
    "sys_modules_entry": ("import sys, types; sys.modules['synth_leak'] = types.SimpleNamespace()",
                          "import sys; result = 'LEAK' if 'synth_leak' in sys.modules else 'clean'"),
    "c_environment": ("import os; os.putenv('SYNTH_LEAK', 'LEAK')",
                      "import subprocess\nresult = subprocess.run(['sh', '-c', 'printf %s ${SYNTH_LEAK:-clean}'],"
                      " capture_output=True).stdout.decode()"),
    "atexit_callback": ("import atexit; atexit.register(print, 'SYNTH-LEAK')",
                        "import atexit, contextlib, io\nout = io.StringIO()\nwith contextlib.redirect_stdout(out):\n"
                        "    atexit._run_exitfuncs()\nresult = 'LEAK' if 'SYNTH-LEAK' in out.getvalue() else 'clean'"),
    "gc_garbage": ("import gc; gc.garbage.append('LEAK')",
                   "import gc; result = 'LEAK' if 'LEAK' in gc.garbage else 'clean'"),
    "re_cache": ("import re; re.compile('SYNTH_LEAK_[0-9]+')",
                 "import re; result = 'LEAK' if any('SYNTH_LEAK_' in str(k) for k in re._cache) else 'clean'"),
    "decimal_context": ("import decimal; decimal.getcontext().prec = 7",
                        "import decimal; result = 'clean' if decimal.getcontext().prec == 28 else 'LEAK'"),
    "meta_path_finder": ("import sys\nclass SynthLeak:\n    def find_spec(self, *args):\n        return None\n"
                         "sys.meta_path.insert(0, SynthLeak())",
                         "import sys\nresult = 'LEAK' if any(type(f).__name__ == 'SynthLeak' for f in sys.meta_path)"
                         " else 'clean'"),
    "audit_hook": ("import sys\ndef hook(event, args):\n    if event == 'open' and 'synth_probe' in str(args[0]):\n"
                   "        raise PermissionError('blocked by episode A')\nsys.addaudithook(hook)",
                   "try:\n    open('synth_probe.txt', 'w').close()\n    result = 'clean'\n"
                   "except PermissionError:\n    result = 'LEAK'"),
    "patched_random": ("import random; random.Random._randbelow = lambda self, n: 0",
                       f"import random\nr = random.Random(7)\n"
                       f"result = 'clean' if [r.randint(1, 100) for _ in range(3)] == {EXPECTED_DRAWS} else 'LEAK'"),
    "rebound_runner_function": ("import sys; sys.modules['tools.server.toolset'].render = lambda r: 'FORGED-BY-A'",
                                "result = 'clean'"),
    "hygiene_switched_off": ("import json, sys\nf = sys._getframe()\nwhile f is not None:\n"
                             "    if 'baseline' in f.f_locals:\n        f.f_locals['baseline'].leaks = lambda names: []\n"
                             "    f = f.f_back\njson.synth_stash = 'LEAK'",
                             "import json; result = getattr(json, 'synth_stash', 'clean')"),
}


def _file_channel(path: str) -> tuple[str, str]:
    return (f"import os\np = os.path.expanduser({path!r})\nwith open(p, 'w') as f:\n    f.write('LEAK')",
            f"import os\np = os.path.expanduser({path!r})\nresult = open(p).read() if os.path.exists(p) else 'clean'")


SURVIVOR_MARK = str(6_000_000 + uuid.uuid4().int % 1_000_000)  # `sleep <this>`: unique to this test session
SANDBOX_CHANNELS = {
    "tmp_file": _file_channel("/tmp/synth_leak"),
    "dev_shm_file": _file_channel("/dev/shm/synth_leak"),
    "home_file": _file_channel("~/synth_leak"),
    "workspace_file": _file_channel("synth_leak"),
    "survivor_process": (
        "import subprocess\nsubprocess.Popen(['sh', '-c', '(sleep " + SURVIVOR_MARK + " &) ; exit 0'], "
        "start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).wait()",
        "import os\nseen = []\nfor p in os.listdir('/proc'):\n    try:\n"
        "        seen.append(open(f'/proc/{p}/cmdline', 'rb').read())\n    except OSError:\n        pass\n"
        "result = 'LEAK' if any(b'" + SURVIVOR_MARK + "' in c for c in seen) else 'clean'"),
}
SANDBOX_CHANNELS |= {
    # System V shared memory and POSIX message queues live in the IPC namespace, not in files.
    "sysv_shared_memory": (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.shmget(0x5EC18, 4096, 0o1600) < 0:\n    raise OSError(ctypes.get_errno(), 'shmget')",
        "import ctypes\nresult = 'LEAK' if ctypes.CDLL(None).shmget(0x5EC18, 0, 0) >= 0 else 'clean'"),
    "posix_message_queue": (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.mq_open(b'/synth_leak', os.O_CREAT | os.O_RDWR, 0o600, None) < 0:\n"
        "    raise OSError(ctypes.get_errno(), 'mq_open')",
        "import ctypes, os\nresult = 'LEAK' if ctypes.CDLL(None).mq_open(b'/synth_leak', os.O_RDONLY) >= 0 else 'clean'"),
}
CHANNELS = {**INTERPRETER_CHANNELS, **SANDBOX_CHANNELS}

# A process that answers for the tool host: it stops every tool host it can see and writes replies
# for the next few hundred request ids to every pipe it holds or can open through /proc, for a minute.
FORGER = r'''
import json, os, signal, sys, time
me = os.getpid()
def line(i):
    result = {"content": [{"type": "text", "text": "FORGED"}], "isError": False, "state": {"forged": True},
              "pid": 1, "host": "forged", "protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {}}
    return (json.dumps({"jsonrpc": "2.0", "id": i, "result": result}) + "\n").encode()
payload = b"".join(line(i) for i in range(1, 300))
deadline = time.time() + 60
while time.time() < deadline:
    for fd in range(3, 64):
        try:
            os.write(fd, payload)
        except OSError:
            pass
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == me:
            continue
        try:
            if b"tools.server" not in open(f"/proc/{p}/cmdline", "rb").read():
                continue
            os.kill(int(p), signal.SIGSTOP)
        except OSError:
            continue
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                w = os.open(f"/proc/{p}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
                os.write(w, payload)
                os.close(w)
            except OSError:
                pass
    time.sleep(0.02)
'''


def spawn_forger(mark: str) -> str:
    """Code for episode A: start FORGER detached (its own session, double-forked), then return."""
    return ("import subprocess, sys\n"
            f"subprocess.Popen([sys.executable, '-c', {FORGER!r}, {mark!r}], start_new_session=True,"
            " stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\nresult = 'planted'")


def become_forger(mark: str) -> str:
    """Code for episode A: the process serving the episode turns into FORGER (same pid, same parent)."""
    return f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {FORGER!r}, {mark!r}])"


def write_replies(reply: dict[str, Any]) -> str:
    """Code that writes `{"jsonrpc": "2.0", "id": i, **reply}` for ids 1..299 to every descriptor of its
    process: the channel to the harness itself when the episode runs in the host (shared)."""
    return ("import json, os\n"
            f"extra = {reply!r}\n"
            "payload = b''.join((json.dumps({'jsonrpc': '2.0', 'id': i, **extra}) + '\\n').encode() for i in range(1, 300))\n"
            "for fd in map(int, os.listdir('/proc/self/fd')):\n"
            "    try:\n        os.write(fd, payload)\n    except OSError:\n        pass\n"
            "result = 'written'")


@dataclass
class Episode:
    sandbox: str
    host: str | None = None
    outcomes: list[ToolOutcome | BaseException] = field(default_factory=list)
    final: dict[str, Any] | BaseException | None = None

    @property
    def texts(self) -> list[str]:
        return [o.text if isinstance(o, ToolOutcome) else f"<{type(o).__name__}: {o}>" for o in self.outcomes]

    @property
    def ok(self) -> bool:
        return all(isinstance(o, ToolOutcome) and not o.is_error for o in self.outcomes) and isinstance(self.final, dict)


class Arena:
    """One warm pool of one sandbox, and episodes run on it one after another."""

    def __init__(self, backend: str, mode: str, pool: WarmPool):
        self.backend, self.mode, self.pool = backend, mode, pool

    def __repr__(self) -> str:
        return f"Arena({self.backend}, {self.mode})"

    async def episode(self, *codes: str, parallel: bool = False, tool_timeout: float = 10.0,
                      end_timeout: float = 5.0, **toolset: Any) -> Episode:
        """Run `codes` as calls of one episode (at once with `parallel`), as the rollout does: a call
        that runs out of time is an error result; an episode that fails is kept as its exception."""
        async with self.pool.acquire() as sb:
            episode = Episode(sandbox=sb.id)
            rt = ExecutableToolset(EXEC_SPECS, sb, module=EXEC_MODULE, process=self.mode, end_timeout=end_timeout,
                                   **toolset)
            try:
                await rt.reset({})
                episode.host = rt.episode_process.get("host")
                calls = [self._call(rt, code, tool_timeout) for code in codes]
                if parallel:
                    episode.outcomes = list(await asyncio.gather(*calls))
                else:
                    episode.outcomes = [await call for call in calls]
                episode.final = await rt.finish()
            except (ToolError, SandboxError) as e:
                episode.final = e
            finally:
                await rt.aclose(clean=False)
            return episode

    @staticmethod
    async def _call(rt: ExecutableToolset, code: str, timeout: float) -> ToolOutcome | BaseException:
        try:
            async with asyncio.timeout(timeout):
                return await rt.call("run", {"code": code})
        except TimeoutError:
            return ToolOutcome(text=f"Error: no answer within {timeout:g} s", is_error=True)
        except ToolError as e:
            return e

    async def replace_host(self) -> None:
        """End the sandbox's tool host, so what a shared episode did to it stays in this test."""
        async with self.pool.acquire() as sb:
            if (host := _HOSTS.get(sb)) is not None:
                await host.close()

    async def survivors(self, mark: str, settle_s: float = 5.0) -> list[str]:
        """Processes matching `mark` still there after the reset, allowing `settle_s` for ones killed
        a moment ago to finish exiting."""
        deadline = asyncio.get_running_loop().time() + settle_s
        while True:
            found = [p for p in await self.processes() if mark in p]
            if not found or asyncio.get_running_loop().time() > deadline:
                return found
            await asyncio.sleep(0.2)

    async def processes(self) -> list[str]:
        """"name<TAB>command line" of the live (not zombie) processes that could belong to the sandbox,
        once its last reset is done: local, every process on this machine; docker, the container's."""
        async with self.pool.acquire() as sb:
            return await self.processes_of(sb)

    async def processes_of(self, sb: Any) -> list[str]:
        """The same, of a sandbox in hand (no reset first)."""
        if self.backend == "local":
            return await asyncio.to_thread(machine_processes)
        script = ("for d in /proc/[0-9]*; do read -r _ _ s _ < $d/stat 2>/dev/null; [ \"$s\" = Z ] && continue; "
                  "printf '%s\\t' \"$(cat $d/comm)\"; tr '\\0' ' ' < $d/cmdline; echo; done")
        return (await sb.exec(["sh", "-c", script])).stdout.splitlines()


def machine_processes() -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        continue
                with open(f"/proc/{pid}/comm") as f:
                    comm = f.read().strip()
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
                out.append(f"{comm}\t{cmdline}")
            except OSError:
                pass
    return out


def findings(text: str) -> dict[str, Any]:
    return json.loads(text)
