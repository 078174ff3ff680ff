"""Serve toolset modules over MCP (stdio).

    python -m tools.server --module impl.py [--specs tools.json] --state state.json   # one toolset
    python -m tools.server --host                                                      # one per episode

The first serves one module until stdin closes. The second is what rollouts start once per sandbox:
each episode sends its module, tools and initial state (`synth/begin`) and gets a fresh process for
them (see tools/server/host.py).
"""

from __future__ import annotations

import argparse
import os
import sys

from tools.server.host import private_channel, run_host, serve_once, warm_up
from tools.server.toolset import Toolset, contract_problems, load_module, load_tools


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", action="store_true", help="serve one episode after another, each in a fresh "
                        "process forked on synth/begin (the module comes with the request)")
    parser.add_argument("--module", help="the toolset module (a .py file)")
    parser.add_argument("--specs", help="JSON list of MCP tool dicts (default: the module's TOOLS or SCHEMAS)")
    parser.add_argument("--state", default="state.json", help="state file, rewritten after every call")
    args = parser.parse_args(argv)
    channel = private_channel()
    if args.host:
        warm_up()
        _exit(run_host(channel))
    if not args.module:
        parser.error("--module is required (or --host)")
    module = load_module(args.module)  # fd 1 is stderr now: a print at import cannot reach the wire
    tools = load_tools(module, args.specs)
    if problems := contract_problems(module, tools):
        raise SystemExit("toolset module does not fit its tools:\n" + "\n".join(problems))
    _exit(serve_once(channel, Toolset(module, tools, args.state)))


def _exit(code: int) -> None:
    """Exit without the interpreter's teardown: tens of ms of CPU per process, for nothing to save
    (the state file is written after every call)."""
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
