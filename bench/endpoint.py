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


def cpu_seconds(pid: int) -> float:
    """utime + stime of another process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
