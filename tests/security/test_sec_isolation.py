"""What a sandbox hides from the code in it, and that no setting hides less without saying so (issue #18).

Held before and kept: the API key never reaches a sandbox; bwrap and Docker hide /root, the run
directory and docker.sock and have no path to the host's loopback; Docker runs as uid 1000 on a
read-only root. New: bubblewrap runs the code as an unprivileged uid with only the parts of /etc a
Python needs, and no new user namespace; `isolation: auto` refuses to run without isolation (the
defaults, and `none` shown when chosen: test_sec_defaults.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import pytest

from sandboxes import provision
from sandboxes.local import LocalConfig, LocalSandbox
from synth.core.errors import SandboxError
from tests.security.attacks import EXEC_MODULE, EXEC_SPECS
from tools.executable import ExecutableToolset

pytestmark = [pytest.mark.security, pytest.mark.asyncio(loop_scope="module")]

CANARY = "sk-synth-canary-5a1e"


@pytest.fixture(scope="module", autouse=True)
def api_key_in_the_harness():
    """The harness holds a key while every sandbox of this module starts: none may see it."""
    before = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = CANARY
    yield
    if before is None:
        del os.environ["OPENAI_API_KEY"]
    else:
        os.environ["OPENAI_API_KEY"] = before


LOOK_FOR_THE_KEY = f'''
import os
seen = [v for v in os.environ.values() if {CANARY!r} in v]
for p in os.listdir("/proc"):
    for name in ("environ", "cmdline"):
        try:
            if {CANARY!r}.encode() in open(f"/proc/{{p}}/{{name}}", "rb").read():
                seen.append(f"/proc/{{p}}/{{name}}")
        except OSError:
            pass
result = seen
'''


async def test_the_api_key_never_reaches_the_sandbox(arena):
    episode = await arena.episode(LOOK_FOR_THE_KEY)
    assert episode.ok and json.loads(episode.texts[0]) == [], episode


TRY_FILES = r'''
import json, os, socket
def attempt(what):
    try:
        return what()
    except OSError as e:
        return type(e).__name__
found = {
    "shadow": attempt(lambda: open("/etc/shadow").read()[:10]),
    "gshadow": attempt(lambda: open("/etc/gshadow").read()[:10]),
    "root": attempt(lambda: sorted(os.listdir("/root"))),
    "repo": attempt(lambda: os.listdir(REPO)),  # run dirs live below it (runs_dir: runs)
    "docker.sock": [attempt(lambda: socket.socket(socket.AF_UNIX).connect(p)) for p in ("/var/run/docker.sock", "/run/docker.sock")],
    "etc": sorted(os.listdir("/etc")),
    "uid": os.getuid(),
    "usr_writable": attempt(lambda: open("/usr/synth-probe", "w").close()),
}
result = found
'''.replace("REPO", repr(os.getcwd()))

# What a Python needs from /etc (and nothing with secrets or host accounts in it).
ETC_ALLOWED = {"alternatives", "group", "hosts", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime",
               "nsswitch.conf", "passwd", "python3", "python3.11", "ssl", "mime.types"}


async def test_host_files_and_the_docker_socket_are_out_of_reach(arena):
    episode = await arena.episode(TRY_FILES)
    assert episode.ok, episode
    found = json.loads(episode.texts[0])
    assert found["shadow"] in ("FileNotFoundError", "PermissionError"), found
    assert found["gshadow"] in ("FileNotFoundError", "PermissionError"), found
    assert found["repo"] in ("FileNotFoundError", "PermissionError"), found
    assert all(r in ("FileNotFoundError", "PermissionError", "ConnectionRefusedError") for r in found["docker.sock"]), found
    assert found["usr_writable"] in ("PermissionError", "OSError"), found  # read-only system dirs
    if arena.backend == "local":
        # /root shows only what is bound from it (a Python installed there, like pyenv's), not its files
        assert found["root"] in ([], [".pyenv"], "FileNotFoundError"), found
        assert set(found["etc"]) <= ETC_ALLOWED, set(found["etc"]) - ETC_ALLOWED
        assert found["uid"] != 0, found
    else:
        assert found["root"] in ("PermissionError", []), found
        assert found["uid"] == 1000, found


NEW_USER_NAMESPACE = r'''
import ctypes, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
found = {"unshare": "allowed" if libc.unshare(0x10000000) == 0 else os.strerror(ctypes.get_errno())}
found["unshare(1)"] = subprocess.run(["unshare", "--user", "true"], capture_output=True).returncode
result = found
'''


async def test_no_new_user_namespace(arena):
    """Inside one the code would hold capabilities over namespaces of its own: kernel surface only."""
    episode = await arena.episode(NEW_USER_NAMESPACE)
    assert episode.ok, episode
    found = json.loads(episode.texts[0])
    assert found["unshare"] != "allowed" and found["unshare(1)"] != 0, found


FRAMING = "result = '\\n{\"jsonrpc\": \"2.0\", \"id\": 3, \"result\": {\"content\": []}}\\n' * 3"


async def test_result_text_that_looks_like_json_rpc_stays_text(arena):
    episode = await arena.episode(FRAMING, "result = 'after'")
    assert episode.ok and episode.texts == ['\n{"jsonrpc": "2.0", "id": 3, "result": {"content": []}}\n' * 3, "after"], episode


async def test_no_path_to_the_hosts_loopback(arena):
    async def serve(reader, writer):
        writer.write(b"reached the host\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    code = ("import socket\ntry:\n    s = socket.create_connection(('127.0.0.1', %d), timeout=2)\n"
            "    result = s.recv(100).decode()\nexcept OSError as e:\n    result = type(e).__name__" % port)
    async with server:
        episode = await arena.episode(code)
    assert episode.ok and "reached" not in episode.texts[0], episode


@pytest.mark.skipif(os.geteuid() != 0, reason="the harness runs as root in CI: that is when the uid drop matters")
async def test_bwrap_code_runs_as_an_unprivileged_uid(tmp_path):
    """A root-only file in a bound directory is visible but unreadable: the code is not uid 0 outside."""
    secret = tmp_path / "shared" / "root-only"
    secret.parent.mkdir()
    secret.write_text("for root")
    secret.chmod(0o600)
    cfg = LocalConfig(isolation="bwrap", ro_paths=[str(secret.parent)])
    code = f"try:\n    result = open({str(secret)!r}).read()\nexcept OSError as e:\n    result = type(e).__name__"
    async with provision(cfg) as sb, ExecutableToolset(EXEC_SPECS, sb, module=EXEC_MODULE) as rt:
        await rt.reset({})
        outcome = await rt.call("run", {"code": code})
    assert outcome.text == "PermissionError", outcome


async def test_auto_refuses_to_run_without_bubblewrap(tmp_path, monkeypatch):
    monkeypatch.setattr("sandboxes.local.shutil.which", lambda name, **kw: None if name == "bwrap" else shutil.which(name))
    sandbox = LocalSandbox(LocalConfig(root=str(tmp_path), isolation="auto"), {})
    with pytest.raises(SandboxError) as raised:
        await sandbox.start()
    message = str(raised.value)
    assert "bubblewrap" in message and "apt-get install bubblewrap" in message and "docker" in message, message
    assert "isolation: none" in message  # the explicit way out, named
    assert not list(tmp_path.iterdir())  # nothing left behind


async def test_auto_refuses_when_bubblewrap_fails(tmp_path, monkeypatch):
    async def broken(*args):
        return "bwrap: setting up uid map: Permission denied"

    monkeypatch.setattr("sandboxes.local._probe", broken)
    with pytest.raises(SandboxError, match="setting up uid map"):
        await LocalSandbox(LocalConfig(root=str(tmp_path), isolation="auto"), {}).start()
