"""The local sandbox for real: processes, files, isolation under bubblewrap when it works here."""

import os
import socket
import sys
import warnings

import pytest

from sandboxes.base import LocalConfig, Pipe, Sandbox, provision
from sandboxes.local import LocalSandbox, _warn_unisolated
from synth.core.errors import SandboxError

PY = sys.executable


@pytest.fixture(params=["auto", "none"])
async def sandbox(request, tmp_path):
    """Each behaviour both ways: under bwrap (auto, where it works) and as a plain subprocess."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        async with provision(LocalConfig(root=str(tmp_path), isolation=request.param)) as sb:
            yield sb


async def test_protocol_and_workspace(sandbox):
    assert isinstance(sandbox, Sandbox)
    assert os.path.isabs(sandbox.workspace) and os.path.isdir(sandbox.workspace)
    await sandbox.start()  # idempotent
    result = await sandbox.exec(["pwd"])
    assert result.stdout.strip() == sandbox.workspace


async def test_exec_output_and_exit_code(sandbox):
    result = await sandbox.exec([PY, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"])
    assert (result.exit_code, result.stdout, result.stderr, result.timed_out) == (3, "out\n", "err\n", False)
    assert result.duration_s > 0


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


async def test_files_round_trip(sandbox):
    await sandbox.write_file("a/b/data.bin", b"\x00\x01hello")
    assert await sandbox.read_file("a/b/data.bin") == b"\x00\x01hello"
    assert await sandbox.read_file(os.path.join(sandbox.workspace, "a/b/data.bin")) == b"\x00\x01hello"
    result = await sandbox.exec(["cat", "a/b/data.bin"])
    assert result.stdout == "\x00\x01hello"
    await sandbox.exec(["sh", "-c", "echo made-inside > inside.txt"])
    assert await sandbox.read_file("inside.txt") == b"made-inside\n"


async def test_read_missing_file_is_sandbox_error(sandbox):
    with pytest.raises(SandboxError, match="nope.txt"):
        await sandbox.read_file("nope.txt")


@pytest.mark.parametrize("path", ["../escape.txt", "a/../../escape.txt", "/etc/passwd", "link/passwd"])
async def test_path_escape_rejected(sandbox, path):
    os.symlink("/etc", os.path.join(sandbox.workspace, "link"))
    with pytest.raises(SandboxError, match="outside the workspace"):
        await sandbox.read_file(path)
    with pytest.raises(SandboxError, match="outside the workspace"):
        await sandbox.write_file(path, b"x")


async def test_sandboxes_do_not_see_each_other(tmp_path):
    async with provision(LocalConfig(root=str(tmp_path))) as a, provision(LocalConfig(root=str(tmp_path))) as b:
        assert a.id != b.id and a.workspace != b.workspace
        await a.write_file("secret.txt", b"a's")
        with pytest.raises(SandboxError):
            await b.read_file("secret.txt")
        assert (await b.exec(["ls"])).stdout == ""
        if a.isolated:  # under bwrap, b cannot even name a's workspace
            result = await b.exec(["cat", os.path.join(a.workspace, "secret.txt")])
            assert result.exit_code != 0


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


async def test_spawn_pipe_round_trip(sandbox):
    pipe = await sandbox.spawn([PY, "-u", "-c", "import sys\nfor line in sys.stdin: print(line.strip().upper())"])
    assert isinstance(pipe, Pipe)
    for word in (b"hello", b"again"):
        await pipe.write(word + b"\n")
        assert await pipe.readline() == word.upper() + b"\n"
    await pipe.close()
    await pipe.close()  # idempotent
    assert await pipe.read() == b""


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
    assert LocalSandbox.remove_leftovers("r1", str(tmp_path)) == 2
    assert [p.name for p in tmp_path.glob("synth-local-*")] == [os.path.basename(other._dir)]
    await other.stop()
