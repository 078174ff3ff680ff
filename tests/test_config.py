"""Config loading: defaults, strict keys, clear errors naming the key, overrides, content hash, no secrets."""

from pathlib import Path

import pytest
import yaml

from sandboxes.docker import DockerConfig
from sandboxes.local import LocalConfig
from synth.config import RunConfig, dump_config, load_config
from synth.core.errors import ConfigError

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml"


@pytest.fixture
def write_yaml(tmp_path):
    def write(data, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return path

    return write


def config_error(path, overrides=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


def test_defaults_without_a_file():
    cfg = load_config(None)
    assert cfg == RunConfig()
    assert cfg.name == "quickstart" and cfg.tasks.per_agent == 2
    assert isinstance(cfg.rollout.sandbox, LocalConfig)
    assert cfg.run_dir == Path("runs") / "quickstart"


def test_empty_file_gives_defaults(write_yaml):
    assert load_config(write_yaml("")) == RunConfig()


def test_quickstart_example_loads():
    cfg = load_config(QUICKSTART)
    assert cfg.name == "quickstart"
    assert cfg.tools.tools_per_toolset == 2
    assert cfg.rollout.max_turns == 2
    assert cfg.rollout.sandbox.type == "local"
    assert cfg.llm.concurrency == 2


def test_nested_values_and_sandbox_union(write_yaml):
    cfg = load_config(write_yaml({"rollout": {"max_turns": 5, "sandbox": {"type": "docker", "memory_mb": 256}}}))
    assert cfg.rollout.max_turns == 5
    assert isinstance(cfg.rollout.sandbox, DockerConfig) and cfg.rollout.sandbox.memory_mb == 256
    assert cfg.rollout.max_tool_steps == RunConfig().rollout.max_tool_steps  # untouched keys keep defaults


@pytest.mark.parametrize("data, key", [
    ({"sed": 1}, "sed"),
    ({"rollout": {"max_turn": 3}}, "rollout.max_turn"),
    ({"judge": {"keep_treshold": 0.5}}, "judge.keep_treshold"),
])
def test_unknown_key_is_named(write_yaml, data, key):
    message = config_error(write_yaml(data))
    assert f"{key}: unknown key" in message
    assert "config.yaml" in message


def test_unknown_key_inside_the_sandbox_union_is_named(write_yaml):
    message = config_error(write_yaml({"rollout": {"sandbox": {"type": "local", "isolaton": "none"}}}))
    assert "isolaton: unknown key" in message
    assert "rollout.sandbox." in message  # pydantic puts the union tag in the path: rollout.sandbox.local.isolaton


@pytest.mark.parametrize("data, key", [
    ({"tasks": {"per_agent": 0}}, "tasks.per_agent"),
    ({"judge": {"keep_threshold": 1.5}}, "judge.keep_threshold"),
    ({"rollout": {"sandbox": {"type": "ftp"}}}, "rollout.sandbox"),
    ({"tools": {"categories": "many"}}, "tools.categories"),
    ({"name": "has space"}, "name"),
])
def test_bad_value_is_named(write_yaml, data, key):
    message = config_error(write_yaml(data))
    assert f"\n  {key}" in message
    assert "unknown key" not in message


def test_bad_sandbox_type_names_the_value(write_yaml):
    message = config_error(write_yaml({"rollout": {"sandbox": {"type": "ftp"}}}))
    assert "ftp" in message


def test_non_mapping_yaml_fails(write_yaml):
    message = config_error(write_yaml("- a\n- b\n"))
    assert "mapping" in message and "list" in message


def test_invalid_yaml_fails(write_yaml):
    message = config_error(write_yaml("rollout: {max_turns: 3\n"))
    assert "not valid YAML" in message and "config.yaml" in message


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    message = config_error(missing)
    assert str(missing) in message and "does not exist" in message


def test_overrides_apply(write_yaml, tmp_path):
    path = write_yaml({"name": "from-file", "seed": 3})
    cfg = load_config(path, {"name": "from-cli", "runs_dir": str(tmp_path / "runs"), "seed": None})
    assert cfg.name == "from-cli"
    assert cfg.runs_dir == str(tmp_path / "runs")
    assert cfg.seed == 3  # None overrides are ignored
    assert cfg.run_dir == tmp_path / "runs" / "from-cli"


def test_bad_override_is_validated():
    assert "name" in config_error(None, {"name": "../escape"})


def test_content_hash_ignores_placement_and_endpoint():
    base = RunConfig().content_hash()
    same = RunConfig(name="other", runs_dir="/elsewhere", concurrency=64,
                     llm={"base_url": "http://localhost:9/v1", "concurrency": 99, "api_key_env": "MY_KEY"},
                     rollout={"concurrency": 32}, export={"parquet": False})
    assert same.content_hash() == base


@pytest.mark.parametrize("change", [
    {"seed": 1},
    {"tools": {"categories": 3}},
    {"llm": {"model": "other-model"}},
    {"judge": {"keep_threshold": 0.9}},
    {"rollout": {"sandbox": {"type": "docker"}}},
])
def test_content_hash_changes_with_what_decides_records(change):
    assert RunConfig(**change).content_hash() != RunConfig().content_hash()


def test_content_hash_is_stable():
    assert RunConfig(seed=5).content_hash() == RunConfig(seed=5).content_hash()


def test_dump_round_trips(tmp_path):
    cfg = RunConfig(name="x", seed=7, rollout={"sandbox": {"type": "docker"}})
    path = tmp_path / "dumped.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_api_key_never_dumped(monkeypatch, write_yaml):
    secret = "sk-test-SECRET-1234567890"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("MY_PROVIDER_KEY", secret)
    cfg = load_config(write_yaml({"llm": {"api_key_env": "MY_PROVIDER_KEY"}}))
    text = dump_config(cfg)
    assert secret not in text
    assert "MY_PROVIDER_KEY" in text
    assert yaml.safe_load(text)["llm"]["api_key_env"] == "MY_PROVIDER_KEY"


def test_api_key_value_in_config_is_rejected_without_echoing_it(write_yaml):
    secret = "sk-test-SECRET-abcdef"
    message = config_error(write_yaml({"llm": {"api_key": secret}}))
    assert "llm.api_key: unknown key" in message
    assert secret not in message


def test_fields_left_at_defaults_do_not_change_the_hash():
    """A new release may add config fields; existing run dirs must stay resumable."""
    assert RunConfig(judge={"keep_threshold": 0.5}).content_hash() == RunConfig().content_hash()


def test_old_embedded_configs_validate_and_hash_as_before(write_yaml):
    old = load_config(write_yaml({"embedded": {"model_file": "/models/x.gguf", "chat_format": "chatml-function-calling",
                                               "model_alias": "smollm2", "n_threads": 2}}))
    assert old.embedded.model_name == Path("/models/x.gguf")
    preset = load_config(write_yaml({"embedded": {"model": "Qwen2.5-Coder-1.5B"}}))
    assert old.content_hash() == preset.content_hash() == RunConfig().content_hash()


def test_embedded_model_and_model_file_together_are_refused(write_yaml):
    message = config_error(write_yaml({"embedded": {"model": "Qwen2.5-Coder-1.5B", "model_file": "/m/x.gguf"}}))
    assert "embedded" in message and "not both" in message


def test_requests_to_the_embedded_server_name_the_served_model():
    """The response cache is keyed by the request: replies of one preset must not answer for another."""
    from synth.run import embedded_llm_config

    assert embedded_llm_config(RunConfig()).model == "smollm2"  # the default: caches of older runs still hit
    assert embedded_llm_config(RunConfig(embedded={"model": "qwen2.5-coder-1.5b"})).model == "qwen2.5-coder-1.5b"
    assert embedded_llm_config(RunConfig(embedded={"model_file": "/m/tiny-q4.gguf"})).model == "tiny-q4"
    assert embedded_llm_config(RunConfig(embedded={"model_file": "weights.bin"})).model == "weights", "always a path"
    explicit = RunConfig(embedded={"model": "Qwen2.5-Coder-1.5B"}, llm={"model": "mine"})
    assert embedded_llm_config(explicit).model == "mine"


def test_sandbox_limits_leave_the_hash_as_if_unset():
    """A run dir written before the limits had defaults (`memory_mb: null` in its config.yaml) keeps
    its hash: limits alone on the default backend hash like no sandbox section at all."""
    plain = RunConfig(rollout={"samples_per_task": 3})
    limited = RunConfig(rollout={"samples_per_task": 3, "sandbox": {"type": "local", "memory_mb": None, "cpu_s": None}})
    assert limited.content_hash() == plain.content_hash()
    docker = RunConfig(rollout={"samples_per_task": 3, "sandbox": {"type": "docker", "memory_mb": 1024}})
    assert docker.content_hash() != plain.content_hash()
