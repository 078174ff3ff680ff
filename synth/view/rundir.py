"""Read a run directory as raw JSON, read-only and tolerant: a line that cannot be read is reported, not fatal."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORD_FILES = ("tools", "agents", "tasks", "trajectories", "verdicts", "errors", "implementations")


class ViewError(Exception):
    """The run directory cannot be shown at all (missing, not a run directory). The message says the fix."""


@dataclass
class RunFiles:
    root: Path
    records: dict[str, list[dict[str, Any]]]
    manifest: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    config_yaml: str = ""
    problems: list[str] = field(default_factory=list)  # lines and files that could not be read, with where

    def __getitem__(self, kind: str) -> list[dict[str, Any]]:
        return self.records[kind]


def read_run_dir(root: Path) -> RunFiles:
    root = Path(root)
    if not root.is_dir():
        raise ViewError(f"{root} is not a directory: give the run directory (runs/<name>, the one holding "
                        "manifest.json and the *.jsonl files)")
    known = [root / f"{kind}.jsonl" for kind in RECORD_FILES] + [root / "manifest.json"]
    if not any(path.exists() for path in known):
        raise ViewError(f"{root} holds no manifest.json and no record file ({', '.join(k + '.jsonl' for k in RECORD_FILES)}): "
                        "is it a run directory? `synth run` writes them under runs/<name>")
    problems: list[str] = []
    records = {kind: read_jsonl(root / f"{kind}.jsonl", problems) for kind in RECORD_FILES}
    config = root / "config.yaml"
    return RunFiles(root=root, records=records, manifest=read_json(root / "manifest.json", problems) or {},
                    calibration=read_json(root / "calibration.json", problems),
                    config_yaml=config.read_text(errors="replace") if config.exists() else "", problems=problems)


def read_jsonl(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop() if lines else b""  # what follows the last newline: empty, or a line a kill cut short
    if torn.strip():
        problems.append(f"{path.name}:{len(lines) + 1}: last line has no newline (cut by a kill mid-write, "
                        "or still being written); skipped")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            problems.append(f"{path.name}:{lineno}: not JSON ({exc}); skipped")
            continue
        if not isinstance(row, dict):
            problems.append(f"{path.name}:{lineno}: a JSON {type(row).__name__}, not an object; skipped")
            continue
        rows.append(row)
    return rows


def read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        problems.append(f"{path.name}: not JSON ({exc}); ignored")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name}: a JSON {type(data).__name__}, not an object; ignored")
        return None
    return data
