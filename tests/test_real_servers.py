"""Real MCP servers in rollouts, for real: the catalog's reference servers (mcp-server-git from PyPI,
@modelcontextprotocol/server-memory from npm, ...) started inside sandboxes, local (bubblewrap when
it works) and docker (the `mcp` image variant, which carries the same servers), seeded per task,
driven by the rollout loop with a scripted agent, snapshotted at the end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import warnings
from pathlib import Path

import pytest

from judges.assertions import assertion_failures
from sandboxes import provision, sandbox_config
from sandboxes.local import LocalConfig
from synth.config import RunConfig
from synth.core.errors import ToolError
from synth.core.records import Agent, Criterion, Implementation, StateAssertion, Task, ToolSpec
from synth.run import open_run
from synth.stages.rollout import make_rollouts, runtime_counts
from synth.user_sim import STOP
from tests.fake_openai import FakeOpenAI
from tools import real as real_module
from tools.catalog import by_label, catalog_sources, ensure_installed
from tools.environments import ENVIRONMENTS
from tools.launch import with_binds
from tools.mcp_import import import_tools
from tools.serving import real_parts, tool_runtime

pytestmark = pytest.mark.mcp

NOTES = Path(__file__).parent / "fixtures" / "toolsets" / "notes"
GIT_SEED = {"commits": [{"message": "Initial commit", "files": {"README.md": "# Demo\n"}},
                        {"message": "Add parser module", "files": {"src/parse.py": "def parse(s):\n    return s\n"}},
                        {"message": "Try a faster parser", "files": {"src/fast.py": "x = 1\n"}, "branch": "speedup"}],
            "head": "main", "changes": {"README.md": "# Demo\nWIP\n"}}


@pytest.fixture(scope="session")
def mcp_image(docker_image) -> str:
    """The `mcp` variant of the sandbox image (git + the catalog's servers), built once."""
    from sandboxes.image.build import build_image

    return build_image(variant="mcp", progress=lambda line: print(line, flush=True))


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def sandbox(request) -> dict:
    """The rollout's sandbox config, per backend."""
    if request.param == "docker":
        request.getfixturevalue("mcp_image")
        return {"type": "docker", "variant": "mcp"}
    return {"type": "local"}


@pytest.fixture(scope="module")
def catalog_tools() -> dict[str, list[ToolSpec]]:
    """label -> the tools imported from the catalog server (installed once into the cache dir)."""
    labels = ["git", "memory", "filesystem", "sqlite", "time"]
    asyncio.run(ensure_installed([by_label(label) for label in labels]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        results = asyncio.run(import_tools(catalog_sources([by_label(label) for label in labels]), None, timeout=90))
    out = {}
    for label, result in zip(labels, results):
        assert result.tools, f"{label}: {[e.message for e in result.rejections]}"
        out[label] = result.tools
    return out


def scripted_agent(calls: list[tuple[str, dict]]):
    """Agent: makes `calls` one per step (then answers in text); user: asks once, then stops."""

    def handler(body: dict):
        system = str(body["messages"][0]["content"])
        if STOP in system:
            return f"Thanks. {STOP}" if len(body["messages"]) > 2 else "Please check my repository."
        if body.get("response_format"):
            return None
        made = sum(1 for m in body["messages"] if m["role"] == "tool")
        if body.get("tools") and made < len(calls):
            name, arguments = calls[made]
            return {"content": "", "tool_calls": [{"id": "c", "type": "function",
                                                   "function": {"name": name, "arguments": arguments}}]}
        return "Done."

    return handler


async def rollout(tmp_path, fake, specs, tasks, *, sandbox, impl=None, pool_size=0, samples=1, agent_specs=None,
                  tool_process="per_episode"):
    cfg = RunConfig.model_validate({
        "name": "real", "runs_dir": str(tmp_path),
        "llm": {"base_url": fake.base_url, "model": "fake", "max_retries": 0},
        "rollout": {"max_turns": 1, "max_tool_steps": 6, "samples_per_task": samples, "tool_process": tool_process,
                    "sandbox": {**sandbox, "pool_size": pool_size}}})
    async with open_run(cfg, quiet=True) as ctx:
        agent_specs = agent_specs or specs
        agent = Agent(toolset_id=agent_specs[0].toolset_id, toolset=agent_specs[0].toolset, domain="dev",
                      tool_ids=[s.id for s in agent_specs], name="bot", system_prompt="You help with repositories.")
        tasks = [Task.model_validate({**t.model_dump(exclude={"id"}), "agent_id": agent.id}) for t in tasks]
        ctx.store.append("tools", specs)
        ctx.store.append("agents", [agent])
        ctx.store.append("tasks", tasks)
        if impl is not None:
            ctx.store.append("implementations", [impl])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            stats = await make_rollouts(ctx)
        errors = [(e.error_type, e.message[-800:]) for e in ctx.store.read("errors")]
        assert stats.failed == 0, errors
        return ctx.store.read("trajectories")


def task(seed: dict, goal: str = "Tell me what changed lately.") -> Task:
    return Task(agent_id="", goal=goal, persona="A developer.", initial_state=seed, rubric=[Criterion(text="Answers.")])


async def test_a_rollout_over_mcp_server_git_sees_the_seeded_repository(tmp_path, catalog_tools, sandbox):
    calls = [("git_log", {"repo_path": "/workspace/repo"}), ("git_status", {"repo_path": "/workspace/repo"}),
             ("git_checkout", {"repo_path": "/workspace/repo", "branch_name": "speedup"}),
             ("git_log", {"repo_path": "/workspace/repo", "max_count": 1})]
    async with FakeOpenAI(handler=scripted_agent(calls)) as fake:
        [trajectory] = await rollout(tmp_path, fake, catalog_tools["git"], [task(GIT_SEED)], sandbox=sandbox)
    log, status, checkout, branch_log = trajectory.tool_calls
    assert {c.runtime for c in trajectory.tool_calls} == {"real"} and not any(c.is_error for c in trajectory.tool_calls)
    # The seeded commits come from the real server: fixed dates, so fixed SHAs.
    assert "Add parser module" in log.result and "Initial commit" in log.result and "faster" not in log.result
    assert "2024-01-01" in log.result and "Author: Seed" in log.result
    assert "README.md" in status.result and "modified" in status.result
    assert "speedup" in checkout.result and "Try a faster parser" in branch_log.result
    # The model never sees the sandbox's own path; the final state is the snapshot after the checkout.
    assert all("/tmp/" not in c.result for c in trajectory.tool_calls)
    state = trajectory.final_state
    assert state["head"] == "speedup" and [c["message"] for c in state["log"]][:1] == ["Try a faster parser"]
    assert set(state["branches"]) == {"main", "speedup"}
    assert assertion_failures(state, [StateAssertion(path="head", op="equals", value='"speedup"'),
                                      StateAssertion(path="status.unstaged", op="contains", value='"README.md"')]) == []
    assert runtime_counts([trajectory]) == {"calls": {"real": 4}, "total": 4}


async def test_a_rollout_over_the_npm_memory_server_changes_its_graph(tmp_path, catalog_tools, sandbox):
    seed = {"entities": [{"name": "Alice", "entityType": "person", "observations": ["likes tea"]}]}
    calls = [("read_graph", {}),
             ("create_entities", {"entities": [{"name": "Bob", "entityType": "person", "observations": ["new hire"]}]}),
             ("create_relations", {"relations": [{"from": "Alice", "to": "Bob", "relationType": "mentors"}]})]
    async with FakeOpenAI(handler=scripted_agent(calls)) as fake:
        [trajectory] = await rollout(tmp_path, fake, catalog_tools["memory"], [task(seed)], sandbox=sandbox)
    read, created, related = trajectory.tool_calls
    assert "likes tea" in read.result and "Bob" in created.result and not related.is_error
    assert [e["name"] for e in trajectory.final_state["entities"]] == ["Alice", "Bob"]
    assert trajectory.final_state["relations"] == [{"from": "Alice", "to": "Bob", "relationType": "mentors"}]


async def test_a_mixed_agent_runs_a_real_and_an_executable_toolset_in_one_episode(tmp_path, catalog_tools, sandbox):
    notes = [ToolSpec.model_validate({**t, "toolset": "notes", "toolset_id": "id_notes", "domain": "notes"})
             for t in json.loads((NOTES / "tools.json").read_text())]
    impl = Implementation(toolset_id="id_notes", toolset="notes", tool_ids=[s.id for s in notes],
                          module=(NOTES / "impl.py").read_text(), passed=True)
    git = catalog_tools["git"]
    seed = {git[0].toolset: GIT_SEED, "notes": {}}
    calls = [("git_log", {"repo_path": "/workspace/repo", "max_count": 1}),
             ("create_note", {"title": "Release", "body": "ship the parser"}), ("list_notes", {})]
    async with FakeOpenAI(handler=scripted_agent(calls)) as fake:
        [trajectory] = await rollout(tmp_path, fake, git + notes, [task(seed)], impl=impl, sandbox=sandbox)
    runtimes = [c.runtime for c in trajectory.tool_calls]
    assert runtimes == ["real", "executable", "executable"], [(c.name, c.result[:200]) for c in trajectory.tool_calls]
    assert "Add parser module" in trajectory.tool_calls[0].result and "Release" in trajectory.tool_calls[2].result
    state = trajectory.final_state
    assert set(state) == {git[0].toolset, "notes"}
    assert state[git[0].toolset]["log"][0]["message"] == "Add parser module"
    assert [n["title"] for n in state["notes"]["notes"].values()] == ["Release"]


@pytest.mark.parametrize("tool_process", ["shared", "per_episode"])
async def test_a_pooled_sandbox_keeps_its_server_and_reseeds_it_per_episode(tmp_path, catalog_tools, monkeypatch,
                                                                            sandbox, tool_process):
    """shared in docker: the server warmed with the pool serves both episodes. Locally (bwrap) the reset
    keeps a resident only while its pid namespace holds nothing else (issue #18), and mcp-server-git
    leaves git child processes behind, so it is replaced. per_episode (the default): each episode
    starts its own. Either way each episode sees its own seed and nothing of the other's."""
    starts_expected = 1 if tool_process == "shared" and sandbox["type"] == "docker" else 2
    starts = []
    original = real_module.RealServer.start

    async def counted(self):
        starts.append(self.launch.catalog)
        await original(self)

    monkeypatch.setattr(real_module.RealServer, "start", counted)
    first = {"commits": [{"message": "First task's commit", "files": {"a.txt": "a\n"}}]}
    second = {"commits": [{"message": "Second task's commit", "files": {"b.txt": "b\n"}}]}
    calls = [("git_log", {"repo_path": "/workspace/repo"}),
             ("git_create_branch", {"repo_path": "/workspace/repo", "branch_name": "left-over"})]
    async with FakeOpenAI(handler=scripted_agent(calls)) as fake:
        trajectories = await rollout(tmp_path, fake, catalog_tools["git"], [task(first, "one"), task(second, "two")],
                                     pool_size=1, sandbox=sandbox, tool_process=tool_process)
    assert starts == ["git"] * starts_expected
    logs = [t.tool_calls[0].result for t in trajectories]
    assert len(logs) == 2
    assert sum("First task's commit" in log and "Second" not in log for log in logs) == 1
    assert sum("Second task's commit" in log and "First" not in log for log in logs) == 1
    for t in trajectories:  # the branch the other episode made is gone: the data was replaced
        assert set(t.final_state["branches"]) == {"main", "left-over"}
        assert len(t.final_state["log"]) == 1


@pytest.mark.parametrize("label, seed, call, expect", [
    ("filesystem", {"files": {"notes/todo.txt": "buy milk\n"}}, ("list_allowed_directories", {}), "/workspace/files"),
    ("sqlite", {"tables": [{"name": "orders", "columns": [{"name": "id", "type": "INTEGER PRIMARY KEY"},
                                                          {"name": "item"}], "rows": [[1, "lamp"]]}]},
     ("write_query", {"query": "INSERT INTO orders (item) VALUES ('desk')"}), "affected_rows"),
])
async def test_filesystem_and_sqlite_servers_work_on_their_seeds(catalog_tools, label, seed, call, expect, sandbox):
    specs = catalog_tools[label]
    parts, rest = real_parts(specs)
    assert not rest and parts[0].launch.environment == label
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        async with provision(with_binds(sandbox_config(sandbox), [parts[0].launch])) as sandbox:
            async with tool_runtime(specs, sandbox, impl=None, llm=None, seed=0, real=parts) as runtime:
                await runtime.reset(seed)
                outcome = await runtime.call(*call)
                state = await runtime.finish()
    assert not outcome.is_error and expect in outcome.text and "/tmp/" not in outcome.text
    if label == "filesystem":
        assert state["files"] == [{"path": "notes/todo.txt", "sha256": state["files"][0]["sha256"], "size": 9,
                                   "text": "buy milk\n"}]
    else:
        assert state["tables"]["orders"]["rows"] == [{"id": 1, "item": "lamp"}, {"id": 2, "item": "desk"}]


async def test_a_bad_seed_names_the_field_and_a_dead_server_fails_the_episode(catalog_tools, tmp_path):
    with pytest.raises(ValueError, match=r"git seed: commits\.0\.message"):
        ENVIRONMENTS["git"].validate_seed({"commits": [{"files": {}}]})
    with pytest.raises(ValueError, match="relative to the environment's root"):
        ENVIRONMENTS["filesystem"].validate_seed({"files": {"../escape": "x"}})
    specs = catalog_tools["git"]
    parts, _ = real_parts(specs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        async with provision(with_binds(LocalConfig(isolation="none"), [parts[0].launch])) as sandbox:
            async with tool_runtime(specs, sandbox, impl=None, llm=None, seed=0, real=parts,
                                    process="per_episode") as runtime:
                with pytest.raises(ToolError, match="cannot seed"):
                    await runtime.reset({"commits": "not a list"})
                await runtime.reset(GIT_SEED)
                unknown = await runtime.call("git_nope", {})
                assert unknown.is_error and "unknown tool" in unknown.text
                bad = await runtime.call("git_log", {"repo_path": "/workspace/not-a-repo"})
                assert bad.is_error and bad.text.startswith("Error: ")  # the server's own error, as a result
                os.killpg(runtime.server.watch.pipe._proc.pid, signal.SIGKILL)  # our server dies mid-episode
                with pytest.raises(ToolError, match="mcp-server-git|closed|gone|not running"):
                    await runtime.call("git_log", {"repo_path": "/workspace/repo"})
