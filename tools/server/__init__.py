"""The generic MCP server runner for executable synthetic toolsets; shipped into every sandbox.

    python -m tools.server --module impl.py --specs tools.json --state state.json
    python -m tools.server --host          (what rollouts run: one process per sandbox, see host.py)
    python -m tools.server.selftest --module impl.py --tests tests.py --specs tools.json

A toolset module defines `STATE_DEFAULT: dict` and one function per tool, `fn(state, **arguments)`,
returning a JSON-able result and mutating `state` in place; raising `ToolFailure(message)` (or any
exception) is a tool error result. Schemas come from `--specs` (a list of MCP tool dicts), else the
module's `TOOLS` (the same list) or `SCHEMAS` ({name: inputSchema}, descriptions from docstrings).

Only the stdlib and `jsonschema` are used (the MCP wire is spoken by wire.py): this runs on the
sandbox's python, where little else is installed.
"""


class ToolFailure(Exception):
    """Raised by a tool function: the message goes back to the caller as an error result."""
