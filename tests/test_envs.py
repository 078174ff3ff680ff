"""The RL environments of an exported executable toolset, driven by scripted policies: the gold
actions earn reward 1, doing nothing (or the wrong thing) 0, with the reward the judge stage filters by."""

from __future__ import annotations

import inspect
import json

import pytest
from datasets import load_from_disk
from transformers.utils.chat_template_utils import get_json_schema

from judges.checks import Subject, run_checks
from judges.config import JudgeConfig
from judges.reward import reward
from synth.config import RunConfig, dump_config
from synth.envs import EnvironmentOptions, trl_environments
from synth.envs.session import task_from_row
from synth.stages.export import export_run
from synth.core.llm import LLMConfig
from synth.context import Context
from synth.core.records import Agent, Task
from synth.core.store import RunStore
from synth.core.usage import UsageMeter
from tests.fake_openai import fake_openai_in_thread
from tests.test_gold import BWRAP, GOOD, implementation, specs

SANDBOX = {"type": "local", "isolation": "bwrap" if BWRAP else "none"}
OPENING = "Hi, please add a note called Trip about packing, tagged travel."


@pytest.fixture
def export_dir(tmp_path):
    """export/ of a run with the notes toolset (a passing implementation) and one gold task."""
    cfg = RunConfig.model_validate({"name": "envs", "runs_dir": str(tmp_path), "rollout": {"sandbox": SANDBOX}})
    store = RunStore(cfg.run_dir)
    store.open(dump_config(cfg), cfg.content_hash())
    tools = specs()
    agent = Agent(toolset_id=tools[0].toolset_id, toolset="notes", domain="notes", tool_ids=[t.id for t in tools],
                  name="Jot", system_prompt="You are Jot.")
    task = Task.model_validate({**GOOD, "agent_id": agent.id, "initial_state": json.loads(GOOD["initial_state"]),
                                "validated": True})
    store.append("tools", tools)
    store.append("implementations", [implementation(tools)])
    store.append("agents", [agent])
    store.append("tasks", [task])
    export_run(Context(cfg=cfg, store=store, llm=None, meter=UsageMeter(), quiet=True))
    store.close()
    return cfg.run_dir / "export"


def rl_rows(export_dir) -> list[dict]:
    return load_from_disk(str(export_dir / "rl"))["train"].to_list()


def user_handler(body: dict):
    """The user simulator's opening; nothing else is asked of the fake endpoint here."""
    return OPENING


def test_trl_environment_gold_actions_earn_1_and_nothing_0(export_dir):
    rows = rl_rows(export_dir)
    [row] = rows
    assert row["env_spec"]["runtime"] == "executable" and row["env_spec"]["assertions"]
    with fake_openai_in_thread(handler=user_handler) as fake:
        options = EnvironmentOptions(llm=LLMConfig(base_url=fake.base_url, model="fake", max_retries=0))
        classes = trl_environments(rows, options)
        assert list(classes) == [row["environment"]]
        env = classes[row["environment"]]()

        # Public methods are the toolset's tools, with schemas TRL derives from signature and docstring.
        public = sorted(n for n, _ in inspect.getmembers(type(env), inspect.isfunction) if not n.startswith("_"))
        assert public == ["create_note", "delete_note", "get_note", "get_reward", "list_notes", "reset"]
        schema = get_json_schema(env.create_note)["function"]
        assert schema["name"] == "create_note" and schema["parameters"]["required"] == ["title", "body"]
        assert schema["parameters"]["properties"]["tags"] == {"type": "array", "items": {"type": "string"},
                                                              "description": "Labels for filtering."}
        assert schema["parameters"]["properties"]["title"]["type"] == "string"

        assert env.reset(**row) == OPENING  # the user simulator's opening
        for action in row["env_spec"]["gold_actions"]:
            result = getattr(env, action["tool"])(**json.loads(action["arguments"]))
            assert not result.startswith("Error"), result
        assert env.get_reward() == 1.0
        assert env.last_reward.checks["final_state_assertions"] is True

        env.reset(**row)  # a new episode on a fresh state: doing nothing fails the assertions
        assert env.get_reward() == 0.0
        assert "check failed: final_state_assertions" in env.last_reward.reasons

        env.reset(**row)
        assert env.create_note(title="Trip").startswith("Error")  # body missing: the server says so
        env.delete_note(note_id=1)
        assert env.get_reward() == 0.0
    assert any("A busy teacher" in json.dumps(b["messages"]) for b in fake.requests)  # the user simulator asked


def test_without_an_endpoint_the_opening_is_the_goal(export_dir, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    [row] = rl_rows(export_dir)
    env = trl_environments([row])[row["environment"]]()
    assert env.reset(**row) == GOOD["goal"]
    env.list_notes()
    assert env.get_reward() == 0.0


def test_rows_without_assertions_need_the_judge(export_dir):
    from synth.core.errors import ConfigError

    [row] = rl_rows(export_dir)
    blind = {**row, "env_spec": {**row["env_spec"], "assertions": []}}
    with pytest.raises(ConfigError, match="no final-state assertions.*judge=True"):
        trl_environments([row, blind])
    assert trl_environments([blind], EnvironmentOptions(judge=True))


def test_the_reward_is_the_judge_stages_rule():
    """One definition: a failed check is reward 0 and the same drop reason the judge stage records."""
    from synth.core.records import Criterion, StateAssertion, Trajectory

    task = Task(agent_id="a", goal="g", persona="p", rubric=[Criterion(text="c", kind="essential")],
                assertions=[StateAssertion(path="x", op="equals", value="1")])
    done = Trajectory(task_id=task.id, agent_id="a", tools=[], final_state={"x": 1},
                      messages=[{"role": "user", "content": "u"}, {"role": "assistant", "content": "ok"}])
    subject = Subject(done, task)
    result = reward(JudgeConfig(), subject, run_checks(subject))
    assert (result.reward, result.keep, result.reasons) == (1.0, True, [])
    failed = Subject(done.model_copy(update={"final_state": {"x": 2}}), task)
    result = reward(JudgeConfig(), failed, run_checks(failed))
    assert result.reward == 0.0 and result.reasons == ["check failed: final_state_assertions"]
    # With the judge: the judge stage's verdict and the reward decide alike, with the same reasons.
    from judges.judge import JudgeOutcome
    from judges.verdict import verdict
    from synth.core.records import CriterionResult

    for passed in (True, False):
        results = [CriterionResult(index=0, passed=passed, reason="r")]
        outcome = JudgeOutcome(results=results, score=float(passed), samples=[results], scores=[float(passed)], seeds=[0])
        for subject in (Subject(done, task), failed):
            checks = run_checks(subject)
            decided, judged = reward(JudgeConfig(), subject, checks, outcome), verdict(
                JudgeConfig(), task, subject.trajectory, outcome, checks, unit="u")
            assert (decided.keep, decided.reasons) == (judged.keep, judged.reasons)
            assert decided.reward == (outcome.score if judged.keep else 0.0)


def test_every_check_the_trl_environment_runs_is_a_check_of_the_judge_stage():
    from judges.checks import CHECKS
    from judges.reward import CALLS_AND_STATE, without_text

    assert CALLS_AND_STATE <= set(CHECKS)
    assert set(without_text()) == CALLS_AND_STATE
    assert {"ends_with_assistant_reply", "claims_backed_by_tool_calls"} & set(without_text()) == set()


def test_task_from_row_keeps_what_the_reward_needs(export_dir):
    [row] = rl_rows(export_dir)
    task = task_from_row(row)
    assert task.id == row["task_id"] and [a.tool for a in task.gold_actions] == ["list_notes", "create_note"]
    assert len(task.assertions) == 3 and task.user_facts == GOOD["user_facts"]


# ---------------------------------------------------------------- verifiers


def scripted_policy(gold: list[dict], act: bool):
    """The fake endpoint as both sides: the agent (requests with tools) replays the gold actions one per
    step, or only talks when `act` is false; the user simulator opens, then ends the conversation."""
    from synth.user_sim import STOP

    def handler(body: dict):
        messages = body["messages"]
        if body.get("tools"):
            done = sum(m["role"] == "tool" for m in messages)
            if act and done < len(gold):
                action = gold[done]
                return {"content": "", "tool_calls": [{"id": f"g{done}", "type": "function", "function": {
                    "name": action["tool"], "arguments": action["arguments"]}}]}
            return "Your note Trip is saved." if act else "Hello! I can help with notes."
        if len(messages) <= 2:
            return OPENING
        return f"Thanks. {STOP}"
    return handler


@pytest.mark.train
@pytest.mark.parametrize("act, expected", [(True, 1.0), (False, 0.0)])
def test_verifiers_environment_runs_the_cards_snippet_with_the_same_reward(export_dir, act, expected, monkeypatch):
    from verifiers.legacy.types import ClientConfig

    from tests.test_train_smoke import card_snippets

    [row] = rl_rows(export_dir)
    with fake_openai_in_thread(handler=scripted_policy(row["env_spec"]["gold_actions"], act)) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)  # the user simulator's endpoint
        monkeypatch.setenv("FAKE_KEY", "sk-fake")
        namespace = {"export_dir": str(export_dir), "model_name": "fake",
                     "client": ClientConfig(api_base_url=fake.base_url, api_key_var="FAKE_KEY")}
        snippet = card_snippets((export_dir / "README.md").read_text())[2]
        exec(compile(snippet, "card:verifiers", "exec"), namespace)
    [output] = namespace["results"]["outputs"]
    assert output["reward"] == expected, output.get("error")
    tool_results = [m for m in output["completion"] if m["role"] == "tool"]
    assert len(tool_results) == (2 if act else 0)
    # The user's closing message stays, as in rollouts, after the assistant's last answer.
    assert [m["role"] for m in output["completion"][-2:]] == ["assistant", "user"]
    assert output["completion"][-1]["content"] == "Thanks."


@pytest.mark.train
async def test_verifiers_reward_reads_the_whole_conversation(export_dir, monkeypatch):
    """Unlike TRL's environment, verifiers' rubric sees the assistant's text: its checks apply."""
    from verifiers.legacy.types import ClientConfig

    from synth.envs import load_environment
    from tests.fake_openai import FakeOpenAI

    [row] = rl_rows(export_dir)
    monkeypatch.setenv("FAKE_KEY", "sk-fake")
    async with FakeOpenAI(handler=scripted_policy(row["env_spec"]["gold_actions"], True)) as fake:
        options = EnvironmentOptions(llm=LLMConfig(base_url=fake.base_url, model="fake", max_retries=0))
        env = load_environment(str(export_dir / "rl"), options=options)
        results = await env.evaluate(client=ClientConfig(api_base_url=fake.base_url, api_key_var="FAKE_KEY"),
                                     model="fake", state_columns=["synth_reward_detail"], on_progress=lambda *a, **k: None)
    [output] = results["outputs"]
    detail = output["synth_reward_detail"]
    assert detail["reward"] == 1.0 and detail["checks"]["final_state_assertions"] is True
    assert {"ends_with_assistant_reply", "claims_backed_by_tool_calls", "stated_ids_grounded"} <= set(detail["checks"])


# ---------------------------------------------------------------- one real GRPO step


@pytest.mark.train
def test_one_grpo_step_with_the_cards_snippet(export_dir, tmp_path, monkeypatch):
    """TRL's GRPOTrainer drives the environment for real (tiny model on CPU, no endpoint: the opening
    is the goal and the tools are the executable module). Whatever it generates, the step runs and
    every rollout got synth's reward."""
    from tests.test_train_smoke import card_snippets
    from tests.tiny_model import load_tiny_model

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    model, tokenizer = load_tiny_model("qwen2_5")
    tokenizer.padding_side = "left"
    namespace = {"export_dir": str(export_dir), "model": model, "tokenizer": tokenizer,
                 "grpo_args": {"max_steps": 1, "per_device_train_batch_size": 2, "num_generations": 2,
                               "max_completion_length": 48, "use_cpu": True, "report_to": "none",
                               "save_strategy": "no", "logging_steps": 1, "dataloader_num_workers": 0}}
    grpo_snippet = card_snippets((export_dir / "README.md").read_text())[1]
    exec(compile(grpo_snippet, "card:grpo", "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == 1
    [logged] = [h for h in trainer.state.log_history if "loss" in h]
    rewards = [v for k, v in logged.items() if k.startswith("rewards/") and k.endswith("/mean")]
    assert rewards and all(0.0 <= r <= 1.0 for r in rewards), logged


@pytest.mark.parametrize("passed, expected", [(True, 1.0), (False, 0.0)])
def test_with_the_judge_the_reward_is_the_judge_stages_score(export_dir, passed, expected):
    """EnvironmentOptions(judge=True): the rubric judge joins the checks, as in the judge stage."""
    def handler(body: dict):
        if body.get("response_format"):  # the judge: one verdict per criterion
            return json.dumps({"results": [{"reason": "The note was created.", "passed": passed, "turn": 1}]})
        return OPENING

    [row] = rl_rows(export_dir)
    with fake_openai_in_thread(handler=handler) as fake:
        options = EnvironmentOptions(llm=LLMConfig(base_url=fake.base_url, model="fake", max_retries=0), judge=True)
        env = trl_environments([row], options)[row["environment"]]()
        env.reset(**row)
        for action in row["env_spec"]["gold_actions"]:
            getattr(env, action["tool"])(**json.loads(action["arguments"]))
        assert env.get_reward() == expected
        assert env.last_reward.judged and env.last_reward.checks["final_state_assertions"] is True
        if not passed:
            assert env.last_reward.reasons == ["essential criterion failed: The assistant creates the note.",
                                               "score 0.00 below threshold 0.50"]
        judged = [b for b in fake.requests if b.get("response_format")]
    assert len(judged) == 1 and "create_note" in json.dumps(judged[0]["messages"])  # the judge saw the calls
