"""`synth tools implement` against a scripted LLM: the harness scaffolds the module and writes smoke
tests, the LLM writes one body at a time; passing bodies become executable, a failing round trip is
repaired, a body that never compiles stays a stub and the toolset simulated; the tests run inside a
sandbox. Plus one run on the real embedded model (marked llm), which records whatever it manages."""

from __future__ import annotations

import ast
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from synth.config import RunConfig
from synth.core.records import Implementation, ToolSpec
from synth.run import open_run
from synth.stages.implement import run as implement_tools
from tests.fake_openai import FakeOpenAI
from tools.executable import ExecutableToolset
from tools.implement import BODY_ATTEMPTS
from tools.serving import passed_implementations

NOTES = Path(__file__).parent / "fixtures" / "toolsets" / "notes"
TOOLS = json.loads((NOTES / "tools.json").read_text())
GOOD_MODULE = (NOTES / "impl.py").read_text()
BWRAP = shutil.which("bwrap") is not None
# Only true inside the sandbox: the shipped runner is beside the module, and bwrap names the host "sandbox".
IN_SANDBOX_TEST = (
    "\n\ndef test_runs_inside_the_sandbox():\n    import os, socket\n"
    "    assert os.path.exists('.synth/tools/server/selftest.py')\n"
    + ("    assert socket.gethostname() == 'sandbox'\n" if BWRAP else "")
)
GOOD_TESTS = (NOTES / "tests.py").read_text() + IN_SANDBOX_TEST


def specs_for(toolset: str) -> list[ToolSpec]:
    return [ToolSpec.model_validate({**t, "toolset": toolset, "toolset_id": f"id_{toolset}", "domain": "notes",
                                     "state_model": "notes by id"}) for t in TOOLS]


def _bodies(module: str) -> dict[str, str]:
    """Function name -> its body source, from a hand-written module (what a good LLM would write)."""
    tree, lines = ast.parse(module), module.splitlines()
    return {f.name: "\n".join(lines[f.body[0].lineno - 1:f.end_lineno]) for f in tree.body
            if isinstance(f, ast.FunctionDef)}


GOOD_BODIES = _bodies(GOOD_MODULE)


def target(body: dict) -> tuple[str, str]:
    """(function asked for, prompt) of a body request: the last `def` of the last message."""
    prompt = body["messages"][-1]["content"]
    return re.findall(r"def (\w+)\(state", prompt)[-1], prompt


def scripted(body: dict) -> str | None:
    """Bodies per function. notes_fix: get_note's first body finds nothing (a failing round trip),
    right once the failure is shown; notes_bad: create_note never compiles; else the good bodies."""
    if body.get("response_format"):
        return None
    name, prompt = target(body)
    if "notes_bad" in prompt and name == "create_note":
        return "```python\n    note = {'title': title\n    return note\n```"
    if "notes_fix" in prompt and name == "get_note" and "failed" not in prompt:
        return "Here you go:\n```python\n    return {}\n```"
    return f"```python\n{GOOD_BODIES[name]}\n```"


def run_cfg(tmp_path, base_url: str, **llm) -> RunConfig:
    sandbox = {"type": "local", "isolation": "bwrap" if BWRAP else "none"}
    return RunConfig.model_validate({
        "name": "impl", "runs_dir": str(tmp_path),
        "llm": {"base_url": base_url, "model": "fake", "max_retries": 0, **llm},
        "rollout": {"sandbox": sandbox},
    })


async def test_bodies_from_the_llm_pass_repair_and_stubs_never_pass(tmp_path):
    async with FakeOpenAI(handler=scripted) as fake:
        async with open_run(run_cfg(tmp_path, fake.base_url), quiet=True) as ctx:
            for toolset in ("notes_good", "notes_fix", "notes_bad"):
                ctx.store.append("tools", specs_for(toolset))
            stats = await implement_tools(ctx, max_repairs=1)
            records = {r.toolset: r for r in ctx.store.read("implementations")}
            requests = len(fake.requests)
            again = await implement_tools(ctx, max_repairs=1)  # resume: nothing redone
            assert len(fake.requests) == requests and again.skipped == 3
            executable = passed_implementations(ctx.store)
    assert stats.done == 3 and stats.failed == 0
    asked = Counter((re.search(r"toolset: (\w+)", r["messages"][-1]["content"])[1], target(r)[0]) for r in fake.requests)
    # A failed round trip names its creator and its reader: both are redrafted, the other bodies kept.
    assert asked["notes_fix", "get_note"] == asked["notes_fix", "create_note"] == 2
    assert asked["notes_fix", "list_notes"] == asked["notes_fix", "delete_note"] == 1
    assert asked["notes_bad", "create_note"] == 2 * BODY_ATTEMPTS  # never compiles: every attempt of both rounds
    assert asked["notes_good", "list_notes"] == 1

    good, fix, bad = records["notes_good"], records["notes_fix"], records["notes_bad"]
    assert isinstance(good, Implementation) and good.sandbox == "local"
    assert good.passed and good.rounds == 1 and good.errors == []
    # The harness wrote the scaffold (STATE_DEFAULT from the tool names, exact signatures), the LLM the bodies.
    assert 'STATE_DEFAULT = {"notes": {}, "next_id": 1}' in good.module
    assert "def create_note(state, title, body, tags=None):" in good.module
    assert good.provenance["bodies"].startswith("llm: create_note, delete_note")
    assert "harness" in good.provenance["scaffold"] and "smoke tests" in good.provenance["tests"]
    assert good.tests.startswith('"""Smoke tests') and "round_trip__create_note__get_note" in good.tests
    assert fix.passed and fix.rounds == 2 and len(fix.errors) == 1
    assert "test_round_trip__create_note__get_note failed" in fix.errors[0]
    assert not bad.passed and bad.rounds == 2
    assert any("create_note: SyntaxError" in e for e in bad.errors)
    assert "harness stubs: create_note" in bad.provenance["bodies"]
    assert "not implemented" in bad.module
    assert set(executable) == {"id_notes_good", "id_notes_fix"}  # notes_bad stays simulated

    folder = tmp_path / "impl" / "implementations"
    assert (folder / "id_notes_good.py").read_text() == good.module
    assert (folder / "id_notes_fix_tests.py").exists() and not (folder / "id_notes_bad.py").exists()
    # The repair prompt showed the model what failed.
    repair = next(r["messages"][-1]["content"] for r in fake.requests
                  if target(r)[0] == "get_note" and "notes_fix" in r["messages"][-1]["content"]
                  and "failed" in r["messages"][-1]["content"])
    assert "did not find what create_note created" in repair or "returned" in repair


async def test_a_passed_implementation_serves_the_rollout(tmp_path):
    from sandboxes.local import LocalConfig
    from sandboxes import provision

    record = Implementation(toolset_id="id_notes_good", toolset="notes_good", tool_ids=[], module=GOOD_MODULE,
                            tests=GOOD_TESTS, passed=True, rounds=1)
    async with provision(LocalConfig(isolation="bwrap" if BWRAP else "none")) as sb:
        async with ExecutableToolset(specs_for("notes_good"), sb, module=record.module) as runtime:
            await runtime.reset({})
            created = await runtime.call("create_note", {"title": "a", "body": "b"})
            assert json.loads(created.text)["id"] == 1
            assert (await runtime.snapshot())["next_id"] == 2


@pytest.mark.llm
async def test_the_embedded_model_gets_its_outcome_recorded(tmp_path):
    from synth.core.local_llm import EmbeddedConfig, embedded_server

    async with embedded_server(EmbeddedConfig(), log_path=tmp_path / "server.log") as base_url:
        async with open_run(run_cfg(tmp_path, base_url, max_tokens=1500), quiet=True) as ctx:
            small = [s for s in specs_for("notes_llm") if s.name in ("create_note", "get_note")]
            ctx.store.append("tools", small)
            stats = await implement_tools(ctx, max_repairs=1)
            records = ctx.store.read("implementations")
            errors = ctx.store.read("errors")
    print(f"embedded model: {stats}; records={[(r.passed, r.rounds, r.errors) for r in records]}; "
          f"errors={[e.message[:300] for e in errors]}")
    assert stats.done + stats.failed == 1
    if records:
        (record,) = records
        assert record.rounds >= 1 and set(record.provenance) == {"scaffold", "bodies", "tests", "llm_replies"}
        ast.parse(record.module)  # bodies are compiled before they go in: the module always parses
        assert "def create_note(state, title, body, tags=None):" in record.module
        if not record.passed:
            assert {f"round {k}" for k in range(1, record.rounds + 1)} <= {e.split(":")[0] for e in record.errors}
    else:
        assert any(e.stage == "implement" for e in errors)


async def test_rollouts_run_a_passing_toolset_for_real_instead_of_simulating_it(tmp_path):
    """implement -> agents -> tasks -> rollout: tool calls are answered by the module over MCP in the
    episode's sandbox, never by the LLM tool simulator, and the final state is the module's state."""
    from synth.run import run_stages
    from synth.user_sim import STOP

    def implement_only(body: dict) -> str | None:
        return scripted(body) if "Write the body of this Python function" in json.dumps(body["messages"]) else None

    async with FakeOpenAI(handler=implement_only, stop_marker=STOP) as fake:
        cfg = run_cfg(tmp_path, fake.base_url)
        async with open_run(cfg, quiet=True) as ctx:
            ctx.store.append("tools", specs_for("notes_good"))
            await run_stages(ctx, ["implement", "agents", "tasks", "rollout"])
        simulated = [b for b in fake.requests if "You are the backend of the tool" in json.dumps(b["messages"])]
    trajectories = [json.loads(line) for line in (cfg.run_dir / "trajectories.jsonl").read_text().splitlines()]
    assert trajectories and simulated == []
    calls = [c for t in trajectories for c in t["tool_calls"]]
    assert calls, "the fake agent calls a notes tool on its first step"
    for trajectory in trajectories:
        assert "notes" in trajectory["final_state"], trajectory["final_state"]

