"""How a real MCP server is started inside a sandbox: `ServerLaunch`, recorded at import on every tool
of the server (`ToolSpec.provenance["launch"]`), and its resolution for one sandbox.

Placeholders in argv and env: `{servers}` is where the catalog's servers are installed (the cache
dir on this machine, bound read-only into local sandboxes; /opt/mcp-servers in the `mcp` image
variant for docker and k8s), `{workspace}` the sandbox's workspace, `{data}` the data path of the
server's seeded environment (tools/environments.py). `ro_paths` are host paths a local sandbox
must see (a venv under /tmp, a repository given with --repository): they are bound read-only
(`with_binds`). A container cannot see host paths, so a server installed on the host runs there
only when it comes from the catalog.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sandboxes.base import Sandbox
from synth.core.errors import ConfigError
from synth.core.hashing import content_hash
from tools.environments import Environment, environment

CONTAINER_ROOT = "/opt/mcp-servers"  # the catalog's install root inside the `mcp` image variant
# What a local bwrap sandbox always sees (sandboxes/local.py): system dirs and the running Python.
DEFAULT_BINDS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def cache_dir() -> Path:
    """Where the catalog's servers are installed on this machine ($SYNTH_MCP_SERVERS wins)."""
    return Path(os.environ.get("SYNTH_MCP_SERVERS") or Path.home() / ".cache" / "synth" / "mcp-servers")


class ServerLaunch(BaseModel):
    """One real server: what to run, with what, and which seeded environment it works on."""

    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(min_length=1, description="The command; {servers}, {workspace} and {data} are replaced.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment of the server.")
    ro_paths: list[str] = Field(default_factory=list, description="Host paths a local sandbox binds read-only.")
    catalog: str | None = Field(None, description="The catalog label, when the server comes from tools/catalog.py.")
    environment: str | None = Field(None, description="Its seeded environment: git, filesystem, memory, sqlite, or "
                                    "None (a stateless server such as time).")
    network: bool = Field(False, description="It needs the network (fetch): sandboxes have none, so it stays simulated.")

    @property
    def key(self) -> str:
        return content_hash(self.model_dump(mode="json"), 12)

    @property
    def kind(self) -> Environment | None:
        return environment(self.environment)

    @property
    def runnable(self) -> bool:
        """Whether rollouts run it for real (else the LLM tool simulator plays its tools)."""
        return not self.network

    def describe(self) -> str:
        return self.catalog or shlex.join(self.argv)


def is_local(sandbox: Sandbox) -> bool:
    """Whether the sandbox sees this machine's paths (the local backend), rather than an image's."""
    return getattr(getattr(sandbox, "cfg", None), "type", "local") == "local"


def servers_root(local: bool) -> str:
    return str(cache_dir()) if local else CONTAINER_ROOT


def host_paths(launch: ServerLaunch) -> list[str]:
    """The host paths a local sandbox must bind for this server: its ro_paths, {servers} resolved."""
    root = servers_root(True)
    return [p.replace("{servers}", root) for p in launch.ro_paths]


def command(launch: ServerLaunch, sandbox: Sandbox) -> list[str]:
    """argv that starts the server inside `sandbox` (with `env ...` in front when it has an environment)."""
    local = is_local(sandbox)
    if not local and launch.catalog is None and (launch.ro_paths or launch.argv[0].startswith("/")):
        raise ConfigError(
            f"MCP server `{launch.describe()}` is installed on this machine ({(launch.ro_paths or launch.argv)[0]}), "
            f"which a {getattr(sandbox.cfg, 'type', 'container')} sandbox cannot see: run it with rollout.sandbox "
            "{type: local}, or use a catalog server (the docker image variant `mcp` carries them: "
            "`synth sandboxes build-image --variant mcp`)")
    kind = launch.kind
    values = {"{servers}": servers_root(local), "{workspace}": sandbox.workspace,
              "{data}": kind.data_path(sandbox.workspace) if kind else sandbox.workspace}

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    env = {**(kind.env if kind else {}), **launch.env}
    argv = [fill(a) for a in launch.argv]
    return ["env", *(f"{k}={fill(v)}" for k, v in sorted(env.items()))] + argv if env else argv


def with_binds(sandbox_cfg: Any, launches: list[ServerLaunch]) -> Any:
    """The sandbox config that lets these servers run: a local one binds their host paths read-only."""
    if getattr(sandbox_cfg, "type", None) != "local":
        return sandbox_cfg
    wanted = [p for launch in launches for p in host_paths(launch) if p not in sandbox_cfg.ro_paths]
    if not wanted:
        return sandbox_cfg
    return sandbox_cfg.model_copy(update={"ro_paths": [*sandbox_cfg.ro_paths, *dict.fromkeys(wanted)]})


# ---------------------------------------------------------------- a command line's host paths


def _seen_by_default(path: str) -> bool:
    real = os.path.realpath(path)
    roots = [*DEFAULT_BINDS, sys.prefix, sys.base_prefix]
    return any(real == r or real.startswith(r.rstrip("/") + "/") for r in map(os.path.realpath, roots))


def _install_root(executable: str) -> str:
    """The dir to bind for an executable: a venv or prefix (the parent of its bin/), else its own dir."""
    parent = os.path.dirname(os.path.abspath(executable))
    return os.path.dirname(parent) if os.path.basename(parent) == "bin" else parent


def _interpreter(script: str) -> str | None:
    """The absolute interpreter of a `#!` script (a venv's python), if it names one."""
    try:
        with open(script, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    parts = first[2:].decode(errors="replace").split()
    if parts and parts[0] == "/usr/bin/env" and len(parts) > 1:
        return shutil.which(parts[1])
    return parts[0] if parts and parts[0].startswith("/") else None


def stdio_binds(argv: list[str]) -> tuple[list[str], list[str]]:
    """(argv with the executable resolved, host paths it needs bound read-only) for a `--stdio` command
    run in a local sandbox, which sees only system dirs, the running Python and its workspace. A
    command that cannot run here is a ConfigError naming the path and the fix."""
    exe = argv[0]
    found = shutil.which(exe) if "/" not in exe else (exe if os.path.isfile(exe) else None)
    if found is None:
        where = f"{exe}: no such file" if "/" in exe else f"{exe!r} is not on PATH ({os.environ.get('PATH', '')})"
        raise ConfigError(f"MCP server command `{shlex.join(argv)}`: {where}. Give the server's full path "
                          "(e.g. /path/to/venv/bin/mcp-server-time) or install it: pip install mcp-server-time")
    if not os.access(found, os.X_OK):
        raise ConfigError(f"MCP server command `{shlex.join(argv)}`: {found} is not executable (chmod +x {found})")
    found = os.path.abspath(found)
    binds: list[str] = []
    interpreter = _interpreter(found)
    for path in (found, os.path.realpath(found), interpreter, interpreter and os.path.realpath(interpreter)):
        if path and not _seen_by_default(path):
            binds.append(_install_root(path))
    for arg in argv[1:]:  # path arguments: --repository /srv/repo, a config file, a data dir
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
        if value.startswith("/") and os.path.exists(value) and not _seen_by_default(value):
            binds.append(os.path.realpath(value))
    return [found, *argv[1:]], list(dict.fromkeys(binds))
