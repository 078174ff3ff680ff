"""Turn a simulated toolset into an executable one: a Python module + tests (`synth tools implement`,
the stage in synth/stages/implement.py).

The harness writes what is deterministic (tools/scaffold.py: module header, STATE_DEFAULT from the
tool names, signatures that match each inputSchema exactly, docstrings) and the tests
(tools/smoke.py: schema-derived smoke tests: every tool called with valid sample arguments,
create-then-get round trips, delete-then-get). The LLM writes one function body per request
(few-shot by verb class, tools/prompts/implement_examples.md); each body must compile and use no
undefined name before it enters the module, else it is asked again with the problem shown.

The module and tests then run in a sandbox with the shipped runner's selftest (which also checks
the contract and that every tool is tested). A failing test names the function to blame (the
module frame the error came from, else the tools the message names); only those bodies are
drafted again, with the failure shown, for up to `max_repairs` rounds. A body the LLM never got to
compile is a harness stub that raises ToolFailure, so the other tools can still be tested; a module
with a stub never passes. Every toolset gets one Implementation record, passed or not, with the
errors of each failed round and `provenance` (who wrote what). tools.jsonl is append-only and
ToolSpec ids are content hashes, so specs are not rewritten.
"""

from __future__ import annotations

import asyncio
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from sandboxes import provision
from sandboxes.base import Sandbox
from synth.core.hashing import derive_seed
from synth.core.llm import LLM
from synth.core.prompts import render
from synth.core.records import Implementation, ToolSpec
from tools import scaffold
from tools.executable import HOME, MODULE_FILE, SPECS_FILE, python_argv, ship
from tools.smoke import smoke_tests

TESTS_FILE = f"{HOME}/tests.py"
BODY_ATTEMPTS = 4  # LLM replies per body and round until one compiles with no undefined name
BODY_MAX_TOKENS = 400
STUB = '    raise ToolFailure("not implemented: no LLM-written body compiled")'
EXAMPLES = Path(__file__).parent / "prompts" / "implement_examples.md"


class SelftestReport(BaseModel):
    """What `python -m tools.server.selftest` prints (tools/server/selftest.py)."""

    passed: bool = False
    problems: list[str] = Field(default_factory=list)
    tests: list[dict[str, Any]] = Field(default_factory=list)
    untested: list[str] = Field(default_factory=list)

    def failures(self) -> list[str]:
        out = list(self.problems)
        out += [f"{t['name']} failed: {t['error']}" for t in self.tests if not t.get("ok")]
        if self.untested:
            out.append(f"no test calls these tools: {', '.join(self.untested)}")
        return out

    def blame(self, names: list[str]) -> dict[str, str]:
        """Function -> the failure to show when re-drafting it. The module frame the error came
        from, else every tool the failure names (a round trip names its creator and its reader)."""
        out: dict[str, str] = {}
        for test in self.tests:
            if test.get("ok"):
                continue
            culprits = [test["function"]] if test.get("function") in names else [
                n for n in names if re.search(rf"\b{re.escape(n)}\b", f"{test['name']} {test['error']}")]
            for name in culprits:
                out.setdefault(name, test["error"])
        for problem in self.problems:
            for name in names:
                if re.search(rf"\b{re.escape(name)}\b", problem):
                    out.setdefault(name, problem)
        return out


class Body(BaseModel):
    """One function body and who wrote it."""

    text: str
    by: str  # "llm" or "stub"
    replies: int = 0


async def implement_toolset(llm: LLM, run_seed: int, unit_id: str, specs: list[ToolSpec], *, max_repairs: int,
                            sandbox: Any, labels: dict[str, str]) -> Implementation:
    """Draft, test (in a sandbox of config `sandbox`) and repair one toolset's module; the record says
    whether it passed, after how many rounds, and why each failed round failed."""
    first = specs[0]
    tools = [s.to_mcp() for s in specs]
    names = [t["name"] for t in tools]
    state_model = first.state_model or ""
    head = scaffold.header(first.toolset, first.domain, state_model, tools)
    heads = {t["name"]: scaffold.function_head(t) for t in tools}
    tests = smoke_tests(tools)
    context = f"The toolset: {first.toolset} (domain {first.domain}). Its state: {' '.join(state_model.split()) or '-'}\n"
    bodies: dict[str, Body] = {}
    todo: dict[str, str] = {name: "" for name in names}  # function -> the failure to show ("": first draft)
    errors: list[str] = []
    report, rounds, module = None, 0, ""
    async with provision(sandbox, labels=labels) as box:
        for attempt in range(max_repairs + 1):
            rounds += 1
            drafted = await asyncio.gather(*(
                draft_body(llm, run_seed, unit_id, attempt, head, heads[n], n, todo[n], names, context) for n in todo))
            for name, (body, problems) in zip(todo, drafted):
                body.replies += bodies[name].replies if name in bodies else 0
                bodies[name] = body
                errors += [f"round {rounds}: {name}: {p}" for p in problems]
            module = scaffold.assemble(head, [f"{heads[n]}\n{bodies[n].text}" for n in names])
            report = await run_selftest(box, module, tests, tools)
            stubs = [n for n in names if bodies[n].by == "stub"]
            if report.passed and not stubs:
                break
            failures = report.failures() + [f"{n}: the harness stub stands in for a body that never compiled"
                                            for n in stubs]
            errors.append(f"round {rounds}: " + "; ".join(failures))
            todo = {**report.blame(names), **{n: "no body compiled yet" for n in stubs}}
            todo = todo or {n: "; ".join(report.failures())[:600] for n in names}  # nothing to pin it on
    passed = bool(report and report.passed) and all(b.by == "llm" for b in bodies.values())
    return Implementation(
        unit=unit_id, toolset_id=first.toolset_id, toolset=first.toolset, domain=first.domain,
        tool_ids=[s.id for s in specs], module=module, tests=tests, passed=passed, rounds=rounds,
        errors=errors, sandbox=sandbox.type, provenance=provenance(bodies),
    )


def provenance(bodies: dict[str, Body]) -> dict[str, str]:
    by_llm = sorted(n for n, b in bodies.items() if b.by == "llm")
    stubs = sorted(n for n, b in bodies.items() if b.by == "stub")
    return {
        "scaffold": "harness: module docstring, STATE_DEFAULT (from tool names), signatures (from inputSchemas), "
                    "docstrings (from descriptions)",
        "bodies": "llm: " + (", ".join(by_llm) or "none") + ("; harness stubs: " + ", ".join(stubs) if stubs else ""),
        "tests": "harness: schema-derived smoke tests (tools/smoke.py)",
        "llm_replies": str(sum(b.replies for b in bodies.values())),
    }


async def draft_body(llm: LLM, run_seed: int, unit_id: str, attempt: int, head: str, function_head: str, name: str,
                     failure: str, names: list[str], context: str) -> tuple[Body, list[str]]:
    """One body from the LLM that compiles and uses only defined names, or the stub. Returns the
    body and the problems of the replies that were refused."""
    known = {"state", "STATE_DEFAULT", "ToolFailure", *names}
    problems: list[str] = []
    for tries in range(BODY_ATTEMPTS):
        shown = failure if not problems else problems[-1]
        messages = body_messages(scaffold.verb_class(name), head, function_head, shown, context)
        # Low temperature copies the examples' shape; warmer retries get out of a rut.
        reply = await llm.chat(messages, seed=derive_seed(run_seed, "implement", unit_id, name, attempt, tries),
                               max_tokens=BODY_MAX_TOKENS, temperature=min(0.2 + 0.25 * tries, 1.0))
        body = scaffold.extract_body(reply.message.get("content") or "", name)
        problem = scaffold.body_problem(head, function_head, body, known)
        if problem is None:
            return Body(text=body, by="llm", replies=tries + 1), problems
        problems.append(problem[:300])
    return Body(text=STUB, by="stub", replies=BODY_ATTEMPTS), problems


def body_messages(verb: str, head: str, function_head: str, failure: str, context: str = "") -> list[dict[str, str]]:
    """Few-shot chat: two worked examples of the same verb class, then the function to write."""
    messages: list[dict[str, str]] = []
    for example_head, example_body in examples()[verb]:
        messages += [{"role": "user", "content": render(__file__, "implement", head=example_head, context="")},
                     {"role": "assistant", "content": f"```python\n{example_body}\n```"}]
    state_line = next(line for line in head.splitlines() if line.startswith("STATE_DEFAULT"))
    target = f"{state_line}\n\n{function_head}"
    if failure:
        prompt = render(__file__, "implement_repair", head=target, failure=failure[:600], context=context)
    else:
        prompt = render(__file__, "implement", head=target, context=context)
    return [*messages, {"role": "user", "content": prompt}]


@lru_cache(maxsize=1)
def examples() -> dict[str, list[tuple[str, str]]]:
    """Verb class -> [(head, body)] from implement_examples.md; a head ends with its one-line docstring."""
    out: dict[str, list[tuple[str, str]]] = {}
    for section in re.split(r"^## ", EXAMPLES.read_text(), flags=re.M)[1:]:
        verb, _, rest = section.partition("\n")
        for code in re.findall(r"```python\n(.*?)```", rest, flags=re.S):
            lines = code.rstrip().splitlines()
            end = next(i for i, line in enumerate(lines) if line.strip().startswith('"""'))
            out.setdefault(verb.strip(), []).append(("\n".join(lines[: end + 1]), "\n".join(lines[end + 1:])))
    return out


async def run_selftest(box: Sandbox, module: str, tests: str, tools: list[dict[str, Any]],
                       timeout: float = 60.0) -> SelftestReport:
    """Run the tests inside the sandbox; a crash or a hang is a failed report, not an exception."""
    await ship(box, module, tools)
    await box.write_file(TESTS_FILE, tests.encode())
    argv = python_argv("tools.server.selftest", "--module", MODULE_FILE, "--tests", TESTS_FILE, "--specs", SPECS_FILE)
    result = await box.exec(argv, timeout=timeout)
    lines = result.stdout.strip().splitlines()
    try:
        return SelftestReport.model_validate_json(lines[-1])
    except (IndexError, ValueError):
        why = "timed out" if result.timed_out else f"exit {result.exit_code}"
        return SelftestReport(problems=[f"the test run crashed ({why}): {result.stderr.strip()[-800:]}"])
