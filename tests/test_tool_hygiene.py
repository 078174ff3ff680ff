"""tools/server/hygiene.py: what a shared episode leaves in the tool host's process is named."""

from __future__ import annotations

import json
import os
import threading

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
