"""MCP over a sandbox pipe, for real: the official SDK's client and server, inside the local sandbox."""

import sys
import time
import warnings
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from sandboxes import provision
from sandboxes.local import LocalConfig
from synth.core.errors import ToolError
from tools.mcp_pipe import mcp_session

SERVER = (Path(__file__).parent / "fixtures" / "counter_server.py").read_bytes()
PY = sys.executable


@pytest.fixture(params=["auto", "none"])
async def sandbox_factory(request, tmp_path):
    """Sandboxes with the counter server copied into the workspace (bwrap sees nothing else)."""

    async def make(stack):
        sb = await stack.enter_async_context(provision(LocalConfig(root=str(tmp_path), isolation=request.param)))
        await sb.write_file("counter_server.py", SERVER)
        return sb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        async with AsyncExitStack() as stack:
            yield lambda: make(stack)


async def test_list_and_call_tools_state_persists(sandbox_factory):
    sb = await sandbox_factory()
    async with mcp_session(sb, [PY, "counter_server.py"]) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(tools) == {"increment", "crash"}
        schema = tools["increment"].input_schema
        assert schema["type"] == "object" and schema["properties"]["by"]["type"] == "integer"
        first = await session.call_tool("increment", {})
        second = await session.call_tool("increment", {})
        assert [first.structured_content, second.structured_content] == [{"result": 1}, {"result": 2}]
        assert not second.is_error and second.content[0].text == "2"
    assert await sb.read_file("counter.txt") == b"2"  # the state lives in the workspace

    # A new server in the same sandbox picks up the same state.
    async with mcp_session(sb, [PY, "counter_server.py"]) as session:
        assert (await session.call_tool("increment", {"by": 5})).structured_content == {"result": 7}


async def test_state_never_crosses_sandboxes(sandbox_factory):
    a, b = await sandbox_factory(), await sandbox_factory()
    async with mcp_session(a, [PY, "counter_server.py"]) as sa, mcp_session(b, [PY, "counter_server.py"]) as sb:
        assert (await sa.call_tool("increment", {})).structured_content == {"result": 1}
        assert (await sa.call_tool("increment", {})).structured_content == {"result": 2}
        assert (await sb.call_tool("increment", {})).structured_content == {"result": 1}


async def test_tool_error_is_a_result_not_an_exception(sandbox_factory):
    sb = await sandbox_factory()
    async with mcp_session(sb, [PY, "counter_server.py"]) as session:
        result = await session.call_tool("increment", {"by": "not a number"})
        assert result.is_error


async def test_server_exiting_at_once_fails_fast(sandbox_factory):
    sb = await sandbox_factory()
    argv = [PY, "-c", "import sys; print('no such config', file=sys.stderr); sys.exit(2)"]
    start = time.monotonic()
    with pytest.raises(ToolError) as info:
        async with mcp_session(sb, argv):
            pass
    elapsed = time.monotonic() - start
    assert elapsed < 3, elapsed
    assert "failed to initialize" in str(info.value) and "no such config" in str(info.value)
    assert "sys.exit(2)" in str(info.value)  # names the command


async def test_init_timeout_names_the_command(sandbox_factory):
    sb = await sandbox_factory()
    start = time.monotonic()
    with pytest.raises(ToolError, match=r"did not initialize within 0.5s") as info:
        async with mcp_session(sb, [PY, "-c", "import time; time.sleep(60)"], init_timeout=0.5):
            pass
    assert "time.sleep(60)" in str(info.value)
    assert time.monotonic() - start < 5


async def test_crash_mid_session_raises_promptly(sandbox_factory):
    sb = await sandbox_factory()
    start = time.monotonic()
    with pytest.raises(ToolError, match="closed the connection") as info:
        async with mcp_session(sb, [PY, "counter_server.py"]) as session:
            start = time.monotonic()
            await session.call_tool("crash", {})
    assert time.monotonic() - start < 3
    assert "crashing on purpose" in str(info.value)


async def test_errors_in_the_body_come_out_unwrapped(sandbox_factory):
    sb = await sandbox_factory()
    with pytest.raises(KeyError):
        async with mcp_session(sb, [PY, "counter_server.py"]):
            raise KeyError("mine")


async def test_call_latency(sandbox_factory, capsys):
    sb = await sandbox_factory()
    start = time.monotonic()
    async with mcp_session(sb, [PY, "counter_server.py"]) as session:
        await session.list_tools()
        ready = time.monotonic() - start
        n = 200
        start = time.monotonic()
        for _ in range(n):
            await session.call_tool("increment", {})
        per_call_ms = (time.monotonic() - start) / n * 1000
    assert await sb.read_file("counter.txt") == str(n).encode()
    with capsys.disabled():
        mode = "bwrap" if sb.isolated else "plain"
        print(f"\n[{mode}] spawn+initialize+list_tools {ready:.2f} s; call_tool {per_call_ms:.2f} ms")
