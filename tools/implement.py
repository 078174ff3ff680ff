"""`synth tools implement`: turn simulated toolsets into executable ones (a Python module + tests).

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
import logging
import re
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from sandboxes import SandboxConfig, provision
from sandboxes.base import Sandbox
from synth.core.hashing import content_hash
from synth.context import Context
from synth.core.units import StageStats, Unit, run_units
from synth.core.prompts import render
from synth.core.records import Agent, Implementation, ToolSpec
from tools import scaffold
from tools.compose import compose
from tools.executable import HOME, MODULE_FILE, SPECS_FILE, python_argv, ship
from tools.smoke import smoke_tests

TESTS_FILE = f"{HOME}/tests.py"
DEFAULT_MAX_REPAIRS = 2
BODY_ATTEMPTS = 4  # LLM replies per body and round until one compiles with no undefined name
BODY_MAX_TOKENS = 400
STUB = '    raise ToolFailure("not implemented: no LLM-written body compiled")'
EXAMPLES = Path(__file__).parent / "prompts" / "implement_examples.md"

log = logging.getLogger(__name__)


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


async def implement_tools(ctx: Context, *, max_repairs: int = DEFAULT_MAX_REPAIRS,
                          sandbox: SandboxConfig | None = None) -> StageStats:
    groups: dict[str, list[ToolSpec]] = defaultdict(list)
    for spec in ctx.store.read("tools"):
        if spec.kind == "simulated" and spec.toolset_id:
            groups[spec.toolset_id].append(spec)
    units = [Unit(content_hash(["implement", tid, sorted(s.id for s in specs)]), specs)
             for tid, specs in groups.items()]
    cfg = sandbox or ctx.cfg.rollout.sandbox

    async def work(unit: Unit[list[ToolSpec]]) -> list[Implementation]:
        return [await implement_toolset(ctx, unit.id, unit.payload, max_repairs=max_repairs, sandbox=cfg)]

    return await run_units(ctx, "implement", "implementations", units, work, ctx.cfg.concurrency)


async def implement_toolset(ctx: Context, unit_id: str, specs: list[ToolSpec], *, max_repairs: int,
                            sandbox: SandboxConfig) -> Implementation:
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
    labels = {"synth.run": ctx.cfg.name, "synth.implement": unit_id}
    async with provision(sandbox, labels=labels) as box:
        for attempt in range(max_repairs + 1):
            rounds += 1
            drafted = await asyncio.gather(*(
                draft_body(ctx, unit_id, attempt, head, heads[n], n, todo[n], names, context) for n in todo))
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
    record = Implementation(
        unit=unit_id, toolset_id=first.toolset_id, toolset=first.toolset, domain=first.domain,
        tool_ids=[s.id for s in specs], module=module, tests=tests, passed=passed, rounds=rounds,
        errors=errors, sandbox=sandbox.type, provenance=provenance(bodies),
    )
    if passed:  # readable copies beside the records (the record stays the source of truth)
        folder = ctx.store.root / "implementations"
        folder.mkdir(exist_ok=True)
        (folder / f"{first.toolset_id}.py").write_text(record.module)
        (folder / f"{first.toolset_id}_tests.py").write_text(record.tests)
    return record


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


async def draft_body(ctx: Context, unit_id: str, attempt: int, head: str, function_head: str, name: str,
                     failure: str, names: list[str], context: str) -> tuple[Body, list[str]]:
    """One body from the LLM that compiles and uses only defined names, or the stub. Returns the
    body and the problems of the replies that were refused."""
    known = {"state", "STATE_DEFAULT", "ToolFailure", *names}
    problems: list[str] = []
    for tries in range(BODY_ATTEMPTS):
        shown = failure if not problems else problems[-1]
        messages = body_messages(scaffold.verb_class(name), head, function_head, shown, context)
        # Low temperature copies the examples' shape; warmer retries get out of a rut.
        reply = await ctx.llm.chat(messages, seed=ctx.seed_for("implement", unit_id, name, attempt, tries),
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


def serving_implementation(agent: Agent, implementations: dict[str, Implementation],
                           tools: dict[str, ToolSpec]) -> Implementation | None:
    """The passing implementation that serves every tool of the agent, if any. One rule for rollouts
    (run the tools for real), gold tasks (written only for those) and the RL environment spec.

    `implementations`: toolset_id -> implementation; `tools`: ToolSpec id -> spec (to know which
    toolset each tool of a mixed or distractor agent comes from). An agent served by its own
    toolset's implementation gets that very record. An agent whose tools span several toolsets gets
    a composite (tools/compose.py, derived here and never stored) when every toolset involved has
    a passing implementation covering the agent's tools of it, decoys included (they run for real
    too); else None, and the LLM simulator serves it."""
    impl = implementations.get(agent.toolset_id)
    if impl is not None and set(agent.tool_ids) <= set(impl.tool_ids):
        return impl
    parts = _composite_parts(agent, implementations, tools)
    if parts is None:
        return None
    composed = _composed(parts, agent.tool_ids)
    if isinstance(composed, str):
        if agent.id not in _FALLBACK_LOGGED:
            _FALLBACK_LOGGED.add(agent.id)
            log.info("agent %s (%s) runs on the tool simulator: its implementations cannot be composed: %s",
                     agent.id, agent.toolset, composed)
        return None
    return composed


def _composed(parts: list[tuple[Implementation, list[ToolSpec]]], order: list[str]) -> Implementation | str:
    """The composite of these parts, or why there is none; made once per parts and order (ids are
    content hashes, so equal keys mean equal compositions)."""
    key = (tuple((impl.id, tuple(s.id for s in specs)) for impl, specs in parts), tuple(order))
    if key not in _COMPOSED:
        if len(_COMPOSED) >= COMPOSED_CACHE_SIZE:
            _COMPOSED.clear()  # agents of one run number in the thousands at most: a rare, cheap reset
        try:
            _COMPOSED[key] = compose(parts, order=order)
        except ValueError as e:
            _COMPOSED[key] = str(e)
    return _COMPOSED[key]


COMPOSED_CACHE_SIZE = 4096
# Rollouts ask per task: a composition is made once per set of parts (its value, or why it failed).
_COMPOSED: dict[tuple[Any, ...], Implementation | str] = {}
_FALLBACK_LOGGED: set[str] = set()


def _composite_parts(agent: Agent, implementations: dict[str, Implementation],
                     tools: dict[str, ToolSpec]) -> list[tuple[Implementation, list[ToolSpec]]] | None:
    """(implementation, the agent's tools of its toolset) per toolset, the agent's own first, then in
    the order the tools list them; None unless every toolset has a passing implementation of them."""
    if not agent.tool_ids or any(i not in tools for i in agent.tool_ids):
        return None  # a tool whose toolset is unknown cannot be served for real
    groups: dict[str, list[ToolSpec]] = {}
    for spec in sorted((tools[i] for i in agent.tool_ids), key=lambda s: s.toolset_id != agent.toolset_id):
        groups.setdefault(spec.toolset_id, []).append(spec)
    if len(groups) < 2:
        return None
    parts = []
    for toolset_id, specs in groups.items():
        impl = implementations.get(toolset_id)
        if impl is None or not impl.passed or not {s.id for s in specs} <= set(impl.tool_ids):
            return None
        parts.append((impl, specs))
    return parts


def passed_implementations(ctx: Context) -> dict[str, Implementation]:
    """toolset_id -> the passing implementation, for the rollout's runtime choice."""
    return {i.toolset_id: i for i in ctx.store.read("implementations") if i.passed}
