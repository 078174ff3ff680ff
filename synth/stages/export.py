"""The export stage (`synth export`): kept trajectories -> SFT dataset, tasks -> RL dataset, and a
dataset card with the funnel. synth/hub.py pushes the result to the Hugging Face Hub.

Schema-bearing values (tools, arguments, rubric, state, criteria, checks) are stored as JSON
strings: `datasets` unifies nested structs across rows and would inject other rows' keys as nulls.
Splits are by domain: test domains never appear in train, so the test split measures transfer.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter
from statistics import mean
from typing import Any

import yaml
from datasets import Dataset, DatasetDict, Features, List, Value, disable_progress_bars

from judges.calibration import self_agreement
from judges.checks import successful_calls
from judges.metrics import funnel_report
from sandboxes import backend_of
from synth.context import Context
from synth.core.prompts import render
from synth.core.records import Task, Trajectory, Verdict
from synth.core.units import StageStats
from tools.serving import Serving

TOOL_CALL = {"id": Value("string"), "type": Value("string"),
             "function": {"name": Value("string"), "arguments": Value("string")}}
MESSAGE = {"role": Value("string"), "content": Value("string"), "tool_calls": List(TOOL_CALL),
           "tool_call_id": Value("string"), "name": Value("string")}
SFT_FEATURES = Features({
    "messages": List(MESSAGE), "tools": Value("string"), "privileged": Value("string"),
    "trajectory_id": Value("string"), "task_id": Value("string"), "agent_id": Value("string"),
    "domain": Value("string"), "toolset": Value("string"), "difficulty": Value("string"),
    "score": Value("float64"), "criteria": Value("string"), "checks": Value("string"),
    "user_stopped": Value("bool"), "turns": Value("int32"), "num_tool_calls": Value("int32"),
    "seed": Value("int64"), "sample": Value("int32"), "model": Value("string"), "config_hash": Value("string"),
    "sandbox_type": Value("string"), "sandbox_image": Value("string"), "tool_ids": List(Value("string")),
})
RL_FEATURES = Features({
    "task_id": Value("string"), "prompt": List(MESSAGE), "tools": Value("string"), "rubric": Value("string"),
    "user": Value("string"), "initial_state": Value("string"), "environment": Value("string"),
    "domain": Value("string"), "difficulty": Value("string"),
})
HINT_ARG_CHARS = 40  # privileged hints stay compact: long argument values are cut


def model_name(ctx: Context) -> str:
    """The model the run's requests named (for the embedded server: the preset's alias)."""
    return ctx.llm.cfg.model if ctx.llm is not None else ctx.cfg.llm.model


def canonical_message(message: dict[str, Any]) -> dict[str, Any]:
    """Every message with the same five keys, so a row reads back exactly as it was written."""
    return {"role": message["role"], "content": message.get("content") or "",
            "tool_calls": message.get("tool_calls") or None, "tool_call_id": message.get("tool_call_id"),
            "name": message.get("name")}


def privileged_hint(trajectory: Trajectory) -> str:
    """The successful action trace as a compact hint (Privileged Information Distillation): ordered
    tool names with their arguments, e.g. `1. search(city="Oslo") 2. book(flight=7)`."""
    steps = []
    for n, (name, arguments) in enumerate(successful_calls(trajectory), 1):
        try:
            parsed = json.loads(arguments or "{}")
        except json.JSONDecodeError:
            parsed = {}
        args = parsed.items() if isinstance(parsed, dict) else []
        shown = ", ".join(f"{k}={_cut(json.dumps(v, ensure_ascii=False))}" for k, v in args)
        steps.append(f"{n}. {name}({shown})")
    return " ".join(steps)


def _cut(text: str) -> str:
    return text if len(text) <= HINT_ARG_CHARS else text[: HINT_ARG_CHARS - 1] + "…"


def sandbox_provenance(ctx: Context) -> tuple[str, str]:
    """(sandbox type, image) the episodes ran in, as the backend reports it."""
    return backend_of(ctx.cfg.rollout.sandbox).provenance(ctx.cfg.rollout.sandbox)


def sft_rows(ctx: Context, trajectories: list[Trajectory], verdicts: list[Verdict]) -> list[dict[str, Any]]:
    agents = {a.id: a for a in ctx.store.read("agents")}
    tasks = {t.id: t for t in ctx.store.read("tasks")}
    kept = {v.trajectory_id: v for v in verdicts if v.keep}
    config_hash = ctx.store.manifest().get("config_hash", "")
    sandbox_type, image = sandbox_provenance(ctx)
    rows = []
    for t in trajectories:
        if t.id not in kept:
            continue
        agent, verdict, task = agents[t.agent_id], kept[t.id], tasks.get(t.task_id)
        rubric = task.rubric if task else []
        criteria = [{"index": r.index, "passed": r.passed, "reason": r.reason, "turn": r.turn,
                     **({"text": rubric[r.index].text, "kind": rubric[r.index].kind, "weight": rubric[r.index].weight}
                        if 0 <= r.index < len(rubric) else {})} for r in verdict.results]
        rows.append({
            "messages": [canonical_message(m) for m in t.messages], "tools": json.dumps(t.tools),
            "privileged": privileged_hint(t), "trajectory_id": t.id, "task_id": t.task_id, "agent_id": t.agent_id,
            "domain": agent.domain, "toolset": agent.toolset, "difficulty": task.difficulty if task else "",
            "score": verdict.score, "criteria": json.dumps(criteria), "checks": json.dumps(verdict.checks),
            "user_stopped": t.user_stopped, "turns": t.turns or sum(m["role"] == "user" for m in t.messages),
            "num_tool_calls": sum(len(m.get("tool_calls") or []) for m in t.messages), "seed": t.seed,
            "sample": t.sample, "model": model_name(ctx), "config_hash": config_hash,
            "sandbox_type": sandbox_type, "sandbox_image": image, "tool_ids": list(agent.tool_ids),
        })
    return rows


def rl_rows(ctx: Context, tasks: list[Task]) -> list[dict[str, Any]]:
    agents = {a.id: a for a in ctx.store.read("agents")}
    serving = Serving.of(ctx.store)
    tools = serving.tools
    sandbox_type, image = sandbox_provenance(ctx)
    rows = []
    for task in tasks:
        agent = agents[task.agent_id]
        specs = [tools[i] for i in agent.tool_ids if i in tools]
        impl = serving.implementation(agent)
        kinds = ["executable"] if impl else sorted({s.kind for s in specs})
        rows.append({
            "task_id": task.id,
            "prompt": [canonical_message({"role": "system", "content": agent.system_prompt}),
                       canonical_message({"role": "user", "content": task.goal})],
            "tools": json.dumps([s.to_openai() for s in specs]),
            "rubric": json.dumps([c.model_dump() for c in task.rubric]),
            "user": json.dumps({"persona": task.persona, "goal": task.goal, "facts": task.user_facts}),
            "initial_state": json.dumps(task.initial_state),
            "environment": json.dumps({
                "sandbox": ctx.cfg.rollout.sandbox.model_dump(mode="json"), "image": image or None,
                # how tools execute: simulated (LLM tool simulator), executable (generated module), real (MCP server)
                "runtime": kinds[0] if len(kinds) == 1 else "mixed" if kinds else "none",
                "toolsets": [{"kind": s.kind, "spec": s.to_mcp()} for s in specs],
                # what an RL trainer needs to recreate an executable environment and check its end state
                "module": impl.module if impl else None,
                "gold_actions": [a.model_dump() for a in task.gold_actions],
                "assertions": [a.model_dump() for a in task.assertions]}),
            "domain": agent.domain, "difficulty": task.difficulty,
        })
    return rows


def split_domains(domains: list[str], test_fraction: float, seed: int) -> list[str]:
    """The held-out test domains: round(fraction x domains) of a seeded shuffle; at least one stays in train."""
    unique = sorted(set(domains))
    count = min(len(unique) - 1, round(len(unique) * test_fraction))
    if count <= 0:
        return []
    random.Random(seed).shuffle(unique)
    return sorted(unique[:count])


async def run(ctx: Context) -> StageStats:
    """The export stage: rebuilt from the records each time (never skipped); its row counts go in its
    manifest entry."""
    started = time.monotonic()
    rows = export_run(ctx)
    return StageStats("export", records=rows["sft_rows"], seconds=time.monotonic() - started, summary=rows)


def export_run(ctx: Context) -> dict[str, int]:
    """Write export/sft, export/rl (save_to_disk + parquet) and export/README.md. Safe to repeat."""
    disable_progress_bars()  # the pipeline shows its own progress; these would flood batch logs
    trajectories, verdicts, tasks = ctx.store.read("trajectories"), ctx.store.read("verdicts"), ctx.store.read("tasks")
    test_domains = split_domains([a.domain for a in ctx.store.read("agents")], ctx.cfg.export.test_fraction, ctx.cfg.seed)
    out, staging = ctx.store.root / "export", ctx.store.root / "export.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    sft = _splits(sft_rows(ctx, trajectories, verdicts), SFT_FEATURES, test_domains)
    rl = _splits(rl_rows(ctx, tasks), RL_FEATURES, test_domains)
    parquet: dict[str, list[str]] = {}
    for name, data in (("sft", sft), ("rl", rl)):
        # datasets cannot load back an empty split saved with its default zero shards.
        data.save_to_disk(str(staging / name), num_shards={k: 1 for k, ds in data.items() if len(ds) == 0})
        if ctx.cfg.export.parquet:
            # load_dataset("parquet") refuses an empty file, so empty splits get none (and no card config).
            for split in (s for s, ds in data.items() if len(ds)):
                data[split].to_parquet(str(staging / "parquet" / name / f"{split}.parquet"))
                parquet.setdefault(name, []).append(split)
    (staging / "README.md").write_text(dataset_card(ctx, verdicts, sft, rl, test_domains, parquet))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return {"sft_rows": sum(map(len, sft.values())), "rl_rows": sum(map(len, rl.values()))}


def _splits(rows: list[dict[str, Any]], features: Features, test_domains: list[str]) -> DatasetDict:
    splits = {"train": [r for r in rows if r["domain"] not in test_domains]}
    if test_domains:
        splits["test"] = [r for r in rows if r["domain"] in test_domains]
    return DatasetDict({name: _dataset(part, features) for name, part in splits.items()})


def _dataset(rows: list[dict[str, Any]], features: Features) -> Dataset:
    # Column-wise, so an empty export still has its columns (from_list([]) would have none).
    return Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)


def dataset_card(ctx: Context, verdicts: list[Verdict], sft: DatasetDict, rl: DatasetDict, test_domains: list[str],
                 parquet: dict[str, list[str]]) -> str:
    report = funnel_report(ctx.store)
    errors = Counter((e.stage, e.error_type) for e in ctx.store.read("errors"))
    manifest = ctx.store.manifest()
    kept = [row for ds in sft.values() for row in ds.select_columns(["turns", "num_tool_calls"]).to_list()]
    sandbox_type, image = sandbox_provenance(ctx)
    domains = sorted({a.domain for a in ctx.store.read("agents")})
    judge = ctx.cfg.judge
    return render(
        __file__, "dataset_card", front_matter=front_matter(ctx.cfg.export.license, parquet).strip(), name=ctx.cfg.name,
        license=ctx.cfg.export.license, sft_rows=_per_split(sft), rl_rows=_per_split(rl),
        model=model_name(ctx), config_hash=manifest.get("config_hash", ""), seed=ctx.cfg.seed,
        sandbox=f"{sandbox_type}{f' (image `{image}`)' if image else ''}",
        judge=f"mode {judge.mode}, {judge.samples} sample(s), keep threshold {judge.keep_threshold}"
              f"{_agreement(verdicts)}",
        split=(f"test domains: {', '.join(test_domains)}; train domains: "
               f"{', '.join(d for d in domains if d not in test_domains)}" if test_domains else
               f"no test split: {'a single domain' if len(domains) == 1 else f'{len(domains)} domains'} "
               f"({', '.join(domains) or 'none'}) at test_fraction {ctx.cfg.export.test_fraction} "
               "leave none to hold out; everything is in train"),
        funnel="\n".join(f"| {k} | {v} |" for k, v in report["counts"].items()),
        reasons="\n".join(f"| {k} | {v} |" for k, v in report["drop_reasons"].items()) or "| (none) | 0 |",
        errors="\n".join(f"| {s} | {t} | {n} |" for (s, t), n in errors.most_common()) or "| (none) | | 0 |",
        stats=_stats(kept, verdicts), usage=json.dumps(manifest.get("usage", {}), indent=2, sort_keys=True),
    )


def front_matter(license: str, parquet: dict[str, list[str]], layout: str = "parquet/{config}/{split}.parquet") -> str:
    """The card's YAML header; `configs` lists only splits that have data (an empty one cannot be loaded)."""
    meta: dict[str, Any] = {"license": license, "tags": ["synthetic", "tool-use", "agents"]}
    configs = [{"config_name": name, "data_files": [{"split": s, "path": layout.format(config=name, split=s)}
                                                    for s in splits]} for name, splits in parquet.items() if splits]
    if configs:
        meta["configs"] = configs
    return yaml.safe_dump(meta, sort_keys=False)


def _agreement(verdicts: list[Verdict]) -> str:
    """The judge's agreement with itself across its stored samples, when there were several."""
    a = self_agreement(verdicts)
    if a.criteria_unanimous is None or a.keep_identical is None:
        return ""
    return (f"; its samples agree on {a.criteria_unanimous:.0%} of criteria and on the keep decision "
            f"for {a.keep_identical:.0%} of {a.trajectories} trajectories")


def _per_split(data: DatasetDict) -> str:
    return ", ".join(f"{split} {len(ds)}" for split, ds in data.items())


def _stats(kept: list[dict[str, int]], verdicts: list[Verdict]) -> str:
    lines = ["| measure (kept trajectories) | mean | min | max |", "|---|---|---|---|"]
    for key, label in (("turns", "user turns"), ("num_tool_calls", "tool calls per trajectory")):
        values = [row[key] for row in kept]
        lines.append(f"| {label} | {mean(values):.2f} | {min(values)} | {max(values)} |" if values else f"| {label} | - | - | - |")
    bins = Counter(min(int(v.score * 5), 4) for v in verdicts)
    kept_bins = Counter(min(int(v.score * 5), 4) for v in verdicts if v.keep)
    lines += ["", "| judge score | judged | kept |", "|---|---|---|"]
    lines += [f"| {b / 5:.1f}-{(b + 1) / 5:.1f}{']' if b == 4 else ')'} | {bins[b]} | {kept_bins[b]} |" for b in range(5)]
    return "\n".join(lines)
