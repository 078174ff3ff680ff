"""Reference MCP servers that install here (PyPI, npm), how to install them and how to start them.

Every entry was checked to install and list its tools on this kind of machine (see
tests/test_mcp_import.py). The PyPI servers are written for mcp 1.x, which mcp 2.x broke, so they
live in their own venv pinned `mcp<2`; the npm ones in one `npm install --prefix` dir. Both sit in a
cache dir (default ~/.cache/synth/mcp-servers, or $SYNTH_MCP_SERVERS) and are installed once:
`ensure_installed()` is idempotent (a stamp file holds the hash of what was asked for). The
docker image variant `mcp` carries the same layout at /opt/mcp-servers (sandboxes/image/build.py),
so an entry's `launch()` (tools/launch.py) starts it in either place.

`environment` names the seeded environment a server works on (tools/environments.py); `network`
marks servers that need the network (fetch): sandboxes have none, so their tools stay simulated.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from synth.core.errors import ConfigError
from synth.core.hashing import content_hash
from tools.launch import ServerLaunch, cache_dir
from tools.mcp_import import ServerSource

__all__ = ["CATALOG", "CatalogServer", "by_label", "cache_dir", "catalog_sources", "ensure_installed"]


class CatalogServer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(description="Short name; also the category/domain of its tools.")
    ecosystem: Literal["pypi", "npm"]
    package: str
    version: str
    argv: list[str] = Field(description="Command relative to the cache's bin dir; {workspace} is the sandbox's "
                            "workspace, {data} the data path of its environment.")
    environment: str | None = Field(None, description="Its seeded environment (tools/environments.py), if stateful.")
    network: bool = Field(False, description="Needs the network: its tools stay simulated in rollouts.")

    def launch(self) -> ServerLaunch:
        """How rollouts start it: from the install root of the sandbox's view ({servers})."""
        bin_dir = "venv/bin" if self.ecosystem == "pypi" else "npm/node_modules/.bin"
        return ServerLaunch(argv=[f"{{servers}}/{bin_dir}/{self.argv[0]}", *self.argv[1:]], ro_paths=["{servers}"],
                            catalog=self.label, environment=self.environment, network=self.network)


CATALOG: list[CatalogServer] = [
    CatalogServer(label="time", ecosystem="pypi", package="mcp-server-time", version="2026.10.10",
                  argv=["mcp-server-time", "--local-timezone", "UTC"]),
    CatalogServer(label="fetch", ecosystem="pypi", package="mcp-server-fetch", version="2026.10.10",
                  argv=["mcp-server-fetch"], network=True),
    CatalogServer(label="git", ecosystem="pypi", package="mcp-server-git", version="2026.10.10",
                  argv=["mcp-server-git"], environment="git"),
    CatalogServer(label="sqlite", ecosystem="pypi", package="mcp-server-sqlite", version="2025.4.25",
                  argv=["mcp-server-sqlite", "--db-path", "{data}"], environment="sqlite"),
    CatalogServer(label="memory", ecosystem="npm", package="@modelcontextprotocol/server-memory",
                  version="2026.8.31", argv=["mcp-server-memory"], environment="memory"),
    CatalogServer(label="filesystem", ecosystem="npm", package="@modelcontextprotocol/server-filesystem",
                  version="2026.8.31", argv=["mcp-server-filesystem", "{data}"], environment="filesystem"),
    CatalogServer(label="everything", ecosystem="npm", package="@modelcontextprotocol/server-everything",
                  version="2026.8.31", argv=["mcp-server-everything"]),
    CatalogServer(label="sequential-thinking", ecosystem="npm",
                  package="@modelcontextprotocol/server-sequential-thinking", version="2026.8.31",
                  argv=["mcp-server-sequential-thinking"]),
]  # fmt: skip


def by_label(label: str) -> CatalogServer | None:
    return next((s for s in CATALOG if s.label == label), None)


def _bin_dir(root: Path, ecosystem: str) -> Path:
    return root / "venv" / "bin" if ecosystem == "pypi" else root / "npm" / "node_modules" / ".bin"


async def _run(*argv: str | Path) -> None:
    try:
        proc = await asyncio.create_subprocess_exec(*map(str, argv), stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
    except FileNotFoundError:
        raise ConfigError(f"`{argv[0]}` is not installed; the npm servers need Node.js: apt-get install nodejs npm") from None
    out, _ = await proc.communicate()
    if proc.returncode:
        tail = out.decode(errors="replace")[-2000:]
        raise ConfigError(f"`{' '.join(map(str, argv))}` failed (exit {proc.returncode}):\n{tail}")


async def ensure_installed(servers: list[CatalogServer] | None = None, root: Path | None = None) -> Path:
    """Install the catalog's packages into the cache dir unless the same set is already there."""
    servers = CATALOG if servers is None else servers
    root = root or cache_dir()
    pypi = [f"{s.package}=={s.version}" for s in servers if s.ecosystem == "pypi"]
    npm = [f"{s.package}@{s.version}" for s in servers if s.ecosystem == "npm"]
    jobs = []
    if pypi:
        jobs.append(_install_pypi(root, pypi))
    if npm:
        jobs.append(_install_npm(root, npm))
    await asyncio.gather(*jobs)  # pip and npm share nothing: install side by side
    return root


async def _install_pypi(root: Path, requirements: list[str]) -> None:
    venv, reqs = root / "venv", ["mcp<2", *sorted(requirements)]
    stamp = venv / ".synth-stamp"
    if stamp.exists() and stamp.read_text() == content_hash(reqs):
        return
    root.mkdir(parents=True, exist_ok=True)
    if not (venv / "bin" / "python").exists():
        await _run(sys.executable, "-m", "venv", venv)
    await _run(venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs)
    stamp.write_text(content_hash(reqs))


async def _install_npm(root: Path, packages: list[str]) -> None:
    prefix, pkgs = root / "npm", sorted(packages)
    stamp = prefix / ".synth-stamp"
    if stamp.exists() and stamp.read_text() == content_hash(pkgs):
        return
    prefix.mkdir(parents=True, exist_ok=True)
    await _run("npm", "install", "--prefix", prefix, "--no-audit", "--no-fund", "--loglevel=error", *pkgs)
    stamp.write_text(content_hash(pkgs))


def catalog_sources(servers: list[CatalogServer] | None = None, root: Path | None = None) -> list[ServerSource]:
    """ServerSources that start the (installed) catalog servers over stdio."""
    root = root or cache_dir()
    sources = []
    for s in CATALOG if servers is None else servers:
        bin_dir = _bin_dir(root, s.ecosystem)
        argv = [str(bin_dir / s.argv[0]), *s.argv[1:]]
        # bwrap only sees /usr, /etc, the Python prefix and the workspace: bind the cache read-only.
        sources.append(ServerSource(label=s.label, stdio=argv, package=f"{s.ecosystem}:{s.package}=={s.version}",
                                    ro_paths=[str(root)], catalog=s.label, environment=s.environment,
                                    launch=s.launch()))
    return sources


async def configured_sources(entries: list[str | dict]) -> list[ServerSource]:
    """`tools.servers` as sources: a catalog label (installed first, once), a stdio command line, or a
    servers-file entry."""
    labels = [e for e in entries if isinstance(e, str) and by_label(e.strip())]
    servers = [by_label(label.strip()) for label in labels]
    root = await ensure_installed(servers) if servers else cache_dir()  # type: ignore[arg-type]
    catalog = dict(zip(labels, catalog_sources(servers, root=root)))  # type: ignore[arg-type]
    return [catalog[e] if e in catalog else ServerSource.model_validate(e) if isinstance(e, dict)
            else ServerSource(stdio=e) for e in entries]
