"""Seeded environments of real MCP servers, built and snapshotted inside the sandbox (stdlib only).

    python3 seed_script.py build KIND PATH SEED_JSON   replace PATH with the seed (a repo, a file tree, ...)
    python3 seed_script.py snapshot KIND PATH          print the state at PATH as JSON

The harness runs it with `python3 -I -S -c <this file's source>` (one exec, nothing written first),
so it works the same under every backend; it is not part of the image (an edit here rebuilds
nothing). It imports nothing of the project. Its input was validated by tools/environments.py; whatever is at
PATH when it snapshots was written by third-party code driven by a model, so every read is bounded
(files, bytes, rows) and symlinks are reported, never followed.

Kinds: git (a repository with commits and branches), filesystem (a file tree), memory (the knowledge
graph file of @modelcontextprotocol/server-memory), sqlite (a database file).
"""

from __future__ import annotations

import json
import os
import sys

# Each run is one short process (per episode, twice): modules beyond these are imported where used.

MAX_FILES = 500  # entries a snapshot lists; more is reported as truncated
MAX_TEXT = 4000  # bytes of a file shown as text (the hash covers all of it)
MAX_ROWS = 500  # rows per sqlite table
MAX_LOG = 50  # commits per branch
SEED_DATE = 1704067200  # 2024-01-01T00:00:00Z: seeded commits are 1 minute apart from here
IDENTITY = {"GIT_AUTHOR_NAME": "Seed", "GIT_AUTHOR_EMAIL": "seed@example.invalid",
            "GIT_COMMITTER_NAME": "Seed", "GIT_COMMITTER_EMAIL": "seed@example.invalid"}


def _clear(path: str) -> None:
    """Remove a file or a tree (symlinks removed, never followed); shutil costs more to import than this."""
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        for top, dirs, files in os.walk(path, topdown=False):
            for name in files:
                os.unlink(os.path.join(top, name))
            for name in dirs:
                full = os.path.join(top, name)
                os.unlink(full) if os.path.islink(full) else os.rmdir(full)
        os.rmdir(path)


def _inside(root: str, rel: str) -> str:
    """root/rel, refusing paths that leave root (the seed names files relative to its root)."""
    full = os.path.normpath(os.path.join(root, rel))
    if full != root and not full.startswith(root + os.sep):
        raise ValueError(f"path {rel!r} leaves {root}")
    return full


def _write_files(root: str, files: dict) -> None:
    for rel, text in files.items():
        full = _inside(root, rel)
        if text is None:
            if os.path.lexists(full):
                _clear(full)
            continue
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8") as f:
            f.write(text)


def _file_entry(root: str, full: str) -> dict:
    import hashlib

    rel = os.path.relpath(full, root)
    if os.path.islink(full):
        return {"path": rel, "symlink": os.readlink(full)}
    with open(full, "rb") as f:
        data = f.read()
    entry = {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()[:16]}
    if len(data) <= MAX_TEXT:
        try:
            entry["text"] = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return entry


def _tree(root: str, skip: tuple[str, ...] = ()) -> dict:
    files, dirs, truncated = [], [], False
    for top, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not (top == root and d in skip))
        for d in subdirs:
            if os.path.islink(os.path.join(top, d)):
                files.append(_file_entry(root, os.path.join(top, d)))
            else:
                dirs.append(os.path.relpath(os.path.join(top, d), root))
        for name in sorted(names):
            if len(files) >= MAX_FILES:
                truncated = True
                break
            files.append(_file_entry(root, os.path.join(top, name)))
    out = {"files": sorted(files, key=lambda e: e["path"]), "dirs": sorted(dirs)}
    if truncated:
        out["truncated"] = True
    return out


# ---------------------------------------------------------------- filesystem


def build_filesystem(path: str, seed: dict) -> None:
    _clear(path)
    os.makedirs(path)
    for rel in seed.get("dirs", []):
        os.makedirs(_inside(path, rel), exist_ok=True)
    _write_files(path, seed.get("files", {}))


def snapshot_filesystem(path: str) -> dict:
    if not os.path.isdir(path):
        return {"exists": False, "files": [], "dirs": []}
    return _tree(path)


# ---------------------------------------------------------------- git


def _git(path: str, *args: str, env: dict | None = None) -> str:
    import subprocess

    full_env = {**os.environ, **IDENTITY, "GIT_CONFIG_NOSYSTEM": "1", **(env or {})}
    done = subprocess.run(["git", "-C", path, *args], capture_output=True, text=True, env=full_env, timeout=60)
    if done.returncode:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()[:500]}")
    return done.stdout


def build_git(path: str, seed: dict) -> None:
    _clear(path)
    os.makedirs(path)
    _git(path, "init", "-q", "-b", "main")
    # The identity commits carry comes from the environment (IDENTITY here, the git kind's server env).
    branches = {"main"}
    for n, commit in enumerate(seed.get("commits", [])):
        branch = commit.get("branch") or "main"
        if branch not in branches:
            _git(path, "checkout", "-q", "-b", branch)  # from the commit made just before
            branches.add(branch)
        elif n:
            _git(path, "checkout", "-q", branch)
        _write_files(path, commit.get("files", {}))
        _git(path, "add", "-A")
        date = f"@{SEED_DATE + 60 * n} +0000"
        _git(path, "commit", "-q", "--allow-empty", "-m", commit["message"],
             env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})
    head = seed.get("head") or "main"
    if seed.get("commits"):
        _git(path, "checkout", "-q", head)
    _write_files(path, seed.get("changes", {}))
    staged = seed.get("staged", [])
    if staged:
        _git(path, "add", "--", *staged)


def _status(path: str) -> dict:
    staged, unstaged, untracked = [], [], []
    for line in _git(path, "status", "--porcelain=v1", "--untracked-files=all").splitlines():
        code, name = line[:2], line[3:]
        if code == "??":
            untracked.append(name)
            continue
        if code[0] != " ":
            staged.append(name)
        if code[1] != " ":
            unstaged.append(name)
    return {"staged": staged, "unstaged": unstaged, "untracked": untracked}


def _log(path: str, ref: str) -> list:
    out = _git(path, "log", f"--max-count={MAX_LOG}", "--format=%H%x1f%s%x1f%an", ref, "--")
    return [dict(zip(("sha", "message", "author"), line.split("\x1f"))) for line in out.splitlines()]


def snapshot_git(path: str) -> dict:
    if not os.path.isdir(os.path.join(path, ".git")):
        return {"exists": False}
    branches = {}
    for line in _git(path, "for-each-ref", "--format=%(refname:short)", "refs/heads").splitlines():
        branches[line] = {"log": _log(path, f"refs/heads/{line}")}
    try:
        head = _git(path, "symbolic-ref", "--short", "-q", "HEAD").strip()
    except RuntimeError:  # detached
        head = _git(path, "rev-parse", "HEAD").strip()
    log = branches[head]["log"] if head in branches else []
    return {"exists": True, "head": head, "branches": branches, "log": log, "status": _status(path),
            **_tree(path, skip=(".git",))}


# ---------------------------------------------------------------- memory (knowledge graph JSONL)


def build_memory(path: str, seed: dict) -> None:
    _clear(path)
    lines = [json.dumps({"type": "entity", "name": e["name"], "entityType": e["entityType"],
                         "observations": e.get("observations", [])}) for e in seed.get("entities", [])]
    lines += [json.dumps({"type": "relation", "from": r["from"], "to": r["to"], "relationType": r["relationType"]})
              for r in seed.get("relations", [])]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def snapshot_memory(path: str) -> dict:
    entities, relations, bad = [], [], 0
    if os.path.isfile(path) and not os.path.islink(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f.read(1 << 22).splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    bad += line.strip() != ""
                    continue
                if not isinstance(item, dict):
                    bad += 1
                elif item.get("type") == "entity":
                    entities.append({k: item.get(k) for k in ("name", "entityType", "observations")})
                elif item.get("type") == "relation":
                    relations.append({k: item.get(k) for k in ("from", "to", "relationType")})
    out = {"entities": sorted(entities[:MAX_FILES], key=lambda e: str(e["name"])),
           "relations": sorted(relations[:MAX_FILES], key=lambda r: json.dumps(r, sort_keys=True))}
    if bad:
        out["unreadable_lines"] = bad
    return out


# ---------------------------------------------------------------- sqlite


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def build_sqlite(path: str, seed: dict) -> None:
    import sqlite3

    _clear(path)
    with sqlite3.connect(path) as db:
        for table in seed.get("tables", []):
            columns = ", ".join(f"{_quote(c['name'])} {c.get('type', '')}".strip() for c in table["columns"])
            db.execute(f"CREATE TABLE {_quote(table['name'])} ({columns})")
            names = [c["name"] for c in table["columns"]]
            for row in table.get("rows", []):
                values = [row.get(n) for n in names] if isinstance(row, dict) else list(row)
                marks = ", ".join("?" for _ in values)
                db.execute(f"INSERT INTO {_quote(table['name'])} ({', '.join(map(_quote, names[:len(values)]))}) "
                           f"VALUES ({marks})", values)
    db.close()


def _plain(value):
    return value.hex() if isinstance(value, bytes) else value


def snapshot_sqlite(path: str) -> dict:
    import sqlite3

    if not os.path.isfile(path) or os.path.islink(path):
        return {"exists": False, "tables": {}}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {}
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        for name in names[:MAX_FILES]:
            columns = [{"name": c[1], "type": c[2]} for c in db.execute(f"PRAGMA table_info({_quote(name)})")]
            cursor = db.execute(f"SELECT * FROM {_quote(name)} ORDER BY rowid LIMIT {MAX_ROWS}")
            keys = [d[0] for d in cursor.description]
            tables[name] = {"columns": columns, "rows": [dict(zip(keys, map(_plain, r))) for r in cursor]}
        return {"exists": True, "tables": tables}
    finally:
        db.close()


BUILD = {"git": build_git, "filesystem": build_filesystem, "memory": build_memory, "sqlite": build_sqlite}
SNAPSHOT = {"git": snapshot_git, "filesystem": snapshot_filesystem, "memory": snapshot_memory,
            "sqlite": snapshot_sqlite}


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 4 and argv[0] == "build" and argv[1] in BUILD:
            BUILD[argv[1]](os.path.abspath(argv[2]), json.loads(argv[3]))
            print("{}")
        elif len(argv) == 3 and argv[0] == "snapshot" and argv[1] in SNAPSHOT:
            print(json.dumps(SNAPSHOT[argv[1]](os.path.abspath(argv[2])), sort_keys=True))
        else:
            print(f"usage: seed_script.py build|snapshot {'|'.join(BUILD)} PATH [SEED_JSON]", file=sys.stderr)
            return 2
    except Exception as e:  # one line the harness shows: the seed, the tree or git was not what was expected
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
