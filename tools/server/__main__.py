"""`python -m tools.server --module impl.py [--specs tools.json] --state state.json`: serve over stdio."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from tools.server.toolset import Toolset, contract_problems, load_module, load_tools


def build_server(toolset: Toolset) -> Server:
    # The low-level server: the inputSchema goes out exactly as given (MCPServer would derive it from signatures).
    tools = [types.Tool.model_validate(t) for t in toolset.tools.values()]

    async def list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        text, is_error = toolset.call(params.name, params.arguments)
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=is_error)

    return Server("synth-toolset", on_list_tools=list_tools, on_call_tool=call_tool)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.server", description=__doc__)
    parser.add_argument("--module", required=True, help="the toolset module (a .py file)")
    parser.add_argument("--specs", help="JSON list of MCP tool dicts (default: the module's TOOLS or SCHEMAS)")
    parser.add_argument("--state", default="state.json", help="state file, rewritten after every call")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the MCP wire: a print at import must not reach it
        module = load_module(args.module)
    tools = load_tools(module, args.specs)
    if problems := contract_problems(module, tools):
        raise SystemExit("toolset module does not fit its tools:\n" + "\n".join(problems))
    server = build_server(Toolset(module, tools, args.state))

    async def serve() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(serve)


if __name__ == "__main__":
    main()
