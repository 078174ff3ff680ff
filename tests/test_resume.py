"""kill -9 in the middle of rollouts, then rerun: nothing duplicated, nothing lost, nothing resent."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from synth.core.llm_cache import ResponseCache
from synth.user_sim import STOP

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def fake_endpoint_process(log: Path) -> Iterator[str]:
    """The scripted endpoint in a process of its own (a kill -9 of the run leaves it serving), logging
    every request body to `log`, users stopping after 3 turns: yields its base URL."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_openai", "--port", str(port), "--latency-ms", "40", "--log", str(log),
         "--stop-marker", STOP, "--stop-after", "3"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 20, "the fake endpoint")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.kill()
        server.wait()


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def kill_mid_rollout(argv: list[str], run_dir: Path, workers: int) -> None:
    """Start `synth run` (argv), SIGKILL it once 2 trajectories are on disk: the whole process group with
    one worker; with several, only the parent, whose workers must notice and end themselves."""
    first = subprocess.Popen(argv, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(lambda: len(jsonl(run_dir / "trajectories.jsonl")) >= 2 or first.poll() is not None, 120,
             "the first trajectories")
    assert first.poll() is None, f"the run ended before it could be killed: {first.stderr.read().decode()}"
    if workers == 1:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        return
    spawned = [pid for pid in children(first.pid) if b"synth.rollout_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(spawned) == workers, spawned
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    wait_for(lambda: all(gone(pid) for pid in spawned), 20, "the orphaned workers to exit")


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_mid_rollout_resumes_without_duplicates_losses_or_resent_calls(tmp_path, workers):
    log = tmp_path / "requests.jsonl"
    with fake_endpoint_process(log) as base_url:
        config = tmp_path / "run.yaml"
        config.write_text(yaml.safe_dump({
            "name": "killed", "runs_dir": str(tmp_path / "runs"),
            "llm": {"base_url": base_url, "model": "fake"},
            "tools": {"categories": 2, "domains_per_category": 1, "toolsets_per_domain": 1, "tools_per_toolset": 2},
            "tasks": {"per_agent": 3, "rubric_items": 2, "world": False},
            "rollout": {"samples_per_task": 2, "max_turns": 3, "max_tool_steps": 2, "concurrency": 2,
                        "workers": workers, "sandbox": {"type": "local", "isolation": "none", "root": str(tmp_path / "sandboxes")}},
        }))
        run_dir = tmp_path / "runs" / "killed"
        argv = [sys.executable, str(REPO / "cli.py"), "run", str(config), "--quiet", "--allow-empty"]  # resume, not yield

        kill_mid_rollout(argv, run_dir, workers)
        left_behind = list((tmp_path / "sandboxes").glob("synth-local-*"))
        finished_calls = ResponseCache(run_dir / "cache").keys()
        sent_before = len(log.read_text().splitlines())
        done_before = {t["id"] for t in jsonl(run_dir / "trajectories.jsonl")}

        second = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr

        tasks = jsonl(run_dir / "tasks.jsonl")
        trajectories = jsonl(run_dir / "trajectories.jsonl")
        assert len(trajectories) == 2 * len(tasks), "every episode was finished exactly once"
        assert done_before < {t["id"] for t in trajectories}
        for kind in ("tools", "agents", "tasks", "trajectories", "verdicts", "errors"):
            ids = [r["id"] for r in jsonl(run_dir / f"{kind}.jsonl")]
            assert len(ids) == len(set(ids)), f"duplicate ids in {kind}.jsonl"
        assert {(t["task_id"], t["sample"]) for t in trajectories} == {(t["id"], s) for t in tasks for s in (0, 1)}

        cache = ResponseCache(run_dir / "cache")
        resent = [body for body in map(json.loads, log.read_text().splitlines()[sent_before:])
                  if cache.key(body) in finished_calls]
        assert resent == [], "an LLM call answered before the kill was sent again"
        assert len(log.read_text().splitlines()) > sent_before, "the rerun did the remaining work"
        assert left_behind, "the kill left the in-flight episodes' workspaces behind"
        assert not list((tmp_path / "sandboxes").glob("synth-local-*")), "the rerun removed them"
