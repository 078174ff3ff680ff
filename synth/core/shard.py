"""Sharding a run across machines (`synth run --shard I/N`) and merging the shards (`synth merge`).

Pure functions, no pipeline state. A shard keeps the units whose id hashes to its index, so every
shard agrees on the split without talking to the others, and a rerun of a shard resumes as usual.
Indexes are 0-based, like a Kubernetes Indexed Job's JOB_COMPLETION_INDEX.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from synth.core.errors import ConfigError

# Written by `synth run` itself; merge rebuilds or drops them rather than copying one shard's.
_SKIP = {"manifest.json", "config.yaml", ".lock", "export", "embedded_server.log", "calibration.json",
         "workers"}  # per-shard logs: same names, different content


def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' -> (2, 4): shard index I (0-based) of N shards."""
    index, sep, count = text.strip().partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected I/N with integers, e.g. 0/4 (0-based index of N shards)") from None
    if not sep or n < 1:
        raise ConfigError(f"--shard {text!r}: expected I/N with N >= 1, e.g. 0/4")
    if not 0 <= i < n:
        raise ConfigError(f"--shard {text!r}: index must be in 0..{n - 1} (0-based, like JOB_COMPLETION_INDEX)")
    return i, n


def shard_of(unit_id: str, n: int) -> int:
    """Deterministic across machines and Python runs (no hash randomization): sha256 of the id."""
    return int.from_bytes(hashlib.sha256(unit_id.encode()).digest()[:8], "big") % n


def in_shard(unit_id: str, i: int, n: int) -> bool:
    return shard_of(unit_id, n) == i


def merge_runs(sources: list[Path], dest: Path) -> dict[str, Any]:
    """Combine shard run directories into `dest` (new or empty); return the merged manifest.

    JSONL files are concatenated in source order, deduplicated by record id (identical tools,
    agents and tasks made in every shard appear once); cache/ and other directories are merged
    file by file (content-addressed, so a name present twice has the same content); `synth export`
    on `dest` then builds the datasets. Refuses shards made with different configs.
    """
    sources = [Path(s) for s in sources]
    dest = Path(dest)
    if not sources:
        raise ConfigError("merge: no shard run directories given")
    manifests = [_manifest(s) for s in sources]
    hashes = {m.get("config_hash") for m in manifests}
    if len(hashes) != 1 or None in hashes:
        detail = ", ".join(f"{s}: {m.get('config_hash')}" for s, m in zip(sources, manifests))
        raise ConfigError(f"merge: shards were made with different configs ({detail}); merge only shards of one run")
    shards = [m.get("shard") for m in manifests]
    _check_shards(sources, shards)
    if dest.exists() and any(dest.iterdir()):
        raise ConfigError(f"merge: {dest} is not empty; merge into a new directory")
    dest.mkdir(parents=True, exist_ok=True)

    records: dict[str, int] = {}
    for name in sorted({p.name for s in sources for p in s.glob("*.jsonl")}):
        records[name.removesuffix(".jsonl")] = _merge_jsonl([s / name for s in sources], dest / name)
    for source in sources:
        for sub in source.iterdir():
            if sub.is_dir() and sub.name not in _SKIP:
                _merge_tree(sub, dest / sub.name)
    if (sources[0] / "config.yaml").exists():
        shutil.copy2(sources[0] / "config.yaml", dest / "config.yaml")

    stages = [m.get("stages", {}) for m in manifests]
    manifest = {
        "config_hash": hashes.pop(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "merged_from": [{"path": str(s), "shard": sh} for s, sh in zip(sources, shards)],
        "records": records,  # after deduplication
        "counts": _sum([m.get("counts", {}) for m in manifests]),  # per-shard counts summed (shared stages count N times)
        "usage": _sum([m.get("usage", {}) for m in manifests]),
        "stages": {name: {"status": "done" if all(st.get(name, {}).get("status") == "done" for st in stages) else "partial"}
                   for name in sorted({n for st in stages for n in st})},
    }
    tmp = dest / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, dest / "manifest.json")
    return manifest


def _manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise ConfigError(f"merge: {run_dir} is not a run directory (no manifest.json)")
    return json.loads(path.read_text())


def _check_shards(sources: list[Path], shards: list[Any]) -> None:
    """Shards that say which they are (manifest `shard: "I/N"`) must agree on N and not repeat."""
    known = [(s, parse_shard(sh)) for s, sh in zip(sources, shards) if sh]
    if len({n for _, (_, n) in known}) > 1:
        raise ConfigError(f"merge: shards of different splits: {[(str(s), f'{i}/{n}') for s, (i, n) in known]}")
    seen: dict[int, Path] = {}
    for source, (i, _) in known:
        if i in seen:
            raise ConfigError(f"merge: shard {i} given twice ({seen[i]} and {source})")
        seen[i] = source


def _merge_jsonl(paths: list[Path], dest: Path) -> int:
    seen: set[str] = set()
    with dest.open("w", encoding="utf-8") as out:
        for path in paths:
            if not path.exists():
                continue
            data = path.read_text(encoding="utf-8")
            if data and not data.endswith("\n"):  # a torn last line (killed mid-write): its unit is redone
                data = data[: data.rfind("\n") + 1]
            for line in data.splitlines():
                if not line.strip():
                    continue
                key = json.loads(line).get("id") or line
                if key not in seen:
                    seen.add(key)
                    out.write(line + "\n")
    return len(seen)


def _merge_tree(src: Path, dest: Path) -> None:
    for path in src.rglob("*"):
        target = dest / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def _sum(dicts: list[dict]) -> dict:
    """Sum numbers key by key, recursing into nested dicts; other values: the first one seen."""
    total: dict = {}
    for d in dicts:
        for key, value in d.items():
            if isinstance(value, dict):
                total[key] = _sum([total.get(key, {}), value]) if isinstance(total.get(key, {}), dict) else total[key]
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                prev = total.get(key, 0)
                total[key] = round(prev + value, 6) if isinstance(prev, (int, float)) else prev
            else:
                total.setdefault(key, value)
    return total
