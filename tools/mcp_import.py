"""Import real MCP tools: from live servers (stdio inside a sandbox, streamable HTTP) and JSON dumps.

Each source yields raw MCP tool dicts plus the server's identity; `normalize()` turns them into
ToolSpecs (kind="real") and rejects what cannot be offered to a model, with the reason. A server
that crashes, hangs or answers garbage is one rejection; the import goes on with the others.

A stdio server's tools also record how to start it again (`provenance["launch"]`, a
tools/launch.py ServerLaunch): rollouts run it for real from that. A `--stdio` command's
executable and path arguments outside what a local sandbox sees (a venv under /tmp, a
repository given with --repository) are bound read-only; one that does not exist is rejected
with a message naming the path and the fix.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import time
from pathlib import Path
from typing import Any, Literal

import mcp_types
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sandboxes import provision
from sandboxes.local import LocalConfig
from synth.core.hashing import content_hash
from synth.core.records import ErrorRecord, ToolSpec
from synth.core.store import RunStore
from tools.environments import ENVIRONMENTS, environment_of_server
from tools.launch import ServerLaunch, command, host_paths, stdio_binds
from tools.mcp_pipe import mcp_session
from tools.spec import schema_problems

STAGE = "tools-import"
_MAX_PAGES = 100  # a server that keeps handing out cursors is broken, not big


class ServerSource(BaseModel):
    """One place tools come from; exactly one of stdio / url / json_path. Also the servers-file entry."""

    model_config = ConfigDict(extra="forbid")

    label: str | None = Field(None, description="Category/domain of its tools (default: from the server name).")
    stdio: list[str] | None = Field(None, description="argv started inside a sandbox; {workspace} is replaced.")
    url: str | None = Field(None, description="Streamable HTTP endpoint, e.g. http://127.0.0.1:8000/mcp")
    json_path: str | None = Field(None, description="A tools/list result file, or a folder of them.")
    package: str | None = Field(None, description="Where the server comes from, e.g. pypi:mcp-server-time==1.0")
    ro_paths: list[str] = Field(default_factory=list, description="Host paths the sandbox may read (bwrap).")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the stdio server.")
    environment: str | None = Field(None, description="Its seeded environment in rollouts: git, filesystem, memory, "
                                    "sqlite (default: git or memory when a bare command reports that server).")
    catalog: str | None = Field(None, description="The catalog label (set by tools/catalog.py).")
    launch: ServerLaunch | None = Field(None, description="How rollouts start it (set by tools/catalog.py; else "
                                        "derived from stdio, env, ro_paths and environment).")

    @field_validator("environment")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None and value not in ENVIRONMENTS:
            raise ValueError(f"environment {value!r}: use one of {', '.join(ENVIRONMENTS)}")
        return value

    @field_validator("stdio", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value  # "python -m x" in YAML is fine

    @model_validator(mode="after")
    def _one_kind(self) -> ServerSource:
        if sum(x is not None for x in (self.stdio, self.url, self.json_path)) != 1:
            raise ValueError("give exactly one of stdio, url, json_path")
        if self.stdio is not None and not self.stdio:
            raise ValueError("stdio: empty command")
        return self

    @property
    def transport(self) -> Literal["stdio", "streamable-http", "json"]:
        return "stdio" if self.stdio else "streamable-http" if self.url else "json"

    @property
    def target(self) -> str:
        return shlex.join(self.stdio) if self.stdio else self.url or self.json_path or ""


class ImportResult(BaseModel):
    """What one server (or one JSON file) gave: the summary table's row."""

    source: str
    server: str = ""
    version: str = ""
    tools: list[ToolSpec] = Field(default_factory=list)
    rejections: list[ErrorRecord] = Field(default_factory=list)
    duration_s: float = 0.0


# -- fetching ------------------------------------------------------------------------------------
async def _list_all(session: ClientSession) -> list[dict[str, Any]]:
    tools, cursor, seen = [], None, set()
    for _ in range(_MAX_PAGES):
        params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools += [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in page.tools]
        cursor = page.next_cursor
        if not cursor or cursor in seen:
            break
        seen.add(cursor)
    return tools


def _identity(session: ClientSession) -> tuple[str, str]:
    info = session.server_info
    return (info.name, info.version or "") if info else ("", "")


def stdio_launch(src: ServerSource) -> ServerLaunch:
    """How a stdio source starts: the catalog's launch, else its command with the host paths it needs
    bound (a ConfigError names a command that cannot run here)."""
    if src.launch is not None:
        return src.launch
    argv, binds = stdio_binds(src.stdio or [])
    return ServerLaunch(argv=argv, env=src.env, ro_paths=list(dict.fromkeys([*src.ro_paths, *binds])),
                        catalog=src.catalog, environment=src.environment)


async def _fetch_stdio(src: ServerSource, timeout: float) -> tuple[str, str, list[dict[str, Any]], ServerLaunch]:
    # isolation "auto": bubblewrap (no network, read-only system, its own uid), or a SandboxError saying
    # how to get it; the launch's host paths (its install dir) are bound read-only. The server never
    # sees the host's secrets (env not inherited; the launch's own env is set by `command`).
    launch = stdio_launch(src)
    cfg = LocalConfig(isolation="auto", ro_paths=host_paths(launch))
    async with provision(cfg, labels={"purpose": STAGE}) as sandbox:
        if launch.kind is not None:
            await launch.kind.build(sandbox, {})  # some servers check their data dir at start
        argv = command(launch, sandbox)
        async with mcp_session(sandbox, argv, init_timeout=timeout, call_timeout=timeout) as session:
            server, version = _identity(session)
            tools = await _list_all(session)
    if launch.environment is None and len(launch.argv) == 1:
        # A bare git or memory server works on any seed (git takes repo_path per call, memory our
        # MEMORY_FILE_PATH); servers given their own data paths keep them, so they stay stateless here.
        kind = environment_of_server(server)
        if kind in ("git", "memory"):
            launch = launch.model_copy(update={"environment": kind})
    return server, version, tools, launch


async def _fetch_http(src: ServerSource, timeout: float) -> tuple[str, str, list[dict[str, Any]], None]:
    async with streamable_http_client(src.url or "") as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        return (*_identity(session), await _list_all(session), None)


def _load_json(path: Path) -> tuple[str, str, list[Any]]:
    """A tools/list result: {"tools": [...]}, a bare list, or a JSON-RPC response wrapping one."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and isinstance(data.get("result"), dict):
        data = data["result"]
    info = data.get("serverInfo", {}) if isinstance(data, dict) else {}
    tools = data.get("tools") if isinstance(data, dict) else data
    if not isinstance(tools, list):
        raise ValueError('expected {"tools": [...]} or a JSON list of tools')
    return str(info.get("name", "")), str(info.get("version", "")), tools


# -- normalizing ---------------------------------------------------------------------------------
def _slug(server: str) -> str:
    """`mcp-server-time` -> `time`, `secure-filesystem-server` -> `secure-filesystem`."""
    words = [w for w in re.split(r"[^a-z0-9]+", server.lower()) if w and w not in {"mcp", "server", "servers", "modelcontextprotocol"}]
    return "-".join(words) or "misc"


def _reject(unit: str, message: str, raw: Any = "") -> ErrorRecord:
    raw_text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
    return ErrorRecord(unit=unit, stage=STAGE, error_type="Rejected", message=message, raw=raw_text[:4000])


def normalize(
    raw_tools: list[Any], server: str, version: str, provenance: dict[str, Any], label: str | None = None
) -> tuple[list[ToolSpec], list[ErrorRecord]]:
    """ToolSpecs for the tools that can be offered to a model; a rejection with a reason for the rest."""
    toolset_id = content_hash({"server": server, "version": version})
    category = label or _slug(server)
    specs, rejections = [], []
    for i, raw in enumerate(raw_tools):
        name = raw.get("name") if isinstance(raw, dict) else None
        where = f"{server or 'server'}/{name or f'tool #{i}'}"
        if not isinstance(raw, dict):
            rejections.append(_reject(toolset_id, f"{where}: a tool must be a JSON object", raw))
            continue
        if not isinstance(raw.get("inputSchema"), dict):
            rejections.append(_reject(toolset_id, f"{where}: no inputSchema object", raw))
            continue
        try:
            spec = ToolSpec(
                name=str(name or ""), title=raw.get("title"), description=raw.get("description") or "",
                inputSchema=raw["inputSchema"], outputSchema=raw.get("outputSchema"),
                annotations=raw.get("annotations"), kind="real", category=category, domain=category,
                toolset=server, toolset_id=toolset_id, unit=toolset_id,
                provenance={"server": server, "version": version, **provenance},
            )  # fmt: skip
        except ValueError as e:  # pydantic: a field of the wrong shape
            rejections.append(_reject(toolset_id, f"{where}: {e}", raw))
            continue
        if problems := schema_problems(spec):
            rejections.append(_reject(toolset_id, f"{where}: " + "; ".join(problems), raw))
            continue
        specs.append(spec)
    return specs, rejections


def _provenance(src: ServerSource, file: Path | None = None, launch: ServerLaunch | None = None) -> dict[str, Any]:
    prov: dict[str, Any] = {"transport": src.transport}
    if src.package:
        prov["package"] = src.package
    if launch is not None:
        prov["launch"] = launch.model_dump(mode="json", exclude_defaults=True)
    if src.stdio:
        prov["command"] = src.target
    elif src.url:
        prov["url"] = src.url
    if file is not None:
        prov["file"] = str(file)
    return prov


# -- driving -------------------------------------------------------------------------------------
def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


async def import_source(src: ServerSource, timeout: float) -> list[ImportResult]:
    """One live server -> one result; a JSON folder -> one result per file."""
    if src.json_path:
        path = Path(src.json_path)
        files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
        if not files:
            error = _reject(content_hash({"source": str(path)}), f"folder {path} rejected: it holds no .json files")
            return [ImportResult(source=str(path), rejections=[error])]
        return [_import_file(src, f) for f in files]
    start = time.monotonic()
    fetch = _fetch_stdio if src.stdio else _fetch_http
    try:
        async with asyncio.timeout(timeout):
            server, version, raw, launch = await fetch(src, timeout)
    except Exception as exc:  # a third-party server can fail in any way; it is one rejection
        why = _describe(exc)
        if why == "timed out":
            why = f"did not answer initialize + tools/list within {timeout:g}s"
        unit = content_hash({"source": src.target})
        error = _reject(unit, f"server `{src.target}` ({src.transport}) rejected: {why}")
        return [ImportResult(source=src.target, rejections=[error], duration_s=time.monotonic() - start)]
    server = server or src.label or src.target
    specs, rejections = normalize(raw, server, version, _provenance(src, launch=launch), src.label)
    return [ImportResult(source=src.target, server=server, version=version, tools=specs, rejections=rejections,
                         duration_s=time.monotonic() - start)]


def _import_file(src: ServerSource, file: Path) -> ImportResult:
    try:
        server, version, raw = _load_json(file)
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        error = _reject(content_hash({"source": str(file)}), f"file {file} rejected: {_describe(exc)}")
        return ImportResult(source=str(file), rejections=[error])
    server = server or src.label or file.stem
    specs, rejections = normalize(raw, server, version, _provenance(src, file), src.label)
    return ImportResult(source=str(file), server=server, version=version, tools=specs, rejections=rejections)


def _dedup(results: list[ImportResult], existing: list[ToolSpec]) -> None:
    """Drop exact duplicates (same MCP tool content) across sources and against tools already stored."""
    stored = {t.id for t in existing}
    seen = {content_hash(t.to_mcp()): t for t in existing}
    for result in results:
        kept = []
        for spec in result.tools:
            if spec.id in stored:
                continue  # the same record again: a re-import, not a duplicate
            first = seen.setdefault(content_hash(spec.to_mcp()), spec)
            if first is spec:
                kept.append(spec)
            else:
                msg = f"{spec.toolset}/{spec.name}: exact duplicate of tool {first.id} ({first.toolset}/{first.name})"
                result.rejections.append(_reject(spec.toolset_id, msg, spec.to_mcp()))
        result.tools = kept


async def import_tools(
    sources: list[ServerSource], store: RunStore | None = None, *, timeout: float = 60.0, concurrency: int = 4
) -> list[ImportResult]:
    """Import every source (live servers `concurrency` at a time) and append to the run store."""
    limit = asyncio.Semaphore(concurrency)

    async def bounded(src: ServerSource) -> list[ImportResult]:
        async with limit:
            return await import_source(src, timeout)

    results = [r for group in await asyncio.gather(*(bounded(s) for s in sources)) for r in group]
    _dedup(results, store.read("tools") if store else [])
    if store is not None:
        store.root.mkdir(parents=True, exist_ok=True)
        store.append("tools", [t for r in results for t in r.tools])
        store.append("errors", [e for r in results for e in r.rejections])
    return results
