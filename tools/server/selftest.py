"""`python -m tools.server.selftest --module impl.py --tests tests.py [--specs tools.json]`: a tiny test runner.

pytest is not in the sandbox image. Runs every `test_*` function of the tests file (plain asserts;
`import impl` gives the module under test) and prints one JSON report on stdout:
{"passed": bool, "problems": [...], "tests": [{"name", "ok", "error"[, "function"]}], "untested": [...]}
("function": the module's function the error came from, if any).
Besides the tests, the module must fit its tools (contract_problems) and every tool must be called
by some test: generated tests cannot pass by testing nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import traceback
from types import ModuleType
from typing import Any, Callable

from tools.server.toolset import contract_problems, load_module, load_tools


def _tracked(name: str, fn: Callable[..., Any], called: set[str]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(state: Any, *args: Any, **kwargs: Any) -> Any:
        called.add(name)
        result = fn(state, *args, **kwargs)
        # What the server would do with it: the result and the state must be JSON.
        json.dumps(result)
        json.dumps(state)
        return result

    return wrapper


def _failure(exc: BaseException) -> str:
    """The error and the failing line of the generated code, short enough to show an LLM."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} (line {exc.lineno}: {(exc.text or '').strip()})"[:600]
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.endswith("selftest.py") and not f.filename.startswith("<frozen")]
    where = f" (line {frames[-1].lineno}: {frames[-1].line})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"[:600]


def _culprit(exc: BaseException, module_path: str) -> str:
    """The module's function where the error was raised ("" when it was raised in the tests): the
    harness re-drafts that function's body."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) == module_path]
    return frames[-1].name if frames else ""


def run(module_path: str, tests_path: str, specs_path: str | None) -> dict[str, Any]:
    report: dict[str, Any] = {"passed": False, "problems": [], "tests": [], "untested": []}
    try:
        module = load_module(module_path, "impl")
        tools = load_tools(module, specs_path)
    except BaseException as e:  # noqa: BLE001 - a broken module is a result to report
        report["problems"].append(f"the module does not import: {_failure(e)}")
        return report
    report["problems"] += contract_problems(module, tools)
    called: set[str] = set()
    for tool in tools:
        if callable(fn := getattr(module, tool["name"], None)):
            setattr(module, tool["name"], _tracked(tool["name"], fn, called))
    try:
        tests: ModuleType = load_module(tests_path, "impl_tests")
    except BaseException as e:  # noqa: BLE001
        report["problems"].append(f"the tests do not import: {_failure(e)}")
        return report
    names = [n for n in vars(tests) if n.startswith("test_") and callable(getattr(tests, n))]
    if not names:
        report["problems"].append("the tests file defines no test_* function")
    for name in names:
        try:
            getattr(tests, name)()
            report["tests"].append({"name": name, "ok": True, "error": ""})
        except BaseException as e:  # noqa: BLE001 - SystemExit in generated code is a failure too
            report["tests"].append({"name": name, "ok": False, "error": _failure(e),
                                    "function": _culprit(e, os.path.abspath(module_path))})
    report["untested"] = sorted(t["name"] for t in tools if t["name"] not in called)
    report["passed"] = not report["problems"] and bool(names) and not report["untested"] and all(
        t["ok"] for t in report["tests"])
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.server.selftest", description=__doc__)
    parser.add_argument("--module", required=True)
    parser.add_argument("--tests", required=True)
    parser.add_argument("--specs")
    args = parser.parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):  # prints in generated code must not corrupt the report
        report = run(args.module, args.tests, args.specs)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
