"""Seeded environments of real MCP servers: what state a kind of server works on, how a task seeds it
and how the episode's end state is read back.

A kind (git, filesystem, memory, sqlite) has a seed model (the JSON a task writer fills in as the
task's initial state, validated here with errors that name the field), a data path in the
workspace (the repository, the file tree, the graph file, the database), the server arguments and
environment that point the server at it, and a note the agent is given ("the repository is at
/workspace/repo"). Building the seed and snapshotting the state run inside the sandbox, in one
exec each (tools/seed_script.py), so they work alike under every backend.

Paths the model sees are under WORKSPACE (/workspace), whatever the backend's real workspace path
is: tools/real.py maps them, so trajectories and gold actions read the same everywhere.
"""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from sandboxes.base import Sandbox
from synth.core.errors import ToolError

WORKSPACE = "/workspace"  # the workspace as tools and the model see it (mapped onto the sandbox's)
SEEDS_SOURCE = (Path(__file__).resolve().parent / "seed_script.py").read_text()
MAX_SEED_BYTES = 100_000  # one argv string; a seed this big is not a task's initial state
MAX_SNAPSHOT_BYTES = 1 << 21

def _relative(path: str) -> str:
    if path.startswith("/") or ".." in path.split("/") or "\x00" in path:
        raise ValueError(f"{path!r}: give a path relative to the environment's root, without '..'")
    return path


RelPath = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_relative)]
Name = Annotated[str, Field(min_length=1, max_length=100)]


class _Seed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GitCommitSeed(_Seed):
    message: Annotated[str, Field(min_length=1, max_length=300)]
    files: dict[RelPath, str | None] = Field(default_factory=dict, description="Path -> new content; null deletes it.")
    branch: Annotated[str, Field(pattern=r"^[A-Za-z0-9._/-]{1,60}$")] = Field(
        "main", description="Branch the commit goes on; a new branch starts at the commit made just before.")


class GitSeed(_Seed):
    commits: list[GitCommitSeed] = Field(default_factory=list, max_length=30)
    head: Annotated[str, Field(pattern=r"^[A-Za-z0-9._/-]{1,60}$")] = Field("main", description="Branch checked out at the end.")
    changes: dict[RelPath, str | None] = Field(default_factory=dict, description="Uncommitted edits to the working tree.")
    staged: list[RelPath] = Field(default_factory=list, description="Paths of `changes` that are staged (git add).")


class FilesystemSeed(_Seed):
    files: dict[RelPath, str] = Field(default_factory=dict, description="Path (relative) -> text content.")
    dirs: list[RelPath] = Field(default_factory=list, description="Empty directories.")


class Entity(_Seed):
    name: Name
    entityType: Name
    observations: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list)


class Relation(_Seed):
    from_: Name = Field(alias="from")
    to: Name
    relationType: Name

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class MemorySeed(_Seed):
    entities: list[Entity] = Field(default_factory=list, max_length=200)
    relations: list[Relation] = Field(default_factory=list, max_length=400)


class Column(_Seed):
    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]
    type: Annotated[str, Field(pattern=r"^[A-Za-z0-9 _(),]{0,60}$")] = "TEXT"


class Table(_Seed):
    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]
    columns: list[Column] = Field(min_length=1, max_length=30)
    rows: list[list[Any] | dict[str, Any]] = Field(default_factory=list, max_length=500)

    @field_validator("rows")
    @classmethod
    def _fit(cls, rows: list[Any], info: Any) -> list[Any]:
        columns = [c.name for c in info.data.get("columns", [])]
        for n, row in enumerate(rows):
            if isinstance(row, list) and len(row) > len(columns):
                raise ValueError(f"row {n} has {len(row)} values for {len(columns)} columns")
            if isinstance(row, dict) and (extra := set(row) - set(columns)):
                raise ValueError(f"row {n} names unknown columns {sorted(extra)}")
        return rows


class SqliteSeed(_Seed):
    tables: list[Table] = Field(default_factory=list, max_length=20)


class Environment(BaseModel):
    """One kind of seeded environment (see the module docstring)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: Literal["git", "filesystem", "memory", "sqlite"]
    seed_model: type[_Seed]
    data: str = Field(description="Where the state lives, relative to the workspace.")
    env: dict[str, str] = Field(default_factory=dict, description="Server environment; {data} is the data path.")
    note: str = Field(description="What the agent is told about where its data is; {data} is the path it sees.")
    example: dict[str, Any] = Field(description="A seed shown to task writers.")
    state_doc: str = Field(description="The snapshot's shape, shown to task writers for their assertions.")
    reusable: bool = Field(description="A running server may serve the next episode after the data is replaced: "
                           "it keeps no state of its own that a tool could show.")

    def data_path(self, workspace: str = WORKSPACE) -> str:
        return posixpath.join(workspace, self.data)

    def validate_seed(self, seed: Any) -> dict[str, Any]:
        """The seed as plain JSON with defaults filled in, or a ValueError naming the field."""
        try:
            return self.seed_model.model_validate(seed if seed is not None else {}).model_dump(mode="json", by_alias=True)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'seed'}: {e['msg']}" for e in exc.errors()[:5])
            raise ValueError(f"{self.name} seed: {problems}") from None

    async def build(self, sandbox: Sandbox, seed: dict[str, Any]) -> None:
        """Replace the data with `seed` (validated) inside the sandbox; a ToolError if that fails."""
        text = json.dumps(self.validate_seed(seed))
        if len(text) > MAX_SEED_BYTES:
            raise ValueError(f"{self.name} seed is {len(text)} bytes; at most {MAX_SEED_BYTES}")
        await self._run(sandbox, "build", self.data_path(sandbox.workspace), text)

    async def snapshot(self, sandbox: Sandbox) -> dict[str, Any]:
        out = await self._run(sandbox, "snapshot", self.data_path(sandbox.workspace))
        if len(out) > MAX_SNAPSHOT_BYTES:
            raise ToolError(f"{self.name} snapshot is {len(out)} bytes (limit {MAX_SNAPSHOT_BYTES})")
        try:
            state = json.loads(out)
        except ValueError as e:
            raise ToolError(f"{self.name} snapshot is not JSON: {out[:200]!r}") from e
        return state if isinstance(state, dict) else {"state": state}

    async def _run(self, sandbox: Sandbox, *args: str) -> str:
        verb, *rest = args
        result = await sandbox.exec(["python3", "-I", "-S", "-c", SEEDS_SOURCE, verb, self.name, *rest], timeout=60)
        if result.exit_code != 0:
            raise ToolError(f"{verb} of the {self.name} environment failed in sandbox {sandbox.id} "
                            f"(exit {result.exit_code}): {result.stderr.strip()[-500:]}")
        return result.stdout


ENVIRONMENTS: dict[str, Environment] = {e.name: e for e in [
    Environment(
        name="git", seed_model=GitSeed, data="repo",
        # Commits the agent makes get a fixed date and identity: replaying the same calls gives the same SHAs.
        env={"GIT_AUTHOR_DATE": "@1717243200 +0000", "GIT_COMMITTER_DATE": "@1717243200 +0000",
             "GIT_AUTHOR_NAME": "Assistant", "GIT_AUTHOR_EMAIL": "assistant@example.invalid",
             "GIT_COMMITTER_NAME": "Assistant", "GIT_COMMITTER_EMAIL": "assistant@example.invalid",
             "GIT_CONFIG_NOSYSTEM": "1"},
        note="The git repository you work on is at {data} (pass it as repo_path).",
        example={"commits": [{"message": "Initial commit", "files": {"README.md": "# Demo\n"}},
                             {"message": "Add parser", "files": {"src/parse.py": "def parse(s):\n    return s\n"},
                              "branch": "feature"}],
                 "head": "main", "changes": {"README.md": "# Demo\nWIP\n"}, "staged": []},
        state_doc='{"head": "main", "branches": {"main": {"log": [{"sha": "...", "message": "Initial commit", '
                  '"author": "Seed"}]}, "feature": {"log": [...]}}, "log": [the checked-out branch\'s commits, newest '
                  'first], "status": {"staged": ["path"], "unstaged": ["README.md"], "untracked": []}, "files": '
                  '[{"path": "README.md", "size": 12, "sha256": "...", "text": "# Demo\\nWIP\\n"}], "dirs": ["src"]}',
        reusable=True),
    Environment(
        name="filesystem", seed_model=FilesystemSeed, data="files",
        note="The files you work on are under {data} (use absolute paths there).",
        example={"files": {"notes/todo.txt": "buy milk\n", "report.md": "# Q3\n"}, "dirs": ["archive"]},
        state_doc='{"files": [{"path": "notes/todo.txt", "size": 9, "sha256": "...", "text": "buy milk\\n"}], '
                  '"dirs": ["archive", "notes"]}',
        reusable=True),
    Environment(
        name="memory", seed_model=MemorySeed, data="memory.jsonl", env={"MEMORY_FILE_PATH": "{data}"},
        note="Your knowledge graph memory is kept for you; read it before you answer from memory.",
        example={"entities": [{"name": "Alice", "entityType": "person", "observations": ["likes tea"]}],
                 "relations": [{"from": "Alice", "to": "Acme", "relationType": "works_at"}]},
        state_doc='{"entities": [{"name": "Alice", "entityType": "person", "observations": ["likes tea"]}], '
                  '"relations": [{"from": "Alice", "to": "Acme", "relationType": "works_at"}]}',
        reusable=True),
    Environment(
        name="sqlite", seed_model=SqliteSeed, data="db.sqlite",
        note="Your SQLite database is open for you; list its tables before you query it.",
        example={"tables": [{"name": "orders", "columns": [{"name": "id", "type": "INTEGER PRIMARY KEY"},
                                                           {"name": "item", "type": "TEXT"}],
                             "rows": [[1, "lamp"], [2, "desk"]]}]},
        state_doc='{"tables": {"orders": {"columns": [{"name": "id", "type": "INTEGER"}, {"name": "item", "type": '
                  '"TEXT"}], "rows": [{"id": 1, "item": "lamp"}, {"id": 2, "item": "desk"}]}}}',
        # mcp-server-sqlite keeps its insights memo (append_insight) in the process.
        reusable=False),
]}


def environment(name: str | None) -> Environment | None:
    return ENVIRONMENTS.get(name) if name else None


SERVER_NAMES = {  # what servers report as serverInfo.name -> their kind, for imports that do not say
    "mcp-git": "git", "mcp-server-git": "git", "git": "git",
    "secure-filesystem-server": "filesystem", "filesystem": "filesystem",
    "memory-server": "memory", "memory": "memory",
    "sqlite": "sqlite", "mcp-server-sqlite": "sqlite",
}


def environment_of_server(server: str) -> str | None:
    """The kind a server's reported name implies, if it is a known reference server."""
    return SERVER_NAMES.get(server.lower()) or SERVER_NAMES.get(re.sub(r"[^a-z-]", "", server.lower()))
