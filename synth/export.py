"""Export: kept trajectories -> SFT dataset, tasks -> RL dataset, and a dataset card with the funnel.

Schema-bearing values (tools, arguments, rubric, state) are stored as JSON strings: `datasets`
unifies nested structs across rows and would inject other rows' keys as nulls.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from typing import Any

from datasets import Dataset, DatasetDict, Features, List, Value, disable_progress_bars

from synth.pipeline import Context
from synth.prompts import render
from synth.records import Task, Trajectory, Verdict

TOOL_CALL = {"id": Value("string"), "type": Value("string"),
             "function": {"name": Value("string"), "arguments": Value("string")}}
MESSAGE = {"role": Value("string"), "content": Value("string"), "tool_calls": List(TOOL_CALL),
           "tool_call_id": Value("string"), "name": Value("string")}
SFT_FEATURES = Features({
    "messages": List(MESSAGE), "tools": Value("string"), "trajectory_id": Value("string"),
    "task_id": Value("string"), "agent_id": Value("string"), "domain": Value("string"), "toolset": Value("string"),
    "score": Value("float64"), "user_stopped": Value("bool"), "seed": Value("int64"), "sample": Value("int32"),
    "model": Value("string"), "config_hash": Value("string"),
})
RL_FEATURES = Features({
    "task_id": Value("string"), "prompt": List(MESSAGE), "tools": Value("string"), "rubric": Value("string"),
    "user": Value("string"), "initial_state": Value("string"), "environment": Value("string"),
    "domain": Value("string"), "difficulty": Value("string"),
})


def canonical_message(message: dict[str, Any]) -> dict[str, Any]:
    """Every message with the same five keys, so a row reads back exactly as it was written."""
    return {"role": message["role"], "content": message.get("content") or "",
            "tool_calls": message.get("tool_calls") or None, "tool_call_id": message.get("tool_call_id"),
            "name": message.get("name")}


def sft_rows(ctx: Context, trajectories: list[Trajectory], verdicts: list[Verdict]) -> list[dict[str, Any]]:
    agents = {a.id: a for a in ctx.store.read("agents")}
    kept = {v.trajectory_id: v for v in verdicts if v.keep}
    manifest = ctx.store.manifest()
    rows = []
    for t in trajectories:
        if t.id not in kept:
            continue
        agent = agents[t.agent_id]
        rows.append({
            "messages": [canonical_message(m) for m in t.messages], "tools": json.dumps(t.tools),
            "trajectory_id": t.id, "task_id": t.task_id, "agent_id": t.agent_id, "domain": agent.domain,
            "toolset": agent.toolset, "score": kept[t.id].score, "user_stopped": t.user_stopped, "seed": t.seed,
            "sample": t.sample, "model": ctx.cfg.llm.model, "config_hash": manifest.get("config_hash", ""),
        })
    return rows


def rl_rows(ctx: Context, tasks: list[Task]) -> list[dict[str, Any]]:
    agents = {a.id: a for a in ctx.store.read("agents")}
    tools = {t.id: t for t in ctx.store.read("tools")}
    rows = []
    for task in tasks:
        agent = agents[task.agent_id]
        specs = [tools[i] for i in agent.tool_ids if i in tools]
        rows.append({
            "task_id": task.id,
            "prompt": [canonical_message({"role": "system", "content": agent.system_prompt}),
                       canonical_message({"role": "user", "content": task.goal})],
            "tools": json.dumps([s.to_openai() for s in specs]),
            "rubric": json.dumps([c.model_dump() for c in task.rubric]),
            "user": json.dumps({"persona": task.persona, "goal": task.goal, "facts": task.user_facts}),
            "initial_state": json.dumps(task.initial_state),
            "environment": json.dumps({"sandbox": ctx.cfg.rollout.sandbox.model_dump(mode="json"),
                                       "toolsets": [{"kind": s.kind, "spec": s.to_mcp()} for s in specs]}),
            "domain": agent.domain, "difficulty": task.difficulty,
        })
    return rows


def export_run(ctx: Context) -> dict[str, int]:
    """Write export/sft, export/rl (save_to_disk + parquet) and export/README.md. Safe to repeat."""
    disable_progress_bars()  # the pipeline shows its own progress; these would flood batch logs
    trajectories, verdicts, tasks = ctx.store.read("trajectories"), ctx.store.read("verdicts"), ctx.store.read("tasks")
    out = ctx.store.root / "export"
    staging = ctx.store.root / "export.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    sft = DatasetDict({"train": _dataset(sft_rows(ctx, trajectories, verdicts), SFT_FEATURES)})
    rl = DatasetDict({"train": _dataset(rl_rows(ctx, tasks), RL_FEATURES)})
    for name, data in (("sft", sft), ("rl", rl)):
        # datasets cannot load back an empty split saved with its default zero shards.
        data.save_to_disk(str(staging / name), num_shards={k: 1 for k, ds in data.items() if len(ds) == 0})
        if ctx.cfg.export.parquet:
            for split, ds in data.items():
                ds.to_parquet(str(staging / "parquet" / name / f"{split}.parquet"))
    (staging / "README.md").write_text(dataset_card(ctx, verdicts, len(sft["train"]), len(rl["train"])))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return {"sft_rows": len(sft["train"]), "rl_rows": len(rl["train"])}


def _dataset(rows: list[dict[str, Any]], features: Features) -> Dataset:
    # Column-wise, so an empty export still has its columns (from_list([]) would have none).
    return Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)


def funnel(ctx: Context) -> dict[str, int]:
    counts = {kind: len(ctx.store.read(kind)) for kind in ("tools", "agents", "tasks", "trajectories", "verdicts")}
    counts["kept"] = sum(v.keep for v in ctx.store.read("verdicts"))
    return counts


def dataset_card(ctx: Context, verdicts: list[Verdict], sft_rows: int, rl_rows: int) -> str:
    counts = funnel(ctx)
    reasons = Counter(reason.split(":")[0] if reason.startswith(("check", "essential")) else reason.split(" ")[0]
                      for v in verdicts for reason in v.reasons)
    errors = Counter((e.stage, e.error_type) for e in ctx.store.read("errors"))
    manifest = ctx.store.manifest()
    return render(
        __file__, "dataset_card", name=ctx.cfg.name, license=ctx.cfg.export.license, sft_rows=sft_rows,
        rl_rows=rl_rows, model=ctx.cfg.llm.model, config_hash=manifest.get("config_hash", ""),
        funnel="\n".join(f"| {k} | {v} |" for k, v in counts.items()),
        reasons="\n".join(f"| {k} | {v} |" for k, v in reasons.most_common()) or "| (none) | 0 |",
        errors="\n".join(f"| {s} | {t} | {n} |" for (s, t), n in errors.most_common()) or "| (none) | | 0 |",
        usage=json.dumps(manifest.get("usage", {}), indent=2, sort_keys=True),
    )

