"""RunStore: append-only JSONL records, resume by id/unit, torn-tail trimming, config hash, lock, manifest."""

import json
import os
from pathlib import Path

import pytest

from synth.core.errors import ConfigError
from synth.core.records import Agent, Criterion, ErrorRecord, Task
from synth.core.store import RunStore


def make_agent(unit: str = "toolset-1", name: str = "helper") -> Agent:
    return Agent(unit=unit, toolset_id="ts1", toolset="calendar", domain="office", tool_ids=["t1", "t2"],
                 name=name, system_prompt=f"You are {name}.")


def make_task(unit: str = "agent-1", goal: str = "book a room") -> Task:
    return Task(unit=unit, agent_id="agent-1", goal=goal, persona="busy manager", user_facts=["room 4"],
                difficulty="medium", initial_state={"rooms": {"4": None}},
                rubric=[Criterion(text="books room 4", weight=2.0, kind="essential"),
                        Criterion(text="deletes a booking", kind="pitfall")])


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path / "run")
    s.open("name: test\n", "hash-a")
    yield s
    s.close()


def reopen(store: RunStore) -> RunStore:
    """A fresh instance on the same directory, as a resumed process would make (no lock needed to read)."""
    return RunStore(store.root)


# -- records ---------------------------------------------------------------------------------

def test_append_and_read_round_trip(store):
    agent, task = make_agent(), make_task()
    error = ErrorRecord(unit="u9", stage="tasks", error_type="ProviderError", message="boom", raw="{oops")
    assert store.append("agents", [agent]) == 1
    assert store.append("tasks", [task]) == 1
    assert store.append("errors", [error]) == 1

    fresh = reopen(store)
    assert fresh.read("agents") == [agent]
    assert fresh.read("tasks") == [task]
    assert fresh.read("errors") == [error]
    assert fresh.read("tasks")[0].rubric[1].kind == "pitfall"
    assert fresh.read("trajectories") == []  # no file yet


def test_one_json_line_per_record(store):
    store.append("agents", [make_agent(name="a"), make_agent(name="b")])
    lines = store.path("agents").read_text().splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["a", "b"]


def test_append_skips_ids_already_present(store):
    a, b = make_agent(name="a"), make_agent(name="b")
    assert store.append("agents", [a]) == 1
    assert store.append("agents", [a, b]) == 1
    assert store.append("agents", [a, b]) == 0
    assert store.append("agents", []) == 0
    assert [r.name for r in store.read("agents")] == ["a", "b"]


def test_append_skips_ids_across_instances(store):
    a, b = make_agent(name="a"), make_agent(name="b")
    store.append("agents", [a])
    fresh = reopen(store)
    assert fresh.append("agents", [make_agent(name="a"), b]) == 1  # equal content -> equal id
    assert len(fresh.path("agents").read_text().splitlines()) == 2


def test_error_records_its_cause(store):
    record = store.error("rollouts", "task-7", TimeoutError(), raw="x" * 5000)
    [stored] = reopen(store).read("errors")
    assert stored == record
    assert (stored.unit, stored.stage, stored.error_type) == ("task-7", "rollouts", "TimeoutError")
    assert stored.message  # repr when str(exc) is empty
    assert len(stored.raw) == 4000


def test_done_units(store):
    assert store.done_units("tasks") == set()
    store.append("tasks", [make_task(unit="agent-1", goal="g1"), make_task(unit="agent-1", goal="g2"),
                           make_task(unit="agent-2", goal="g3")])
    assert reopen(store).done_units("tasks") == {"agent-1", "agent-2"}


# -- torn and corrupt files ------------------------------------------------------------------

def test_torn_last_line_is_trimmed_and_its_unit_redone(store):
    done, torn = make_task(unit="agent-1"), make_task(unit="agent-2", goal="other")
    store.append("tasks", [done])
    line = torn.model_dump_json().encode()
    with store.path("tasks").open("ab") as fh:
        fh.write(line[: len(line) // 2])  # killed mid-write: no trailing newline

    fresh = reopen(store)
    assert fresh.read("tasks") == [done]
    assert fresh.path("tasks").read_bytes() == (done.model_dump_json() + "\n").encode()
    assert fresh.done_units("tasks") == {"agent-1"}
    assert fresh.append("tasks", [torn]) == 1  # the redone unit is appended after the trim
    assert reopen(store).read("tasks") == [done, torn]


def test_torn_only_line_leaves_an_empty_file(store):
    store.path("agents").write_bytes(make_agent().model_dump_json().encode()[:-3])
    assert store.read("agents") == []
    assert store.path("agents").read_bytes() == b""
    assert store.done_units("agents") == set()


def test_corrupt_middle_line_names_file_and_line(store):
    store.append("agents", [make_agent(name="a")])
    with store.path("agents").open("a") as fh:
        fh.write('{"not": "an agent"}\n')
    store.append("agents", [make_agent(name="c")])
    with pytest.raises(ConfigError) as info:
        reopen(store).read("agents")
    assert f"{store.path('agents')}:2" in str(info.value)
    assert "Agent" in str(info.value)


def test_corrupt_non_json_line_raises_config_error(store):
    store.path("tasks").write_text(make_task().model_dump_json() + "\n{garbage\n")
    with pytest.raises(ConfigError, match=r"tasks\.jsonl:2"):
        reopen(store).read("tasks")


# -- open: config hash and lock --------------------------------------------------------------

def test_open_writes_config_and_manifest(store):
    assert (store.root / "config.yaml").read_text() == "name: test\n"
    manifest = store.manifest()
    assert manifest["config_hash"] == "hash-a"
    assert "created" in manifest


def test_reopen_same_hash_keeps_manifest(store):
    store.update_manifest(counts={"tasks": 3})
    created = store.manifest()["created"]
    store.close()
    again = RunStore(store.root)
    again.open("name: test\n", "hash-a")
    try:
        assert again.manifest()["created"] == created
        assert again.manifest()["counts"] == {"tasks": 3}
    finally:
        again.close()


def test_open_refuses_a_different_config_hash(store):
    store.close()
    other = RunStore(store.root)
    with pytest.raises(ConfigError) as info:
        other.open("name: test\nseed: 1\n", "hash-b")
    other.close()
    message = str(info.value)
    assert "--name" in message and "hash-a" in message and "hash-b" in message
    assert store.manifest()["config_hash"] == "hash-a"
    assert (store.root / "config.yaml").read_text() == "name: test\n"  # not overwritten


def test_second_open_while_locked_fails(store):
    other = RunStore(store.root)
    with pytest.raises(ConfigError, match="another synth process"):
        other.open("name: test\n", "hash-a")
    other.close()
    store.close()  # the lock is released on close: now it opens
    other.open("name: test\n", "hash-a")
    other.close()


# -- manifest --------------------------------------------------------------------------------

def test_update_manifest_merges(store):
    store.update_manifest(stages={"tools": "done"})
    result = store.update_manifest(usage={"requests": 4})
    manifest = reopen(store).manifest()
    assert manifest == result
    assert manifest["stages"] == {"tools": "done"}
    assert manifest["usage"] == {"requests": 4}
    assert manifest["config_hash"] == "hash-a"
    store.update_manifest(stages={"tools": "done", "agents": "done"})
    assert reopen(store).manifest()["stages"] == {"tools": "done", "agents": "done"}


def test_manifest_write_is_atomic(store, monkeypatch):
    path = store.root / "manifest.json"
    before = path.read_text()
    calls = []

    def failing_replace(src, dst):
        calls.append((os.fspath(src), os.fspath(dst)))
        raise OSError("disk gone")

    monkeypatch.setattr("synth.core.store.os.replace", failing_replace)
    with pytest.raises(OSError):
        store.update_manifest(stages={"tools": "done"})
    assert path.read_text() == before  # the old manifest survives a failed write
    [(src, dst)] = calls
    assert dst == os.fspath(path) and src != dst
    assert json.loads(Path(src).read_text())["stages"] == {"tools": "done"}  # written in full before the swap

    monkeypatch.undo()
    store.update_manifest(stages={"tools": "done"})
    assert json.loads(path.read_text())["stages"] == {"tools": "done"}
    assert sorted(p.name for p in store.root.glob("manifest*")) == ["manifest.json"]


def test_a_refused_open_releases_the_lock(tmp_path):
    """A config-hash refusal must not leave the run dir locked for the next attempt."""
    first = RunStore(tmp_path / "run")
    first.open("a: 1\n", "hash-a")
    first.close()
    refused = RunStore(tmp_path / "run")
    with pytest.raises(ConfigError):
        refused.open("a: 2\n", "hash-b")
    again = RunStore(tmp_path / "run")
    again.open("a: 1\n", "hash-a")  # would raise "another synth process is using" if the lock leaked
    again.close()
