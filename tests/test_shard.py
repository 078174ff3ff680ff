"""synth/core/shard.py: shard parsing, the deterministic split, merging shard run directories."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from synth.core.errors import ConfigError
from synth.core.shard import in_shard, merge_runs, parse_shard, shard_of


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4)
    assert parse_shard(" 0/1 ") == (0, 1)
    for bad, why in [("4/4", "0..3"), ("-1/4", "0..3"), ("a/4", "integers"), ("2", "I/N"), ("1/0", "N >= 1"), ("", "I/N")]:
        with pytest.raises(ConfigError, match=why):
            parse_shard(bad)


def test_split_is_a_deterministic_partition():
    ids = [f"unit-{k}" for k in range(2000)]
    n = 4
    owners = [[i for i in range(n) if in_shard(u, i, n)] for u in ids]
    assert all(len(o) == 1 for o in owners)  # every unit in exactly one shard
    sizes = Counter(o[0] for o in owners)
    assert min(sizes.values()) > 400  # roughly even
    # the same in a fresh interpreter (no PYTHONHASHSEED dependence)
    code = "from synth.core.shard import shard_of; print([shard_of(f'unit-{k}', 4) for k in range(50)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd()).stdout
    assert json.loads(out) == [shard_of(f"unit-{k}", 4) for k in range(50)]


def _shard(root: Path, name: str, shard: str | None, tasks: list[str], trajs: list[str], config_hash="abc") -> Path:
    d = root / name
    (d / "cache" / "ab").mkdir(parents=True)
    (d / "cache" / "ab" / f"{name}.json").write_text("{}")
    (d / "cache" / "ab" / "shared.json").write_text('{"same": 1}')
    (d / "config.yaml").write_text("seed: 0\n")
    manifest = {"config_hash": config_hash, "counts": {"tasks": len(tasks), "trajectories": len(trajs)},
                "usage": {"rollout": {"requests": 10, "cost": 0.5}}, "stages": {"rollout": {"status": "done"}}}
    if shard:
        manifest["shard"] = shard
    (d / "manifest.json").write_text(json.dumps(manifest))
    (d / "tasks.jsonl").write_text("".join(json.dumps({"id": t, "unit": "a"}) + "\n" for t in tasks))
    body = "".join(json.dumps({"id": t, "unit": t}) + "\n" for t in trajs)
    (d / "trajectories.jsonl").write_text(body + '{"id": "torn"')  # a killed writer's last line
    (d / "errors.jsonl").write_text(json.dumps({"id": "e1", "unit": "x"}) + "\n")
    return d


def test_merge_dedups_records_merges_cache_and_sums_usage(tmp_path):
    a = _shard(tmp_path, "s0", "0/2", ["t1", "t2"], ["r1", "r2"])
    b = _shard(tmp_path, "s1", "1/2", ["t1", "t2"], ["r3"])
    manifest = merge_runs([a, b], tmp_path / "merged")
    merged = tmp_path / "merged"
    ids = lambda kind: [json.loads(line)["id"] for line in (merged / f"{kind}.jsonl").read_text().splitlines()]
    assert ids("tasks") == ["t1", "t2"]  # made identically in both shards: once
    assert ids("trajectories") == ["r1", "r2", "r3"]  # the torn line is dropped
    assert ids("errors") == ["e1"]
    assert sorted(p.name for p in (merged / "cache" / "ab").iterdir()) == ["s0.json", "s1.json", "shared.json"]
    assert manifest["records"] == {"errors": 1, "tasks": 2, "trajectories": 3}
    assert manifest["usage"] == {"rollout": {"requests": 20, "cost": 1.0}}
    assert manifest["counts"]["trajectories"] == 3
    assert manifest["stages"]["rollout"]["status"] == "done"
    assert json.loads((merged / "manifest.json").read_text())["config_hash"] == "abc"
    assert (merged / "config.yaml").read_text() == "seed: 0\n"


def test_merge_refuses_mismatched_or_repeated_shards(tmp_path):
    a = _shard(tmp_path, "s0", "0/2", ["t1"], ["r1"])
    other = _shard(tmp_path, "x", "1/2", ["t1"], ["r2"], config_hash="different")
    with pytest.raises(ConfigError, match="different configs"):
        merge_runs([a, other], tmp_path / "m1")
    again = _shard(tmp_path, "s0b", "0/2", ["t1"], ["r3"])
    with pytest.raises(ConfigError, match="shard 0 given twice"):
        merge_runs([a, again], tmp_path / "m2")
    three = _shard(tmp_path, "s3", "1/3", ["t1"], ["r3"])
    with pytest.raises(ConfigError, match="different splits"):
        merge_runs([a, three], tmp_path / "m3")
    with pytest.raises(ConfigError, match="not a run directory"):
        merge_runs([a, tmp_path / "nope"], tmp_path / "m4")
    with pytest.raises(ConfigError, match="no shard"):
        merge_runs([], tmp_path / "m5")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(ConfigError, match="not empty"):
        merge_runs([a], tmp_path / "full")
