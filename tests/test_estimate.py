"""`synth run --estimate`: a pilot through the run's response cache, projected to the full config
(scripted endpoint), and the projection's arithmetic."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from cli import app
from synth.config import RunConfig, load_config
from synth.core.errors import ConfigError
from synth.core.usage import Usage
from synth.estimate import StageSample, estimate, project
from synth.run import open_run, pipeline_stages, run_stages
from synth.user_sim import STOP
from tests.fake_openai import FakeOpenAI, fake_openai_in_thread


def quickstart(tmp_path, base_url: str, **llm) -> RunConfig:
    """examples/quickstart.yaml on the scripted endpoint (sandboxes without bwrap, for speed)."""
    data = load_config("examples/quickstart.yaml").model_dump(mode="json", exclude_defaults=True)
    data["runs_dir"] = str(tmp_path)
    data["llm"].update(base_url=base_url, **llm)
    data["rollout"]["sandbox"] = {"type": "local", "isolation": "none"}
    return RunConfig.model_validate(data)


async def test_the_quickstart_estimate_is_within_2x_of_the_real_run_which_reuses_the_pilot(tmp_path):
    async with FakeOpenAI(stop_marker=STOP) as fake:
        cfg = quickstart(tmp_path, fake.base_url, prices={"smollm2": {"input": 0.5, "output": 1.5}})
        est = await estimate(cfg, 2, quiet=True)
        pilot_sent = len(fake.requests)
        # The pilot wrote no record into the run dir: only the answers it got, in the run's cache.
        assert sorted(p.name for p in cfg.run_dir.iterdir()) == ["cache"]
        async with open_run(cfg, quiet=True) as ctx:
            await run_stages(ctx, pipeline_stages(cfg))
        bodies = [json.dumps(b, sort_keys=True) for b in fake.requests]
    real = ctx.meter.total()
    calls, tokens = real.requests + real.cached, real.prompt_tokens + real.completion_tokens + real.cached_tokens
    projected_calls, projected_tokens = est.total("requests"), est.total("tokens")
    print(f"projected {projected_calls:.0f} requests / {projected_tokens:.0f} tokens / cost {est.total('cost'):.6f}; "
          f"real {calls} / {tokens} / {real.cost + real.cached_cost:.6f}; pilot sent {pilot_sent}")
    assert calls / 2 <= projected_calls <= calls * 2
    assert tokens / 2 <= projected_tokens <= tokens * 2
    assert est.total("cost") == pytest.approx(real.cost + real.cached_cost, rel=1.0)
    # The real run got every pilot answer from the cache and sent no request twice.
    assert real.cached >= pilot_sent > 0 and real.requests == calls - real.cached
    assert len(bodies) == len(set(bodies))
    assert [s.stage for s in est.stages] == [s for s in pipeline_stages(cfg) if s != "export"]
    assert all(s.pilot_units <= 2 for s in est.stages)


async def test_a_second_estimate_is_answered_by_the_cache_and_projects_the_same(tmp_path):
    async with FakeOpenAI(stop_marker=STOP) as fake:
        cfg = quickstart(tmp_path, fake.base_url)
        first = await estimate(cfg, 1, quiet=True)
        sent = len(fake.requests)
        second = await estimate(cfg, 1, quiet=True)
    assert len(fake.requests) == sent and second.pilot.requests == 0 and second.pilot.cached == first.pilot.requests
    assert second.total("requests") == first.total("requests")
    assert second.total("tokens") == first.total("tokens")


def usage(requests: int, tokens: int, cost: float = 0.0) -> Usage:
    return Usage(requests=requests, prompt_tokens=tokens, cost=cost)


def test_each_stage_is_scaled_by_how_much_more_of_what_it_reads_the_full_run_has():
    cfg = RunConfig.model_validate({"concurrency": 4, "llm": {"concurrency": 8}})
    samples = [  # tools plans 10 toolsets and runs 2 (3 tools each); agents of those; tasks of the agents
        StageSample("tools", planned=10, ran=2, before=0, wrote=6, fixed=usage(3, 300), units_usage=usage(2, 200),
                    fixed_seconds=1.0, unit_seconds=2.0),
        StageSample("agents", planned=2, ran=2, before=0, wrote=2, fixed=Usage(), units_usage=usage(2, 100),
                    fixed_seconds=0.0, unit_seconds=1.0),
        StageSample("tasks", planned=2, ran=1, before=0, wrote=3, fixed=Usage(), units_usage=usage(1, 50, 0.5),
                    fixed_seconds=0.0, unit_seconds=1.0),
    ]
    tools, agents, tasks = project(cfg, samples)
    assert (tools.units, tools.requests, tools.tokens) == (10, 3 + 10, 300 + 1000)  # planning is not scaled
    assert tools.seconds == pytest.approx(1.0 + 2.0 * 5 / 2)  # 5x the units, 4 at once instead of 2
    assert (agents.units, agents.requests) == (10, 10)  # 30 tools instead of 6: 5x the agents
    assert (tasks.units, tasks.requests, tasks.cost) == (10, 10, 5.0)  # one unit ran: 10x
    serial = project(cfg, samples, serial_endpoint=True)[0]
    assert serial.seconds == pytest.approx(1.0 + 2.0 * 5)  # one request at a time: no speed-up from concurrency


def test_a_stage_whose_pilot_ran_no_unit_is_projected_as_unknown_not_zero_silently():
    cfg = RunConfig()
    samples = [StageSample("tools", planned=0, ran=0, before=0, wrote=0, fixed=usage(1, 10), units_usage=Usage(),
                           fixed_seconds=0.0, unit_seconds=0.0)]
    (tools,) = project(cfg, samples)
    assert tools.requests == 1 and tools.note == "the pilot had no unit for it"


async def test_an_estimate_for_a_run_dir_of_another_config_is_refused(tmp_path):
    cfg = quickstart(tmp_path, "http://127.0.0.1:9/v1")
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "manifest.json").write_text(json.dumps({"config_hash": "something-else"}))
    with pytest.raises(ConfigError, match="different config"):
        await estimate(cfg, 2, quiet=True)


def test_the_cli_prints_the_projection(tmp_path):
    with fake_openai_in_thread(stop_marker=STOP) as fake:
        data = quickstart(tmp_path, fake.base_url).model_dump(mode="json")
        path = tmp_path / "q.yaml"
        path.write_text(yaml.safe_dump(data))
        result = CliRunner().invoke(app, ["run", str(path), "--estimate", "--pilot-units", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "projected for the full config" in out and "total" in out and "pilot: at most 1 units per stage" in out
    assert "no cost: set llm.prices" in out
    assert not (tmp_path / "quickstart" / "manifest.json").exists()
