"""`synth tools implement`: turn simulated toolsets into executable ones (Python module + unit tests).

Per toolset the LLM writes the module (STATE_DEFAULT + one function per tool, see tools/server)
and tests for it; the tests run inside a sandbox with the shipped runner's selftest (pytest is not
in the image), which also checks that the module fits the schemas and that every tool is tested.
Failures go back to the LLM for up to `max_repairs` rounds. Every toolset gets one Implementation
record in implementations.jsonl, passed or not, with the errors of each failed round: the rollout
serves a toolset with ExecutableToolset when its record passed, else keeps simulating it.
tools.jsonl is append-only and ToolSpec ids are content hashes, so specs are not rewritten.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from sandboxes.base import Sandbox, SandboxConfig, provision
from synth.errors import ParseError
from synth.hashing import content_hash
from synth.pipeline import Context, StageStats, Unit, run_units
from synth.prompts import render
from synth.records import Agent, Implementation
from tools.executable import HOME, MODULE_FILE, SPECS_FILE, python_argv, ship
from tools.spec import ToolSpec

TESTS_FILE = f"{HOME}/tests.py"
DEFAULT_MAX_REPAIRS = 2


def _at_most(limit: int) -> AfterValidator:
    def check(text: str) -> str:
        if len(text) > limit:
            raise ValueError(f"at most {limit} characters, got {len(text)}: write shorter code")
        return text

    return AfterValidator(check)


# The length limits are checked after parsing, not put in the JSON Schema: llama.cpp compiles
# maxLength into a grammar rule repeated that many times, and at a few thousand it refuses the
# grammar ("exceeds sane defaults") and the request fails (measured). max_tokens bounds the reply.
class ImplementationDraft(BaseModel):
    """Reply with the module source and the tests source."""

    module: Annotated[str, Field(min_length=20), _at_most(6000)]
    tests: Annotated[str, Field(min_length=20), _at_most(3000)]


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
    shown = json.dumps(tools, indent=1)
    draft: ImplementationDraft | None = None
    report: SelftestReport | None = None
    errors: list[str] = []
    rounds = 0
    labels = {"synth.run": ctx.cfg.name, "synth.implement": unit_id}
    async with provision(sandbox, labels=labels) as box:
        for attempt in range(max_repairs + 1):
            rounds += 1
            if draft is None or report is None:
                prompt = render(__file__, "implement", toolset=first.toolset, domain=first.domain,
                                state_model=first.state_model or "-", tools=shown)
            else:
                prompt = render(__file__, "implement_repair", toolset=first.toolset, domain=first.domain,
                                tools=shown, module=draft.module, tests=draft.tests,
                                failures="\n".join(f"- {f}" for f in report.failures()[:12]))
            try:
                draft = await ctx.llm.structured([{"role": "user", "content": prompt}], ImplementationDraft,
                                                 seed=ctx.seed_for("implement", unit_id, attempt))
            except ParseError as exc:  # the model's fault, like a failing test: it costs a round
                errors.append(f"round {rounds}: no usable reply: {exc}")
                report = None
                continue
            report = await run_selftest(box, draft, tools)
            if report.passed:
                break
            errors.append(f"round {rounds}: " + "; ".join(report.failures()))
    passed = bool(report and report.passed)
    record = Implementation(
        unit=unit_id, toolset_id=first.toolset_id, toolset=first.toolset, domain=first.domain,
        tool_ids=[s.id for s in specs], module=draft.module if draft else "", tests=draft.tests if draft else "",
        passed=passed, rounds=rounds, errors=errors, sandbox=sandbox.type,
    )
    if passed:  # readable copies beside the records (the record stays the source of truth)
        folder = ctx.store.root / "implementations"
        folder.mkdir(exist_ok=True)
        (folder / f"{first.toolset_id}.py").write_text(record.module)
        (folder / f"{first.toolset_id}_tests.py").write_text(record.tests)
    return record


async def run_selftest(box: Sandbox, draft: ImplementationDraft, tools: list[dict[str, Any]],
                       timeout: float = 60.0) -> SelftestReport:
    """Run the draft's tests inside the sandbox; a crash or a hang is a failed report, not an exception."""
    await ship(box, draft.module, tools)
    await box.write_file(TESTS_FILE, draft.tests.encode())
    argv = python_argv("tools.server.selftest", "--module", MODULE_FILE, "--tests", TESTS_FILE, "--specs", SPECS_FILE)
    result = await box.exec(argv, timeout=timeout)
    lines = result.stdout.strip().splitlines()
    try:
        return SelftestReport.model_validate_json(lines[-1])
    except (IndexError, ValueError):
        why = "timed out" if result.timed_out else f"exit {result.exit_code}"
        return SelftestReport(problems=[f"the test run crashed ({why}): {result.stderr.strip()[-800:]}"])


def serving_implementation(agent: Agent, implementations: dict[str, Implementation]) -> Implementation | None:
    """The passing implementation that serves every tool of the agent, if any. One rule for rollouts
    (run the tools for real), gold tasks (written only for those) and the RL environment spec."""
    impl = implementations.get(agent.toolset_id)
    return impl if impl is not None and set(agent.tool_ids) <= set(impl.tool_ids) else None


def passed_implementations(ctx: Context) -> dict[str, Implementation]:
    """toolset_id -> the passing implementation, for the rollout's runtime choice."""
    return {i.toolset_id: i for i in ctx.store.read("implementations") if i.passed}
