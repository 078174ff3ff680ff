"""The local sandbox for real: what is particular to it (bubblewrap isolation, limits, the host
environment kept out, leftovers found by tag). The contract every backend meets is
tests/test_sandbox_contract.py."""

import os
import socket
import sys
import warnings

import pytest

from sandboxes import provision
from sandboxes.local import LocalConfig, LocalSandbox, _warn_unisolated
from synth.core.errors import SandboxError

PY = sys.executable


@pytest.fixture(params=["auto", "none"])
async def sandbox(request, tmp_path):
    """Each behaviour both ways: under bwrap (auto, where it works) and as a plain subprocess."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        async with provision(LocalConfig(root=str(tmp_path), isolation=request.param)) as sb:
            yield sb


async def test_the_workspace_has_the_same_path_inside_and_out(sandbox):
    assert os.path.isdir(sandbox.workspace)
    result = await sandbox.exec(["pwd"])
    assert result.stdout.strip() == sandbox.workspace


async def test_exec_missing_executable_is_127(sandbox):
    result = await sandbox.exec(["no-such-tool-xyz", "--help"])
    assert result.exit_code == 127 and "no-such-tool-xyz" in result.stderr and "not found" in result.stderr


async def test_exec_timeout_kills_the_whole_group(sandbox):
    # A background grandchild would keep stdout open forever if only the direct child died.
    result = await sandbox.exec(["sh", "-c", "echo started; sleep 30 & sleep 30"], timeout=0.5)
    assert result.timed_out and result.exit_code != 0
    assert result.stdout == "started\n"  # partial output survives the timeout
    assert result.duration_s < 5


async def test_exec_timeout_capped_by_config(tmp_path):
    async with provision(LocalConfig(root=str(tmp_path), exec_timeout_s=0.3)) as sb:
        result = await sb.exec(["sleep", "10"], timeout=60)
    assert result.timed_out and result.duration_s < 5


async def test_memory_limit(tmp_path):
    async with provision(LocalConfig(root=str(tmp_path), memory_mb=256)) as sb:
        result = await sb.exec([PY, "-c", "b = bytearray(1 << 30)"])
    assert result.exit_code != 0 and "MemoryError" in result.stderr


async def test_a_symlink_out_of_the_workspace_is_refused(sandbox):
    os.symlink("/etc", os.path.join(sandbox.workspace, "link"))
    with pytest.raises(SandboxError, match="outside the workspace"):
        await sandbox.read_file("link/passwd")
    with pytest.raises(SandboxError, match="outside the workspace"):
        await sandbox.write_file("link/passwd", b"x")


async def test_under_bwrap_a_sandbox_cannot_even_name_another_ones_workspace(tmp_path):
    async with provision(LocalConfig(root=str(tmp_path))) as a, provision(LocalConfig(root=str(tmp_path))) as b:
        await a.write_file("secret.txt", b"a's")
        result = await b.exec(["cat", os.path.join(a.workspace, "secret.txt")])
        assert (result.exit_code != 0) is a.isolated


async def test_stop_removes_workspace_and_is_idempotent(tmp_path):
    sb = LocalSandbox(LocalConfig(root=str(tmp_path)), {})
    await sb.stop()  # safe before start
    with pytest.raises(SandboxError, match="not started"):
        await sb.spawn(["cat"])
    await sb.start()
    workspace = sb.workspace
    pipe = await sb.spawn(["sleep", "30"])
    await sb.stop()
    await sb.stop()
    assert not os.path.exists(workspace)
    assert await pipe.read() == b""  # the child is gone
    with pytest.raises(SandboxError, match="not started"):
        await sb.exec(["true"])


async def test_spawn_stderr_never_blocks_and_is_kept(sandbox):
    # 1 MiB of stderr would fill a pipe nobody reads; it goes to a file instead.
    pipe = await sandbox.spawn([PY, "-c", "import sys; sys.stderr.write('e' * (1 << 20) + 'END'); print('done')"])
    assert await pipe.readline() == b"done\n"
    assert pipe.stderr_tail(10).endswith("END")
    await pipe.close()


async def test_close_kills_a_child_that_ignores_stdin(sandbox):
    pipe = await sandbox.spawn(
        [PY, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"]
    )
    await pipe.close()  # stdin EOF ignored, SIGTERM ignored outside bwrap: SIGKILL ends it
    assert await pipe.read() == b""


async def test_spawn_missing_executable(sandbox):
    with pytest.raises(SandboxError, match="not found"):
        await sandbox.spawn(["no-such-server-xyz"])


async def test_host_environment_not_inherited(sandbox, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    result = await sandbox.exec(["env"])
    assert "sk-secret" not in result.stdout and f"HOME={sandbox.workspace}" in result.stdout


async def test_isolation_none_warns(tmp_path):
    _warn_unisolated.cache_clear()  # it warns once per process
    sb = LocalSandbox(LocalConfig(root=str(tmp_path), isolation="none"), {})
    with pytest.warns(RuntimeWarning, match="NOT isolated"):
        await sb.start()
    try:
        assert not sb.isolated
        assert (await sb.exec(["echo", "hi"])).stdout == "hi\n"
    finally:
        await sb.stop()


@pytest.fixture
async def jailed(tmp_path):
    try:
        async with provision(LocalConfig(root=str(tmp_path), isolation="bwrap")) as sb:
            yield sb
    except SandboxError as e:
        assert "apt-get install bubblewrap" in str(e)
        pytest.skip(f"bubblewrap unusable here: {e}")


async def test_bwrap_has_no_network(jailed):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('connected')"
        result = await jailed.exec([PY, "-c", code])
    assert result.exit_code != 0 and "connected" not in result.stdout
    assert "ConnectionRefused" in result.stderr or "unreachable" in result.stderr.lower()


async def test_bwrap_system_is_read_only(jailed):
    result = await jailed.exec(
        ["sh", "-c", "touch /usr/synth-escape; touch /etc/synth-escape; mount -o remount,rw /usr"]
    )
    assert result.exit_code != 0
    assert not os.path.exists("/usr/synth-escape") and not os.path.exists("/etc/synth-escape")
    assert "Read-only file system" in result.stderr


async def test_bwrap_private_pids_and_no_capabilities(jailed):
    pids = await jailed.exec(["sh", "-c", "ls /proc | grep -c '^[0-9]'"])
    assert int(pids.stdout) <= 5  # only this command's processes: a private pid namespace
    caps = await jailed.exec(["grep", "CapEff", "/proc/self/status"])
    assert caps.stdout.split()[-1] == "0000000000000000"  # none, even as root


async def test_bwrap_hides_home_and_private_tmp(jailed, tmp_path):
    (tmp_path / "host-file").write_text("host")
    result = await jailed.exec(["sh", "-c", f"ls /root/.pyenv/shims; cat {tmp_path}/host-file"])
    assert result.exit_code != 0 and "host" not in result.stdout


async def test_bwrap_ro_paths_are_readable_not_writable(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "tool.py").write_text("print('from a read-only bind')")
    try:
        sandbox = provision(LocalConfig(root=str(tmp_path / "ws"), isolation="bwrap", ro_paths=[str(shared)]))
        async with sandbox as sb:
            ran = await sb.exec([PY, str(shared / "tool.py")])
            wrote = await sb.exec(["touch", str(shared / "new")])
    except SandboxError as e:
        pytest.skip(f"bubblewrap unusable here: {e}")
    assert ran.stdout == "from a read-only bind\n"
    assert wrote.exit_code != 0 and not (shared / "new").exists()


async def test_leftovers_of_a_run_are_found_even_when_the_kill_cut_their_labels_short(tmp_path):
    cfg = LocalConfig(root=str(tmp_path), isolation="none")
    mine, other = LocalSandbox(cfg, {"synth.run": "r1"}), LocalSandbox(cfg, {"synth.run": "r2"})
    await mine.start()
    await other.start()
    (tmp_path / os.path.basename(mine._dir) / "labels.json").write_text("")  # killed mid-write
    old_style = tmp_path / "synth-local-0123456789ab-xyz"  # named before run tags existed: labels only
    old_style.mkdir()
    (old_style / "labels.json").write_text('{"synth.run": "r1"}')
    assert LocalSandbox.remove_leftovers(cfg, "r1") == 2
    assert [p.name for p in tmp_path.glob("synth-local-*")] == [os.path.basename(other._dir)]
    await other.stop()
