"""What the benches share: a scripted endpoint in its own process, free ports, another process's CPU time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def start_server(module: str, port: int, latency_ms: float, pin: bool) -> subprocess.Popen:
    """`python -m MODULE --port P --latency-ms L` (tests.fake_openai or bench.fake_server), once it listens."""
    server = subprocess.Popen([sys.executable, "-m", module, "--port", str(port), "--latency-ms", str(latency_ms)],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if pin:  # the harness keeps CPU 0 to itself, so its CPU figures are its own
        os.sched_setaffinity(server.pid, {1})
    deadline = time.monotonic() + 20
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise SystemExit("the fake endpoint did not start")
        time.sleep(0.05)
    return server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int, waited: bool = False) -> float:
    """utime + stime of another process, from /proc (Linux); `waited`: plus its waited-for children's."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15 if waited else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int | str = "self") -> list[int]:
    """The running children of a process, from /proc (Linux)."""
    pids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            pids += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            pass  # a thread that ended meanwhile (the executor's come and go)
    return pids
