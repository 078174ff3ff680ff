"""tools/server/hygiene.py: what a shared episode leaves in the tool host's process is named."""

from __future__ import annotations

import json
import os
import threading

import pytest

from tools.server.hygiene import ProcessBaseline, imported_modules


def test_imports_are_found_in_nested_functions_with_their_packages():
    code = compile("import json\nfrom os import path\ndef f():\n    import xml.dom.minidom as m\n", "m.py", "exec")
    assert imported_modules(code) == {"json", "os", "xml", "xml.dom", "xml.dom.minidom"}


def test_a_clean_episode_leaves_nothing():
    baseline = ProcessBaseline()
    baseline.watch(frozenset({"json", "os"}))
    json.loads(json.dumps({"a": [1, 2]}))  # using a module is not changing it
    assert baseline.leaks(frozenset({"json", "os"})) == []


def test_a_patched_or_stashed_module_is_named(monkeypatch):
    baseline = ProcessBaseline()
    baseline.watch(frozenset({"json"}))
    monkeypatch.setattr(json, "dumps", lambda *a, **k: "{}")
    monkeypatch.setattr(json, "stash", {"secret": 1}, raising=False)
    assert baseline.leaks(frozenset({"json"})) == ["module json gained ['stash']", "module json: ['dumps'] rebound"]


def test_threads_cwd_and_environment_are_named(monkeypatch, tmp_path):
    baseline = ProcessBaseline()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("SYNTH_HYGIENE_TEST", "1")
        leaks = baseline.leaks(frozenset())
    finally:
        stop.set()
        thread.join()
    assert leaks == ["1 thread(s) still running", f"working directory changed to {tmp_path}",
                     "environment changed (SYNTH_HYGIENE_TEST)"]
    monkeypatch.undo()
    assert baseline.leaks(frozenset()) == []


def test_a_module_first_imported_by_an_episode_is_watched_from_then_on():
    import importlib
    import sys

    name = "wave"  # stdlib, and not imported by the test run before this
    sys.modules.pop(name, None)
    baseline = ProcessBaseline()
    baseline.watch(frozenset({name}))  # not imported yet: nothing to fingerprint
    module = importlib.import_module(name)
    assert baseline.leaks(frozenset({name})) == []  # fingerprinted now
    module.stash = 1
    try:
        assert baseline.leaks(frozenset({name})) == [f"module {name} gained ['stash']"]
    finally:
        del module.stash



@pytest.mark.parametrize("how", ["children", "scan"])
def test_every_process_an_episode_started_ends_however_it_detached(how):
    """end_descendants in a subreaper (what the host is): a double-forked sleeper in a session of its
    own is still found and killed, with the task/*/children files and with a scan of /proc."""
    import subprocess
    import sys

    code = """
import ctypes, os, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER, as the tool host does
subprocess.Popen(['sh', '-c', '(setsid sleep 1234 &); exit 0']).wait()
subprocess.Popen(['sleep', '1235'])
time.sleep(0.3)
from tools.server import hygiene
hygiene._HAS_CHILDREN_FILES = sys.argv[1] == 'children'
before = len(hygiene._descendants(os.getpid()))
killed = hygiene.end_descendants()
print(before, killed, len(hygiene._descendants(os.getpid())))
"""
    out = subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True, timeout=60)
    before, killed, after = map(int, out.stdout.split())
    assert before == 2 and killed >= 2 and after == 0, out
