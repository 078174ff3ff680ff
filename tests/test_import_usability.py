"""`synth tools import --stdio` with servers installed where a local sandbox does not look: a venv
under /tmp, a --repository outside the default binds. Their paths are bound read-only (for the
import and for rollouts); a command that cannot run fails naming the path and the fix."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import warnings

import pytest
from typer.testing import CliRunner

from sandboxes import provision
from sandboxes.local import LocalConfig
from synth.commands.tools import app
from synth.core.store import RunStore
from tools.catalog import by_label, cache_dir, ensure_installed
from tools.launch import with_binds
from tools.serving import real_parts, tool_runtime

pytestmark = pytest.mark.mcp


@pytest.fixture(scope="module")
def time_venv(tmp_path_factory):
    """A venv of its own (under the temp dir, outside every default bind) with mcp-server-time."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "mcp<2", "mcp-server-time==2026.10.10"], check=True)
    return venv


def import_cli(run_dir, *stdio: str):
    args = ["import", "--run-dir", str(run_dir), "--timeout", "60"]
    for command in stdio:
        args += ["--stdio", command]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return CliRunner().invoke(app, args)


def test_a_stdio_server_in_a_venv_under_tmp_imports_and_runs(time_venv, tmp_path):
    exe = time_venv / "bin" / "mcp-server-time"
    result = import_cli(tmp_path / "run", f"{exe} --local-timezone UTC")
    assert result.exit_code == 0, result.output
    assert "imported 2 tools, rejected 0" in result.output
    tools = RunStore(tmp_path / "run").read("tools")
    launch = tools[0].provenance["launch"]
    assert launch["argv"][0] == str(exe) and str(time_venv) in launch["ro_paths"]

    async def call() -> str:  # the recorded launch starts it again for rollouts, with the same binds
        parts, _ = real_parts(tools)
        async with provision(with_binds(LocalConfig(), [parts[0].launch])) as sandbox:
            async with tool_runtime(tools, sandbox, impl=None, llm=None, seed=0, real=parts) as runtime:
                await runtime.reset({})
                outcome = await runtime.call("get_current_time", {"timezone": "UTC"})
                await runtime.finish()
        assert not outcome.is_error, outcome.text
        return outcome.text

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert '"timezone": "UTC"' in asyncio.run(call())


def test_a_repository_outside_the_default_binds_is_bound_for_mcp_server_git(tmp_path):
    asyncio.run(ensure_installed([by_label("git")]))
    repo = tmp_path / "somewhere" / "repo"
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    exe = cache_dir() / "venv" / "bin" / "mcp-server-git"
    result = import_cli(tmp_path / "run", f"{exe} --repository {repo}")
    assert result.exit_code == 0, result.output
    assert "imported 12 tools" in result.output, result.output
    [tool, *_] = RunStore(tmp_path / "run").read("tools")
    assert str(repo) in tool.provenance["launch"]["ro_paths"]
    assert tool.provenance["launch"].get("environment") is None  # it serves its own repository, not a seed


def test_a_command_that_cannot_run_names_the_path_and_the_fix(tmp_path):
    result = import_cli(tmp_path / "run", "/nowhere/venv/bin/mcp-server-time", "no-such-mcp-server")
    assert result.exit_code == 0, result.output
    errors = " ".join(e.message for e in RunStore(tmp_path / "run").read("errors"))
    assert "/nowhere/venv/bin/mcp-server-time: no such file" in errors
    assert "'no-such-mcp-server' is not on PATH" in errors and "Give the server's full path" in errors
