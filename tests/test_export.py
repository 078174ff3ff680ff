"""Export of a hand-built run directory: SFT/RL datasets read back exactly, parquet, dataset card, reruns."""

import json
from dataclasses import dataclass

import yaml
import pytest
from datasets import Dataset, load_from_disk

from synth.config import RunConfig, dump_config
from synth.context import Context
from synth.core.records import Agent, Criterion, Task, ToolSpec, Trajectory, Verdict
from synth.core.store import RunStore
from synth.core.usage import UsageMeter
from synth.stages.export import export_run, rl_rows, sft_rows

SEARCH = ToolSpec(name="search_flights", description="Find flights.", toolset="travel", inputSchema={
    "type": "object", "properties": {"origin": {"type": "string"}, "date": {"type": "string", "format": "date"}},
    "required": ["origin"]})
BOOK = ToolSpec(name="book_seat", description="Book a seat.", toolset="travel", kind="executable", inputSchema={
    "type": "object", "properties": {"flight": {"type": "integer"}, "window": {"type": "boolean"},
                                     "meal": {"type": "object", "properties": {"vegan": {"type": "boolean"}}}},
    "required": ["flight"]})


def tool_call(call_id, name, arguments):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


@dataclass
class Run:
    ctx: Context
    agent: Agent
    task: Task
    a: Trajectory  # uses search_flights
    b: Trajectory  # uses book_seat: different schema, different argument keys

    @property
    def export(self):
        return self.ctx.store.root / "export"

    def verdicts(self, keep_a: bool, keep_b: bool) -> None:
        self.ctx.store.append("verdicts", [
            Verdict(trajectory_id=self.a.id, task_id=self.task.id, score=0.9 if keep_a else 0.2, keep=keep_a,
                    reasons=[] if keep_a else ["score 0.20 below threshold 0.50"]),
            Verdict(trajectory_id=self.b.id, task_id=self.task.id, score=0.75 if keep_b else 1.0, keep=keep_b,
                    reasons=[] if keep_b else ["check failed: tool_calls_answered",
                                               "essential criterion failed: books a seat"]),
        ])

    def reload(self) -> list:
        """Everything the store holds, as export_run sees it."""
        s = self.ctx.store
        return [s.read("trajectories"), s.read("verdicts")]


@pytest.fixture
def run(tmp_path):
    cfg = RunConfig(runs_dir=str(tmp_path), name="tiny", llm={"model": "gen-model"}, export={"license": "mit"})
    store = RunStore(cfg.run_dir)
    store.open(dump_config(cfg), cfg.content_hash())
    agent = Agent(toolset_id="ts", toolset="travel", domain="airlines", tool_ids=[SEARCH.id, BOOK.id],
                  name="agent", system_prompt="You book flights.")
    task = Task(agent_id=agent.id, goal="Fly to Oslo on Friday", persona="student", user_facts=["from Bergen"],
                difficulty="medium", initial_state={"flights": [{"id": 7, "seats": 3}]},
                rubric=[Criterion(text="books a seat", kind="essential", weight=2), Criterion(text="rude", kind="pitfall")])
    a = Trajectory(task_id=task.id, agent_id=agent.id, seed=11, sample=0, user_stopped=True, tools=[SEARCH.to_openai()],
                   messages=[
                       {"role": "system", "content": "You book flights."},
                       {"role": "user", "content": "Flights from Bergen?"},
                       {"role": "assistant", "content": None,
                        "tool_calls": [tool_call("c1", "search_flights", {"origin": "BGO", "date": "2025-01-03"})]},
                       {"role": "tool", "tool_call_id": "c1", "name": "search_flights", "content": '[{"id": 7}]'},
                       {"role": "assistant", "content": "Flight 7 leaves at 9."},
                   ])
    b = Trajectory(task_id=task.id, agent_id=agent.id, seed=12, sample=1, tools=[BOOK.to_openai()], messages=[
        {"role": "user", "content": "Book flight 7, window, vegan."},
        {"role": "assistant", "content": "",
         "tool_calls": [tool_call("x1", "book_seat", {"flight": 7, "window": True, "meal": {"vegan": True}})]},
        {"role": "tool", "tool_call_id": "x1", "content": "booked"},
        {"role": "assistant", "content": "Done."},
    ])
    store.append("tools", [SEARCH, BOOK])
    store.append("agents", [agent])
    store.append("tasks", [task])
    store.append("trajectories", [a, b])
    yield Run(Context(cfg=cfg, store=store, llm=None, meter=UsageMeter(), quiet=True), agent, task, a, b)
    store.close()


def load_rows(path) -> list[dict]:
    data = load_from_disk(str(path))
    assert list(data) == ["train"]
    return data["train"].to_list()


def test_sft_rows_read_back_exactly(run):
    run.verdicts(True, True)
    written = sft_rows(run.ctx, *run.reload())
    assert export_run(run.ctx) == {"sft_rows": 2, "rl_rows": 1, "all_rows": 2, "dpo_rows": 0}

    back = load_rows(run.export / "sft")
    assert back == written
    assert [r["trajectory_id"] for r in back] == [run.a.id, run.b.id]
    # Only the keys each message has: Llama-3.1's template tests `'tool_calls' in message`.
    assert [sorted(m) for m in back[0]["messages"]] == [
        ["content", "role"], ["content", "role"], ["content", "role", "tool_calls"],
        ["content", "name", "role", "tool_call_id"], ["content", "role"]]
    assert sorted(back[1]["messages"][2]) == ["content", "role", "tool_call_id"]


def test_tools_and_arguments_are_not_unified_across_rows(run):
    run.verdicts(True, True)
    export_run(run.ctx)
    row_a, row_b = load_rows(run.export / "sft")
    assert row_a["tools"] == [SEARCH.to_openai()]
    assert row_b["tools"] == [BOOK.to_openai()]
    assert row_a["tools"][0]["function"]["parameters"] == SEARCH.input_schema
    assert set(row_a["tools"][0]["function"]["parameters"]["properties"]) == {"origin", "date"}
    assert set(row_b["tools"][0]["function"]["parameters"]["properties"]) == {"flight", "window", "meal"}
    [call] = row_b["messages"][1]["tool_calls"]
    assert call["function"]["arguments"] == {"flight": 7, "window": True, "meal": {"vegan": True}}  # an object
    assert row_a["messages"][2]["content"] == ""  # None content becomes ""
    assert "tool_calls" not in row_a["messages"][0]
    assert (row_a["parallel_tool_calls"], row_b["parallel_tool_calls"]) == (False, False)


def test_row_metadata(run):
    run.verdicts(True, True)
    export_run(run.ctx)
    row_a, row_b = load_rows(run.export / "sft")
    assert (row_a["score"], row_b["score"]) == (0.9, 0.75)
    assert (row_a["user_stopped"], row_b["user_stopped"]) == (True, False)
    assert (row_a["seed"], row_b["sample"]) == (11, 1)
    assert row_a["domain"] == "airlines" and row_a["toolset"] == "travel"
    assert row_a["model"] == "gen-model"
    assert row_a["config_hash"] == run.ctx.cfg.content_hash()


def test_only_kept_trajectories_are_exported(run):
    run.verdicts(keep_a=False, keep_b=True)
    assert export_run(run.ctx)["sft_rows"] == 1
    [row] = load_rows(run.export / "sft")
    assert row["trajectory_id"] == run.b.id


def test_rl_rows_read_back(run):
    run.verdicts(True, False)
    written = rl_rows(run.ctx, [run.task])
    export_run(run.ctx)
    [row] = load_rows(run.export / "rl")
    assert [row] == written
    # The user's opening comes from the environment's reset(), which TRL appends to the empty user turn.
    assert row["prompt"] == [{"role": "system", "content": "You book flights."}, {"role": "user", "content": ""}]
    assert row["tools"] == [SEARCH.to_openai(), BOOK.to_openai()]
    assert row["rubric"] == [c.model_dump() for c in run.task.rubric]
    assert row["initial_state"] == run.task.initial_state
    assert row["user"] == {"persona": "student", "goal": "Fly to Oslo on Friday", "facts": ["from Bergen"]}
    assert row["environment"].startswith("travel_")
    environment = row["env_spec"]
    assert environment["sandbox"]["type"] == "local"
    assert environment["toolsets"] == [{"kind": "simulated", "spec": SEARCH.to_mcp()},
                                       {"kind": "executable", "spec": BOOK.to_mcp()}]


def test_parquet_files_match(run):
    run.verdicts(True, False)
    export_run(run.ctx)
    for name, rows in (("sft", 1), ("rl", 1)):
        path = run.export / "parquet" / name / "train.parquet"
        assert path.is_file()
        data = Dataset.from_parquet(str(path))
        assert data.num_rows == rows
        assert data.to_list() == load_rows(run.export / name)


def test_no_parquet_when_disabled(run):
    run.ctx.cfg.export.parquet = False
    run.verdicts(True, True)
    export_run(run.ctx)
    assert not (run.export / "parquet").exists()
    assert len(load_rows(run.export / "sft")) == 2


def test_dataset_card_reports_funnel_and_drop_reasons(run):
    run.verdicts(keep_a=False, keep_b=False)
    run.ctx.store.error("rollouts", "task-x", TimeoutError("slow"))
    export_run(run.ctx)
    card = (run.export / "README.md").read_text()
    assert "license: mit" in card
    assert "# tiny:" in card
    for line in ("| tools | 2 |", "| agents | 1 |", "| tasks | 1 |", "| trajectories | 2 |", "| verdicts | 2 |",
                 "| kept | 0 |"):
        assert line in card
    assert "| score below threshold | 1 |" in card
    assert "| check failed: tool_calls_answered | 1 |" in card
    assert "| essential criterion failed | 1 |" in card
    assert "no test split: a single domain (airlines)" in card
    assert "| rollouts | TimeoutError | 1 |" in card
    assert "`gen-model`" in card and run.ctx.cfg.content_hash() in card
    assert "$" not in card.replace("$defs", "")


def test_zero_kept_rows_still_writes_a_loadable_dataset(run):
    run.verdicts(False, False)
    assert export_run(run.ctx)["sft_rows"] == 0
    data = load_from_disk(str(run.export / "sft"))["train"]
    assert data.num_rows == 0
    assert "messages" in data.column_names and "tools" in data.column_names
    # load_dataset("parquet") refuses an empty file, so an empty split gets no parquet and no card config.
    assert not (run.export / "parquet" / "sft").exists()
    card = (run.export / "README.md").read_text()
    assert "| kept | 0 |" in card and "`sft/` (train 0 rows)" in card
    assert [c["config_name"] for c in front_matter(card)["configs"]] == ["rl", "all"]  # sft and dpo are empty


def test_rerun_replaces_previous_output(run):
    run.verdicts(True, True)
    export_run(run.ctx)
    assert len(load_rows(run.export / "sft")) == 2
    (run.export / "stale.txt").write_text("from an older export")

    # The verdicts change (e.g. the judge stage was redone): rewrite verdicts.jsonl and export again.
    run.ctx.store.path("verdicts").unlink()
    run.ctx.store = RunStore(run.ctx.store.root)
    run.verdicts(keep_a=False, keep_b=True)
    assert export_run(run.ctx)["sft_rows"] == 1

    assert [r["trajectory_id"] for r in load_rows(run.export / "sft")] == [run.b.id]
    assert Dataset.from_parquet(str(run.export / "parquet" / "sft" / "train.parquet")).num_rows == 1
    assert not (run.export / "stale.txt").exists()
    assert not (run.ctx.store.root / "export.tmp").exists()
    assert "| kept | 1 |" in (run.export / "README.md").read_text()


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def add_domain(run, domain: str, keep: bool = True) -> Trajectory:
    """Another agent in its own domain, with one task and one trajectory (kept unless told)."""
    agent = Agent(toolset_id="ts", toolset="travel", domain=domain, tool_ids=[SEARCH.id], name=domain, system_prompt="s")
    task = Task(agent_id=agent.id, goal=f"goal in {domain}", persona="p", rubric=[Criterion(text="ok")])
    t = Trajectory(task_id=task.id, agent_id=agent.id, tools=[SEARCH.to_openai()], messages=[
        {"role": "user", "content": domain}, {"role": "assistant", "content": "hi"}])
    s = run.ctx.store
    s.append("agents", [agent])
    s.append("tasks", [task])
    s.append("trajectories", [t])
    s.append("verdicts", [Verdict(trajectory_id=t.id, task_id=task.id, score=1.0 if keep else 0.0, keep=keep,
                                  reasons=[] if keep else ["score 0.00 below threshold 0.50"])])
    return t


def test_split_by_domain_never_leaks_test_domains_into_train(run):
    from datasets import load_dataset, load_from_disk

    from synth.stages.export import split_domains

    run.verdicts(True, True)
    for domain in ("banking", "cooking", "dentistry", "email", "fitness"):  # 6 domains with airlines
        add_domain(run, domain)
    written = sft_rows(run.ctx, *run.reload())
    export_run(run.ctx)
    test_domains = split_domains(["airlines", "banking", "cooking", "dentistry", "email", "fitness"], 0.2, 0)
    assert len(test_domains) == 1  # round(6 * 0.2)
    for name in ("sft", "rl"):
        data = load_from_disk(str(run.export / name))
        assert list(data) == ["train", "test"]
        train, test = data["train"].to_list(), data["test"].to_list()
        assert {r["domain"] for r in test} == set(test_domains)
        assert not {r["domain"] for r in train} & set(test_domains)
    sft = load_from_disk(str(run.export / "sft"))
    back = sft["train"].to_list() + sft["test"].to_list()
    assert sorted(back, key=lambda r: r["trajectory_id"]) == sorted(written, key=lambda r: r["trajectory_id"])
    card = (run.export / "README.md").read_text()
    assert f"test domains: {test_domains[0]}" in card
    for config in front_matter(card)["configs"]:  # the card's configs load with the parquet builder
        files = {f["split"]: str(run.export / f["path"]) for f in config["data_files"]}
        loaded = load_dataset("parquet", data_files=files)
        assert loaded.keys() == files.keys()


def test_split_domains_is_deterministic_and_keeps_train():
    from synth.stages.export import split_domains

    domains = [f"d{i}" for i in range(10)]
    assert split_domains(domains, 0.2, 1) == split_domains(list(reversed(domains)), 0.2, 1)
    assert len(split_domains(domains, 0.2, 1)) == 2
    assert any(split_domains(domains, 0.2, seed) != split_domains(domains, 0.2, 1) for seed in range(2, 8))
    assert split_domains(["a"], 0.9, 0) == [] and split_domains(["a", "b"], 0.2, 0) == []
    assert split_domains(["a", "b"], 0.9, 0) in (["a"], ["b"])  # at least one domain stays in train
    assert split_domains(domains, 0.0, 0) == []


def test_empty_test_split_is_loadable_and_has_no_card_config(run):
    from datasets import load_from_disk

    run.verdicts(True, True)
    for domain in ("banking", "cooking", "dentistry", "email"):
        add_domain(run, domain, keep=False)  # whatever is held out has nothing kept
    run.ctx.cfg.export.test_fraction = 0.4  # 2 of 5 domains; airlines may be one of them
    export_run(run.ctx)
    sft = load_from_disk(str(run.export / "sft"))
    assert len(sft["test"]) == 0 and len(sft["train"]) == 2  # seed 0 holds out banking and cooking
    card = front_matter((run.export / "README.md").read_text())
    listed = {c["config_name"]: [f["split"] for f in c["data_files"]] for c in card.get("configs", [])}
    for split, ds in sft.items():
        assert (split in listed.get("sft", [])) == (len(ds) > 0)
        assert (run.export / "parquet" / "sft" / f"{split}.parquet").exists() == (len(ds) > 0)


def test_privileged_hint_and_provenance_columns(run):
    run.verdicts(True, True)
    run.ctx.store.path("verdicts").unlink()
    run.ctx.store = RunStore(run.ctx.store.root)
    run.ctx.store.append("verdicts", [
        Verdict(trajectory_id=run.a.id, task_id=run.task.id, score=1.0, keep=True, checks={"tool_arguments_valid": True},
                results=[{"index": 0, "passed": True, "reason": "booked", "turn": 1},
                         {"index": 1, "passed": False, "reason": "polite", "turn": None}])])
    export_run(run.ctx)
    [row] = load_rows(run.export / "sft")
    # Its own calls are not a hint (circular): the task has no gold actions and no other kept sample.
    assert row["privileged"] == "Facts the user knows: from Bergen\nInitial state: " + json.dumps(
        run.task.initial_state, sort_keys=True)
    assert row["privileged_source"] == "none"
    assert row["criteria"] == [
        {"index": 0, "passed": True, "reason": "booked", "turn": 1, "text": "books a seat", "kind": "essential", "weight": 2.0},
        {"index": 1, "passed": False, "reason": "polite", "turn": None, "text": "rude", "kind": "pitfall", "weight": 1.0}]
    assert row["checks"] == {"tool_arguments_valid": True}
    assert (row["sandbox_type"], row["sandbox_image"]) == ("local", "")
    assert row["tool_ids"] == [SEARCH.id, BOOK.id]
    assert (row["turns"], row["num_tool_calls"], row["difficulty"]) == (1, 1, "medium")
    card = (run.export / "README.md").read_text()
    assert "| tool calls per trajectory | 1.00 | 1 | 1 |" in card
    assert "| 0.8-1.0] | 1 | 1 |" in card
    assert "Sandbox: local" in card and "mode rubric, 1 sample(s)" in card


def test_rl_environment_names_image_and_runtime(run):
    run.verdicts(True, False)
    [row] = rl_rows(run.ctx, [run.task])
    environment = row["env_spec"]
    # One simulated and one executable spec, but no passing implementation: the rollout simulates both.
    assert environment["image"] is None and environment["runtime"] == "simulated"
    from sandboxes.docker import DockerConfig

    run.ctx.cfg.rollout.sandbox = DockerConfig(image="synth-sandbox:abc")
    [row] = rl_rows(run.ctx, [run.task])
    environment = row["env_spec"]
    assert environment["image"] == "synth-sandbox:abc" and environment["sandbox"]["type"] == "docker"


def test_push_to_hub_fails_clearly_without_token_or_network(run, monkeypatch, tmp_path):
    import socket

    import huggingface_hub.constants

    from synth.core.errors import ConfigError, ProviderError
    from synth.hub import push_to_hub

    with pytest.raises(ConfigError, match="synth export"):
        push_to_hub(tmp_path / "nothing", "me/data")
    run.verdicts(True, True)
    export_run(run.ctx)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    with pytest.raises(ConfigError, match="HF_TOKEN"):
        push_to_hub(run.export, "me/data")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(ProviderError, match=f"127.0.0.1:{port}"):
        push_to_hub(run.export, "me/data")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ProviderError, match="HF_HUB_OFFLINE"):
        push_to_hub(run.export, "me/data")


def test_dataset_card_says_which_runtime_answered_and_how_faithful_the_simulator_is(run):
    from tools.catalog import by_label
    from tools.fidelity import FidelityReport, ToolFidelity

    fetch = ToolSpec(name="fetch", description="Fetch a URL.", toolset="fetch", kind="real",
                     inputSchema={"type": "object", "properties": {"url": {"type": "string"}}},
                     provenance={"launch": by_label("fetch").launch().model_dump(mode="json")})
    run.ctx.store.append("tools", [fetch])
    run.verdicts(True, True)
    git_log = ToolFidelity(calls=4, error_agreement=1.0, structural_agreement=0.5, value_agreement=0.25,
                           values_compared=4, deterministic=4)
    checkout = ToolFidelity(calls=2, error_agreement=0.5, structural_agreement=1.0, deterministic=0)
    report = FidelityReport(servers=["git"], calls=6, simulator_model="tiny-sim", tools={
        "git_log": git_log, "git_checkout": checkout}, overall=ToolFidelity(
        calls=6, error_agreement=5 / 6, structural_agreement=4 / 6, value_agreement=0.25, values_compared=4))
    run.ctx.store.update_manifest(tool_runtimes={"calls": {"real": 6, "simulated": 2}, "total": 8},
                                  tool_fidelity=report.model_dump(mode="json"))
    export_run(run.ctx)
    card = (run.export / "README.md").read_text()
    assert "Tool calls per runtime: real: 6, simulated: 2" in card
    assert "need the network stay simulated (sandboxes have none): fetch." in card
    assert "6 calls to git" in card and "model `tiny-sim`" in card
    assert "errors agree 83%, structure agrees 67%, values agree 25% of 4" in card
    assert "| git_checkout | 2 | 50% | 100% | - |" in card and "| git_log | 4 | 100% | 50% | 25% |" in card


def test_dataset_card_without_real_servers_says_fidelity_was_not_measured(run):
    run.verdicts(True, True)
    export_run(run.ctx)
    card = (run.export / "README.md").read_text()
    assert "Tool calls per runtime: none recorded" in card and "Simulator fidelity: not measured" in card
    assert "stay simulated" not in card
