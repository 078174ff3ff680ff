"""A run dir written by earlier code (tests/fixtures/runs/resume/, see its README) resumes under the
code of today: the same config hash, every stage skipped with no LLM request (the endpoint is a
closed port), no record added or changed, every id re-derived from its record, the same manifest
sections and the same export rows."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import yaml
from datasets import load_from_disk

from synth.chat_rows import upgrade_rl_row, upgrade_sft_row
from synth.config import RunConfig
from synth.run import open_run, pipeline_stages, run_stages

RUNS = Path(__file__).parent / "fixtures" / "runs"
FIXTURE = RUNS / "resume"
NEW_ENV_SPEC_KEYS = ("distractor_tools", "rollout", "servers", "gold_final_state", "free_paths")  # added since the fixture
MANIFEST_SECTIONS = ("config_hash", "counts", "funnel", "user_flags", "pass_k", "judge_agreement", "tools_embeddings")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fixture_config(runs_dir: Path) -> RunConfig:
    data = yaml.safe_load((FIXTURE / "config.yaml").read_text())
    data["runs_dir"] = str(runs_dir)
    data["llm"].update(base_url=f"http://127.0.0.1:{closed_port()}/v1", max_retries=0)
    return RunConfig.model_validate(data)


async def test_an_old_run_dir_resumes_with_no_request_and_nothing_changed(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / FIXTURE.name)
    cfg = fixture_config(tmp_path)
    old = json.loads((FIXTURE / "manifest.json").read_text())
    before = {p.name: p.read_bytes() for p in cfg.run_dir.glob("*.jsonl")}
    assert cfg.content_hash() == old["config_hash"]
    stages = pipeline_stages(cfg)
    assert stages == ["tools", "implement", "agents", "tasks", "rollout", "judge", "export"]

    async with open_run(cfg, quiet=True) as ctx:
        await run_stages(ctx, stages)
        records = {kind: ctx.store.read(kind) for kind in (p.removesuffix(".jsonl") for p in before)}
    usage = ctx.meter.total()
    assert usage.requests == 0 and usage.failures == 0 and usage.cached > 0  # planning calls: from the cache
    for name in stages[:-1]:  # the export is rebuilt each time
        stats = ctx.stats[name]
        assert stats.units > 0 and stats.skipped == stats.units and stats.done == stats.failed == 0, stats
    assert {p.name: p.read_bytes() for p in cfg.run_dir.glob("*.jsonl")} == before

    for kind, rows in records.items():
        assert rows, kind
        for record in rows:  # the id is the content hash the code of today computes
            again = type(record).model_validate({**record.model_dump(by_alias=True), "id": ""})
            assert again.id == record.id, (kind, record.id)

    new = json.loads((cfg.run_dir / "manifest.json").read_text())
    assert {k: new[k] for k in MANIFEST_SECTIONS} == {k: old[k] for k in MANIFEST_SECTIONS}
    assert {k: v["status"] for k, v in new["stages"].items()} == {k: v["status"] for k, v in old["stages"].items()}
    rows = {name: {split: ds.to_list() for split, ds in load_from_disk(str(cfg.run_dir / "export" / name)).items()}
            for name in ("sft", "rl")}
    # The fixture's rows are in row format 1; read in today's form, every value both formats hold
    # means the same and is equal (format 2 changed the privileged hint and the RL prompt, and added columns).
    old_rows = json.loads((RUNS / f"{FIXTURE.name}_export.json").read_text())
    upgrade = {"sft": upgrade_sft_row, "rl": upgrade_rl_row}
    for name, splits in old_rows.items():
        assert splits.keys() == rows[name].keys()
        for split, written in splits.items():
            assert len(written) == len(rows[name][split])
            for before, now in zip(written, rows[name][split], strict=True):
                before = upgrade[name](before)
                if name == "rl":
                    before["env_spec"] = before.pop("environment")
                    assert now["env_spec"] == {**before["env_spec"], **{k: now["env_spec"][k] for k in NEW_ENV_SPEC_KEYS}}
                    assert now["prompt"] == before["prompt"][:1] + [{"role": "user", "content": ""}]
                same = set(before) - {"privileged", "prompt", "env_spec", "environment", "parallel_tool_calls"}
                assert {k: now[k] for k in same} == {k: before[k] for k in same}, (name, split)
    assert rows["sft"]["train"] and rows["rl"]["test"]
