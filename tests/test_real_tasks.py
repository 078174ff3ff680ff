"""Tasks over a real MCP server (mcp-server-git): the task writer's seed, gold actions and assertions;
a task whose gold replays against the real server is kept, one whose gold fails and one whose seed
does not fit are dropped with their reasons; rollouts on the kept task are judged on the snapshot."""

from __future__ import annotations

import json
import warnings

import pytest

from judges.checks import TASK, Subject, run_checks
from synth.config import RunConfig
from synth.core.records import Agent
from synth.run import open_run, run_stages
from tests.fake_openai import FakeOpenAI
from tests.test_real_servers import catalog_tools, mcp_image, sandbox, scripted_agent  # noqa: F401  (fixtures)

pytestmark = pytest.mark.mcp

SEED = {"commits": [{"message": "Initial commit", "files": {"README.md": "# Demo\n"}},
                    {"message": "Add parser", "files": {"src/parse.py": "x = 1\n"}}]}


def draft(goal: str, seed, gold: list[tuple[str, dict]], assertions: list[tuple[str, str, object]]) -> dict:
    return {"goal": goal, "persona": "A developer in a hurry.", "user_facts": ["The branch is release-1"],
            "difficulty": "easy", "rubric": [{"text": "Creates the branch.", "kind": "essential", "weight": 3}],
            "initial_state": json.dumps(seed),
            "gold_actions": [{"tool": t, "arguments": json.dumps(a)} for t, a in gold],
            "assertions": [{"path": p, "op": op, "value": "" if v is None else json.dumps(v)} for p, op, v in assertions]}


REPO = {"repo_path": "/workspace/repo"}
DRAFTS = [
    draft("Create a release-1 branch from main.", SEED, [("git_create_branch", {**REPO, "branch_name": "release-1"})],
          [("branches.release-1.log.0.message", "equals", "Add parser"), ("branches.release-1", "exists", None)]),
    draft("Switch to the hotfix branch.", SEED, [("git_checkout", {**REPO, "branch_name": "hotfix"})],
          [("head", "equals", "hotfix")]),
    draft("Look at my history.", {"commits": [{"files": {"a": "b"}}]}, [("git_log", REPO)],
          [("log.0.message", "equals", "x")]),
]


def writer(body: dict):
    prompt = str(body["messages"][-1]["content"])
    if body.get("response_format") and "whose tools are real MCP servers" in prompt:
        assert "/workspace/repo" in prompt and "seed example" in prompt  # the kind's note and seed format
        return json.dumps({"tasks": DRAFTS})
    return None


async def test_real_tasks_keep_the_gold_that_replays_and_drop_the_rest(tmp_path, catalog_tools, sandbox):  # noqa: F811
    git = catalog_tools["git"]
    cfg = RunConfig.model_validate({
        "name": "rt", "runs_dir": str(tmp_path), "llm": {"base_url": "", "model": "fake", "max_retries": 0},
        "tasks": {"per_agent": 3}, "rollout": {"max_turns": 1, "max_tool_steps": 3, "sandbox": sandbox}})
    async with FakeOpenAI(handler=writer) as fake:
        cfg.llm.base_url = fake.base_url
        async with open_run(cfg, quiet=True) as ctx:
            agent = Agent(toolset_id=git[0].toolset_id, toolset=git[0].toolset, domain="git",
                          tool_ids=[s.id for s in git], name="gitbot", system_prompt="You manage git repositories. The repository is at /workspace/repo.")
            ctx.store.append("tools", git)
            ctx.store.append("agents", [agent])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                await run_stages(ctx, ["tasks"])
            [task] = ctx.store.read("tasks")
            errors = [e.message for e in ctx.store.read("errors")]
    assert task.validated and task.goal.startswith("Create a release-1")
    assert task.initial_state["commits"][1]["message"] == "Add parser" and task.initial_state["head"] == "main"
    assert len(errors) == 2, errors
    assert any("task 2" in e and "gold action 1 git_checkout" in e and "failed" in e for e in errors), errors
    assert any("task 3" in e and "git seed: commits.0.message" in e for e in errors), errors

    # Rollouts on the kept task: one that does the work passes the snapshot's assertions, one that does not fails.
    doing = [("git_create_branch", {**REPO, "branch_name": "release-1"})]
    for calls, expected in ((doing, True), ([("git_log", REPO)], False)):
        cfg = cfg.model_copy(update={"name": f"rt-{expected}"})
        async with FakeOpenAI(handler=scripted_agent(calls)) as fake:
            cfg.llm.base_url = fake.base_url
            async with open_run(cfg, quiet=True) as ctx:
                ctx.store.append("tools", git)
                ctx.store.append("agents", [agent])
                ctx.store.append("tasks", [task])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    await run_stages(ctx, ["rollout"])
                [trajectory] = ctx.store.read("trajectories")
                manifest = ctx.store.manifest()
        assert run_checks(Subject(trajectory, task, frozenset()), TASK)["final_state_assertions"] is expected
        assert manifest["tool_runtimes"]["calls"] == {"real": 1}



def test_the_rl_environment_of_a_real_server_task_runs_the_server_and_rewards_its_snapshot(
        tmp_path, catalog_tools, monkeypatch):  # noqa: F811
    from judges.gold import parse_arguments
    from synth.config import dump_config
    from synth.context import Context
    from synth.core.records import GoldAction, StateAssertion, Task
    from synth.core.store import RunStore
    from synth.core.usage import UsageMeter
    from synth.envs import trl_environments
    from synth.stages.export import export_run
    from tests.test_envs import rl_rows

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)  # no endpoint: the real server needs none
    git = catalog_tools["git"]
    cfg = RunConfig.model_validate({"name": "rl", "runs_dir": str(tmp_path), "rollout": {"sandbox": {"type": "local"}}})
    store = RunStore(cfg.run_dir)
    store.open(dump_config(cfg), cfg.content_hash())
    agent = Agent(toolset_id=git[0].toolset_id, toolset=git[0].toolset, domain="git", tool_ids=[s.id for s in git],
                  name="gitbot", system_prompt="You manage git repositories. The repository is at /workspace/repo.")
    gold = GoldAction(tool="git_create_branch", arguments=json.dumps({**REPO, "branch_name": "release-1"}))
    task = Task(agent_id=agent.id, goal="Create a release-1 branch.", persona="A developer.", initial_state=SEED,
                rubric=[], gold_actions=[gold], validated=True,
                assertions=[StateAssertion(path="branches.release-1.log.0.message", op="equals", value='"Add parser"')])
    store.append("tools", git)
    store.append("agents", [agent])
    store.append("tasks", [task])
    export_run(Context(cfg=cfg, store=store, llm=None, meter=UsageMeter(), quiet=True))
    store.close()
    [row] = rl_rows(cfg.run_dir / "export")
    assert row["env_spec"]["runtime"] == "real" and row["env_spec"]["servers"][0]["launch"]["catalog"] == "git"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        env = trl_environments([row])[row["environment"]]()
        assert env.reset(**row) == task.goal
        assert "release-1" in env.git_create_branch(**parse_arguments(gold))
        assert env.get_reward() == 1.0
        env.reset(**row)  # a fresh seed: the branch is gone, doing nothing fails the assertion
        assert "release-1" not in env.git_branch(repo_path="/workspace/repo", branch_type="local")
        assert env.get_reward() == 0.0


async def test_synth_run_imports_tools_servers_once_and_agents_are_told_where_the_data_is(tmp_path):
    """`tools.servers` with `tools.evolve: false`: the tools stage imports the catalog's git server (a
    resumed run imports nothing again), and an agent over it learns where the repository is."""
    cfg = RunConfig.model_validate({
        "name": "servers", "runs_dir": str(tmp_path), "llm": {"base_url": "", "model": "fake", "max_retries": 0},
        "tools": {"servers": ["git"], "evolve": False}, "agents": {"per_toolset": 1}})
    async with FakeOpenAI() as fake:  # schema-valid replies: only the agents stage asks the LLM
        cfg.llm.base_url = fake.base_url
        counts = []
        for _ in range(2):
            async with open_run(cfg, quiet=True) as ctx:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    await run_stages(ctx, ["tools", "agents"])
                tools, agents = ctx.store.read("tools"), ctx.store.read("agents")
                counts.append(len(tools))
        evolved = [r for r in fake.requests if "categor" in json.dumps(r.get("messages", "")).lower()]
    assert tools and {t.kind for t in tools} == {"real"} and {"git_log", "git_status"} <= {t.name for t in tools}
    assert all(t.provenance["launch"]["catalog"] == "git" for t in tools)
    assert counts[0] == counts[1] == len({t.id for t in tools})  # the second run imported nothing again
    assert not evolved  # tools.evolve: false planned no categories
    [agent] = agents
    assert set(agent.tool_ids) <= {t.id for t in tools} and "/workspace/repo" in agent.system_prompt
