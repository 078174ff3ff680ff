"""Importing real MCP tools: JSON dumps, a live streamable-HTTP server, and the catalog's real servers."""

import json
import shutil
import socket
import subprocess
import sys
import time
import warnings

import jsonschema
import pytest

from synth.core.errors import ConfigError
from synth.core.store import RunStore
from tools.catalog import CATALOG, catalog_sources, ensure_installed
from tools.mcp_import import ServerSource, import_tools
from tools.repository import load_tools, stats

GOOD = {"name": "get_time", "title": "Get time", "description": "Current time in a timezone.",
        "inputSchema": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
        "outputSchema": {"type": "object", "properties": {"time": {"type": "string"}}},
        "annotations": {"readOnlyHint": True}}  # fmt: skip
OTHER = {"name": "convert", "description": "Convert a time.", "inputSchema": {"type": "object", "properties": {}}}


def write(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


async def test_json_import_keeps_valid_tools_and_rejects_the_rest_with_reasons(tmp_path):
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    write(dumps / "clock.json", {"serverInfo": {"name": "clock", "version": "1.0"}, "tools": [
        GOOD,
        OTHER,
        {"name": "no_schema", "description": "Has no inputSchema."},
        {"name": "bad_type", "description": "Bad type.", "inputSchema": {"type": "object", "properties": {"x": {"type": "strnig"}}}},
        GOOD,  # an exact duplicate inside one file
    ]})  # fmt: skip
    write(dumps / "other.json", [OTHER])  # the same tool from another "server": a duplicate
    write(dumps / "broken.json", '{"tools": [')
    store = RunStore(tmp_path / "run")

    results = await import_tools([ServerSource(json_path=str(dumps))], store)

    by_file = {r.source.rsplit("/", 1)[-1]: r for r in results}
    assert set(by_file) == {"clock.json", "other.json", "broken.json"}
    tools = store.read("tools")
    assert [t.name for t in tools] == ["get_time", "convert"]
    got = tools[0]
    assert got.kind == "real" and got.title == "Get time" and got.annotations == {"readOnlyHint": True}
    assert got.output_schema == GOOD["outputSchema"] and got.toolset == "clock" and got.category == "clock"
    assert got.provenance["server"] == "clock" and got.provenance["version"] == "1.0"
    assert got.provenance["transport"] == "json" and got.provenance["file"].endswith("clock.json")

    errors = store.read("errors")
    assert {e.stage for e in errors} == {"tools-import"} and {e.error_type for e in errors} == {"Rejected"}
    messages = "\n".join(e.message for e in errors)
    assert "clock/no_schema: no inputSchema" in messages
    assert "clock/bad_type: inputSchema is not valid JSON Schema" in messages
    assert "clock/get_time: exact duplicate" in messages
    assert "other/convert: exact duplicate" in messages
    assert "broken.json rejected: JSONDecodeError" in messages
    assert len(errors) == 5

    # Importing again adds nothing: same ids, same rejections.
    again = await import_tools([ServerSource(json_path=str(dumps))], RunStore(tmp_path / "run"))
    assert sum(len(r.tools) for r in again) == 0
    assert len(RunStore(tmp_path / "run").read("tools")) == 2 and len(RunStore(tmp_path / "run").read("errors")) == 5

    s = stats(load_tools(tmp_path / "run"))
    assert s.total == 2 and s.by_kind == {"real": 2} and s.valid == 2 and s.exact_duplicates == 0


def test_server_source_needs_exactly_one_kind():
    with pytest.raises(ValueError, match="exactly one"):
        ServerSource(stdio=["x"], url="http://127.0.0.1:1/mcp")
    with pytest.raises(ValueError, match="exactly one"):
        ServerSource()


HTTP_SERVER = '''
import sys
from mcp.server import MCPServer
from mcp_types import ListToolsResult

class OnePerPage(MCPServer):
    """Hands out one tool per tools/list page, so the client must follow nextCursor."""
    async def _handle_list_tools(self, ctx, params):
        tools = await self.list_tools()
        start = int(params.cursor) if params and params.cursor else 0
        more = start + 1 < len(tools)
        return ListToolsResult(tools=tools[start:start + 1], next_cursor=str(start + 1) if more else None)

server = OnePerPage("weather-http", version="1.2.3")

@server.tool(title="Forecast")
def forecast(city: str, days: int = 3) -> dict[str, float]:
    """Daily temperature forecast for a city."""
    return {}

@server.tool()
def alerts(region: str) -> str:
    """Active weather alerts in a region."""
    return ""

server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server(tmp_path):
    script = write(tmp_path / "http_server.py", HTTP_SERVER)
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(script), str(port)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.kill()
        proc.wait()


async def test_http_import_follows_pagination_and_records_provenance(http_server, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens: one rejection, the import goes on
    results = await import_tools([ServerSource(url=http_server), ServerSource(url=dead)], RunStore(tmp_path),
                                 timeout=15)  # fmt: skip
    ok, failed = results
    assert (ok.server, ok.version) == ("weather-http", "1.2.3")
    tools = {t.name: t for t in ok.tools}
    assert set(tools) == {"forecast", "alerts"}  # two pages
    assert tools["forecast"].title == "Forecast" and tools["forecast"].output_schema is not None
    assert tools["forecast"].input_schema["required"] == ["city"]
    assert tools["forecast"].provenance == {"server": "weather-http", "version": "1.2.3",
                                            "transport": "streamable-http", "url": http_server}  # fmt: skip
    assert not failed.tools and "rejected" in failed.rejections[0].message


def _registry_unreachable() -> bool:
    """True when neither package registry answers (then installing the servers cannot work here)."""
    pip = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "mcp-server-time"], capture_output=True)
    npm = subprocess.run(["npm", "ping"], capture_output=True) if shutil.which("npm") else pip
    return pip.returncode != 0 and npm.returncode != 0


async def test_real_servers_import_with_crash_and_hang_rejected(tmp_path):
    try:
        root = await ensure_installed()
    except ConfigError:
        if _registry_unreachable():
            pytest.skip("the package registries are unreachable: cannot install the MCP servers")
        raise
    crash = ServerSource(stdio=[sys.executable, "-c", "import sys; sys.exit(1)"])
    hang = ServerSource(stdio=["sleep", "100"])
    store = RunStore(tmp_path / "run")
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no bwrap here: unisolated warning
        results = await import_tools([*catalog_sources(root=root), crash, hang], store, timeout=10, concurrency=9)
    assert time.monotonic() - start < 30  # the hang costs its timeout, not 100 s

    *real, crashed, hung = results
    assert len(real) == len(CATALOG) >= 5
    for result, entry in zip(real, CATALOG):
        assert result.tools, f"{entry.package}: {[e.message for e in result.rejections]}"
        assert result.server and result.version, entry.package
    tools = store.read("tools")
    assert len(tools) == sum(len(r.tools) for r in real)
    for tool in tools:
        jsonschema.Draft202012Validator.check_schema(tool.input_schema)
        assert tool.kind == "real" and tool.provenance["server"] and tool.provenance["version"]
        assert tool.provenance["transport"] == "stdio" and tool.provenance["package"].split(":")[0] in {"pypi", "npm"}
    assert {t.category for t in tools} == {s.label for s in CATALOG}
    assert not crashed.tools and "failed to initialize" in crashed.rejections[0].message
    assert not hung.tools and "within 10s" in hung.rejections[0].message
    assert {e.message for e in store.read("errors")} >= {crashed.rejections[0].message, hung.rejections[0].message}


def test_cli_import_and_stats(tmp_path):
    from typer.testing import CliRunner

    from synth.commands.tools import app

    write(tmp_path / "clock.json", {"tools": [GOOD, {"name": "x", "description": "No schema."}]})
    servers = write(tmp_path / "servers.yaml", f"servers:\n  - json_path: {tmp_path / 'clock.json'}\n    label: time\n")
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["import", "--servers-file", str(servers), "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    assert "imported 1 tools, rejected 1" in result.output
    assert load_tools(run)[0].category == "time"
    result = CliRunner().invoke(app, ["stats", "--run-dir", str(run)])
    assert result.exit_code == 0 and "schema-valid 1/1" in result.output
    result = CliRunner().invoke(app, ["import", "--run-dir", str(run)])
    assert result.exit_code == 2 and "nothing to import" in result.output
