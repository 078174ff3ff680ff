"""`synth tools implement` against a scripted LLM: a passing draft becomes executable, a failing one
is repaired, an always-failing one stays simulated with its errors; the tests run inside a sandbox.
Plus one run on the real embedded model (marked llm), which records whatever it manages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from synth.config import RunConfig
from synth.run import open_run
from tests.fake_openai import FakeOpenAI
from tools.executable import ExecutableToolset
from tools.implement import Implementation, implement_tools, passed_implementations
from tools.spec import ToolSpec

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
BROKEN_MODULE = GOOD_MODULE.replace('    return note\n\n\ndef list_notes', '    return None\n\n\ndef list_notes')
MISSING_TOOL = GOOD_MODULE.split("def delete_note")[0]


def specs_for(toolset: str) -> list[ToolSpec]:
    return [ToolSpec.model_validate({**t, "toolset": toolset, "toolset_id": f"id_{toolset}", "domain": "notes",
                                     "state_model": "notes by id"}) for t in TOOLS]


def scripted(body: dict) -> str | None:
    """notes_good: right at once; notes_fix: broken, right after one repair prompt; notes_bad: never right."""
    if not body.get("response_format"):
        return None
    prompt = body["messages"][-1]["content"]
    repair = "failed its checks" in prompt
    if "notes_good" in prompt or ("notes_fix" in prompt and repair):
        module = GOOD_MODULE
    elif "notes_fix" in prompt:
        module = BROKEN_MODULE
    else:
        module = MISSING_TOOL
    return json.dumps({"module": module, "tests": GOOD_TESTS})


def run_cfg(tmp_path, base_url: str, **llm) -> RunConfig:
    sandbox = {"type": "local", "isolation": "bwrap" if BWRAP else "none"}
    return RunConfig.model_validate({
        "name": "impl", "runs_dir": str(tmp_path),
        "llm": {"base_url": base_url, "model": "fake", "max_retries": 0, **llm},
        "rollout": {"sandbox": sandbox},
    })


async def test_pass_repair_and_exhausted_repairs(tmp_path):
    async with FakeOpenAI(handler=scripted) as fake:
        async with open_run(run_cfg(tmp_path, fake.base_url), quiet=True) as ctx:
            for toolset in ("notes_good", "notes_fix", "notes_bad"):
                ctx.store.append("tools", specs_for(toolset))
            stats = await implement_tools(ctx, max_repairs=2)
            records = {r.toolset: r for r in ctx.store.read("implementations")}
            requests = len(fake.requests)
            again = await implement_tools(ctx, max_repairs=2)  # resume: nothing redone
            assert len(fake.requests) == requests and again.skipped == 3
            executable = passed_implementations(ctx)
    assert stats.done == 3 and stats.failed == 0
    assert requests == 1 + 2 + 3

    good, fix, bad = records["notes_good"], records["notes_fix"], records["notes_bad"]
    assert isinstance(good, Implementation) and good.sandbox == "local"
    assert good.passed and good.rounds == 1 and good.errors == []
    assert fix.passed and fix.rounds == 2 and len(fix.errors) == 1
    assert "test_create_then_get failed" in fix.errors[0] and "TypeError" in fix.errors[0]
    assert not bad.passed and bad.rounds == 3 and len(bad.errors) == 3
    assert all("no function delete_note" in e for e in bad.errors)
    assert set(executable) == {"id_notes_good", "id_notes_fix"}  # notes_bad stays simulated

    folder = tmp_path / "impl" / "implementations"
    assert (folder / "id_notes_good.py").read_text() == GOOD_MODULE
    assert (folder / "id_notes_fix_tests.py").exists() and not (folder / "id_notes_bad.py").exists()
    # The repair prompt showed the model its failing code and what failed.
    prompts = [r["messages"][-1]["content"] for r in fake.requests]
    repair_prompt = next(p for p in prompts if "failed its checks" in p and "notes_fix" in p)
    assert "return None" in repair_prompt and "test_create_then_get failed" in repair_prompt


async def test_a_passed_implementation_serves_the_rollout(tmp_path):
    from sandboxes.base import LocalConfig, provision

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
    from synth.local_llm import EmbeddedConfig, embedded_server

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
        assert record.rounds >= 1 and (record.passed or len(record.errors) == record.rounds)
    else:
        assert any(e.stage == "implement" for e in errors)


async def test_rollouts_run_a_passing_toolset_for_real_instead_of_simulating_it(tmp_path):
    """implement -> agents -> tasks -> rollout: tool calls are answered by the module over MCP in the
    episode's sandbox, never by the LLM tool simulator, and the final state is the module's state."""
    from synth.run import run_stages
    from synth.user_sim import STOP

    def implement_only(body: dict) -> str | None:
        return scripted(body) if "module" in json.dumps(body.get("response_format") or {}) else None

    async with FakeOpenAI(handler=implement_only, stop_marker=STOP) as fake:
        cfg = run_cfg(tmp_path, fake.base_url)
        async with open_run(cfg, quiet=True) as ctx:
            ctx.store.append("tools", specs_for("notes_good"))
            await run_stages(ctx, ["implement", "agents", "tasks", "rollout"], export=False)
        simulated = [b for b in fake.requests if "You are the backend of the tool" in json.dumps(b["messages"])]
    trajectories = [json.loads(line) for line in (cfg.run_dir / "trajectories.jsonl").read_text().splitlines()]
    assert trajectories and simulated == []
    calls = [c for t in trajectories for c in t["tool_calls"]]
    assert calls, "the fake agent calls a notes tool on its first step"
    for trajectory in trajectories:
        assert "notes" in trajectory["final_state"], trajectory["final_state"]
