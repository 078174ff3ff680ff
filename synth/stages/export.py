"""Export: kept trajectories -> SFT dataset, tasks -> RL dataset, every judged trajectory -> export/all,
kept-vs-dropped pairs -> export/dpo, and a dataset card with the funnel. synth/hub.py pushes
the result to the Hugging Face Hub.

Rows are in the form trainers expect (synth/chat_rows.py, format 2): messages with only the keys
they have, tool-call arguments as objects, and schema-bearing values (tools, rubric, state,
environment, criteria) stored with `datasets.Json()`, which keeps each row's own JSON instead of
unifying structs across rows. Splits are by domain: test domains never appear in train.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter
from pathlib import Path
from statistics import mean
from typing import Any

import yaml
from datasets import Dataset, DatasetDict, Features, Json, List, Value, disable_progress_bars

from judges.calibration import self_agreement
from judges.calibration_card import calibration_markdown
from judges.metrics import funnel_report, pass_report, state_check_report
from sandboxes import backend_of
from synth.chat_rows import FORMAT_VERSION, has_parallel_calls, trainer_message, trainer_messages
from synth.config import RunConfig
from synth.context import Context
from synth.core.cost import money
from synth.core.errors import ConfigError
from synth.core.hashing import content_hash
from synth.core.prompts import render
from synth.core.records import Task, Trajectory, Verdict
from synth.core.units import StageStats
from synth.privileged import privileged_hint
from tools.serving import Serving, launch_of

# Fixed-shape records stay structs: Json() values decode through pandas' ujson, which does not read
# floats back bit for bit (0.6667 -> 0.6667000000000001); Json is for what varies between rows.
CRITERION = {"index": Value("int32"), "passed": Value("bool"), "reason": Value("string"), "turn": Value("int32"),
             "text": Value("string"), "kind": Value("string"), "weight": Value("float64")}
PROVENANCE = {
    "trajectory_id": Value("string"), "task_id": Value("string"), "agent_id": Value("string"),
    "domain": Value("string"), "toolset": Value("string"), "difficulty": Value("string"),
    "score": Value("float64"), "criteria": List(CRITERION), "checks": Json(),
    "user_stopped": Value("bool"), "turns": Value("int32"), "num_tool_calls": Value("int32"),
    "seed": Value("int64"), "sample": Value("int32"), "model": Value("string"), "config_hash": Value("string"),
    "sandbox_type": Value("string"), "sandbox_image": Value("string"), "tool_ids": List(Value("string")),
}
SFT_FEATURES = Features({
    "messages": List(Json()), "tools": List(Json()), "parallel_tool_calls": Value("bool"),
    "privileged": Value("string"), "privileged_source": Value("string"), **PROVENANCE,
})
# export/all: every judged trajectory, kept or not, with why it was dropped.
ALL_FEATURES = Features({**SFT_FEATURES, "keep": Value("bool"), "reasons": List(Value("string"))})
DPO_FEATURES = Features({
    "prompt": List(Json()), "chosen": List(Json()), "rejected": List(Json()), "tools": List(Json()),
    "task_id": Value("string"), "chosen_id": Value("string"), "rejected_id": Value("string"),
    "chosen_score": Value("float64"), "rejected_score": Value("float64"), "rejected_reasons": List(Value("string")),
    "domain": Value("string"),
})
RL_FEATURES = Features({
    "task_id": Value("string"), "prompt": List(Json()), "tools": List(Json()),
    "rubric": List({"text": Value("string"), "weight": Value("float64"), "kind": Value("string")}),
    "user": Json(), "initial_state": Json(), "environment": Value("string"), "env_spec": Json(),
    "privileged": Value("string"), "privileged_source": Value("string"),
    # pass_at_k[i] is pass@(i+1) over the task's judged samples (pass_hat_k: pass^(i+1)).
    "samples": Value("int32"), "passed": Value("int32"), "pass_at_k": List(Value("float64")),
    "pass_hat_k": List(Value("float64")),
    "solve_band": Value("string"), "domain": Value("string"), "difficulty": Value("string"),
})


def model_name(ctx: Context, role: str = "agent") -> str:
    """The model a role's requests named (for the embedded server: the preset's alias); SFT rows name
    the agent's, whose turns they are."""
    if ctx.llm is not None:
        return ctx.llm.role(role).cfg.model  # type: ignore[arg-type]
    return ctx.cfg.llm.for_role(role).model  # type: ignore[arg-type]


def models_line(ctx: Context) -> str:
    """The card's line of models by role (manifest.json `models`, else the config's)."""
    models = ctx.store.manifest().get("models") or {}
    names = {"default": "tools, agents and tasks", "agent": "agent", "user": "user simulator",
             "tool_simulator": "tool simulator", "judge": "judge"}
    parts = []
    for role, label in names.items():
        entry = models.get(role) or {"model": model_name(ctx, role) if role != "default" else ctx.cfg.llm.model,
                                     "endpoint": ""}
        where = f" at {entry['endpoint']}" if entry.get("endpoint") else ""
        parts.append(f"{label}: `{entry['model']}`{where}")
    return "; ".join(parts)


def sandbox_provenance(ctx: Context) -> tuple[str, str]:
    """(sandbox type, image) the episodes ran in, as the backend reports it."""
    return backend_of(ctx.cfg.rollout.sandbox).provenance(ctx.cfg.rollout.sandbox)


def isolation_statement(cfg: RunConfig) -> str:
    """What the sandbox promised the code that made this data: shown in the run summary and the card."""
    process = ("a fresh process per episode" if cfg.rollout.tool_process == "per_episode"
               else "one shared process per sandbox (trusted modules only)")
    return f"{backend_of(cfg.rollout.sandbox).promises(cfg.rollout.sandbox)}; executable tools: {process}"


def sft_rows(ctx: Context, trajectories: list[Trajectory], verdicts: list[Verdict]) -> list[dict[str, Any]]:
    """Kept trajectories in the trainer form (export/sft): export/all's rows without keep and reasons."""
    rows = []
    for row in judged_rows(ctx, trajectories, verdicts):
        keep, _ = row.pop("keep"), row.pop("reasons")
        if keep:
            rows.append(row)
    return rows


def judged_rows(ctx: Context, trajectories: list[Trajectory], verdicts: list[Verdict]) -> list[dict[str, Any]]:
    """Every judged trajectory with its score, per-criterion results, keep decision and drop reasons
    (export/all); a trajectory the judge never scored has no verdict and no row."""
    agents = {a.id: a for a in ctx.store.read("agents")}
    tasks = {t.id: t for t in ctx.store.read("tasks")}
    judged = {v.trajectory_id: v for v in verdicts}
    config_hash = ctx.store.manifest().get("config_hash", "")
    sandbox_type, image = sandbox_provenance(ctx)
    hints = privileged_hints(ctx, trajectories, verdicts, tasks)
    split = ctx.cfg.export.split_parallel_calls
    rows = []
    for t in trajectories:
        if t.id not in judged or t.agent_id not in agents:
            continue
        agent, verdict, task = agents[t.agent_id], judged[t.id], tasks.get(t.task_id)
        rubric = task.rubric if task else []
        criteria = [{"index": r.index, "passed": r.passed, "reason": r.reason, "turn": r.turn,
                     **({"text": rubric[r.index].text, "kind": rubric[r.index].kind, "weight": rubric[r.index].weight}
                        if 0 <= r.index < len(rubric) else {"text": None, "kind": None, "weight": None})}
                    for r in verdict.results]
        hint, source = hints.get(t.id, ("", "none"))
        rows.append({
            "messages": trainer_messages(t.messages, split_parallel=split), "tools": list(t.tools),
            # Llama-3.1's template refuses two calls in one message: filter on this or set split_parallel_calls.
            "parallel_tool_calls": has_parallel_calls(t.messages) and not split,
            "privileged": hint, "privileged_source": source,
            "trajectory_id": t.id, "task_id": t.task_id, "agent_id": t.agent_id,
            "domain": agent.domain, "toolset": agent.toolset, "difficulty": task.difficulty if task else "",
            "score": verdict.score, "criteria": criteria, "checks": dict(verdict.checks),
            "user_stopped": t.user_stopped, "turns": t.turns or sum(m["role"] == "user" for m in t.messages),
            "num_tool_calls": sum(len(m.get("tool_calls") or []) for m in t.messages), "seed": t.seed,
            "sample": t.sample, "model": model_name(ctx), "config_hash": config_hash,
            "sandbox_type": sandbox_type, "sandbox_image": image, "tool_ids": list(agent.tool_ids),
            "keep": verdict.keep, "reasons": list(verdict.reasons),
        })
    return rows


def privileged_hints(ctx: Context, trajectories: list[Trajectory], verdicts: list[Verdict],
                     tasks: dict[str, Task]) -> dict[str, tuple[str, str]]:
    """trajectory id -> (hint, source): from what the student will not have (synth/privileged.py)."""
    cfg = ctx.cfg.export.privileged
    by_task: dict[str, list[Trajectory]] = {}
    for t in trajectories:
        by_task.setdefault(t.task_id, []).append(t)
    scores = {v.trajectory_id: (v.keep, v.score) for v in verdicts}
    out = {}
    for t in trajectories:
        if t.task_id in tasks:
            out[t.id] = privileged_hint(tasks[t.task_id], by_task[t.task_id], scores, cfg, exclude=t.id)
    return out


def dpo_pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task, each dropped trajectory paired with the best kept one (highest score; first on ties).
    Prompt: the messages before the first assistant turn (system + the user's opening); chosen and
    rejected: the rest of each conversation (the openings may differ: the user simulator is seeded per sample)."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_task.setdefault(row["task_id"], []).append(row)
    pairs = []
    for task_id, group in by_task.items():
        kept = [r for r in group if r["keep"]]
        if not kept:
            continue
        best = max(kept, key=lambda r: r["score"])
        prompt, chosen = _prompt_split(best["messages"])
        for rejected in (r for r in group if not r["keep"]):
            pairs.append({"prompt": prompt, "chosen": chosen, "rejected": _prompt_split(rejected["messages"])[1],
                          "tools": best["tools"], "task_id": task_id, "chosen_id": best["trajectory_id"],
                          "rejected_id": rejected["trajectory_id"], "chosen_score": best["score"],
                          "rejected_score": rejected["score"], "rejected_reasons": rejected["reasons"],
                          "domain": best["domain"]})
    return pairs


def _prompt_split(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
    return messages[:first], messages[first:]


def env_name(agent_toolset: str, tool_names: list[str]) -> str:
    """The RL row's `environment`: one per distinct toolset (its tools), the key TRL routes on."""
    slug = "".join(ch if ch.isalnum() else "_" for ch in agent_toolset.lower()).strip("_") or "toolset"
    return f"{slug}_{content_hash(sorted(tool_names), 6)}"


def rl_rows(ctx: Context, tasks: list[Task]) -> list[dict[str, Any]]:
    agents = {a.id: a for a in ctx.store.read("agents")}
    serving = Serving.of(ctx.store)
    tools = serving.tools
    sandbox_type, image = sandbox_provenance(ctx)
    trajectories, verdicts = ctx.store.read("trajectories"), ctx.store.read("verdicts")
    passes = pass_report(trajectories, verdicts)["tasks"]
    scores = {v.trajectory_id: (v.keep, v.score) for v in verdicts}
    by_task: dict[str, list[Trajectory]] = {}
    for t in trajectories:
        by_task.setdefault(t.task_id, []).append(t)
    rows = []
    for task in tasks:
        agent = agents[task.agent_id]
        specs = [tools[i] for i in agent.tool_ids if i in tools]
        parts = serving.real(agent)
        impl = serving.rest_implementation(agent) if parts else serving.implementation(agent)
        outcome = passes.get(task.id, {})
        n, c = outcome.get("n", 0), outcome.get("c", 0)
        hint, source = privileged_hint(task, by_task.get(task.id, []), scores, ctx.cfg.export.privileged)
        rows.append({
            "task_id": task.id,
            # The user's first message comes from the environment: reset() returns the user simulator's
            # opening, which TRL appends to this empty user turn. `user.goal` has the goal for other uses.
            "prompt": [trainer_message({"role": "system", "content": agent.system_prompt}),
                       trainer_message({"role": "user", "content": ""})],
            "tools": [s.to_openai() for s in specs],
            "rubric": [c.model_dump() for c in task.rubric],
            "user": {"persona": task.persona, "goal": task.goal, "facts": task.user_facts},
            "initial_state": task.initial_state,
            "environment": env_name(agent.toolset, [s.name for s in specs]),
            "env_spec": {
                "sandbox": ctx.cfg.rollout.sandbox.model_dump(mode="json"), "image": image or None,
                # how tools execute: simulated (LLM tool simulator), executable (generated module), real (MCP server)
                # as the rollout serves it: real / executable / simulated, or mixed (several of them)
                "runtime": serving.runtime_of(agent) if specs else "none",
                "toolsets": [{"kind": s.kind, "spec": s.to_mcp()} for s in specs],
                # what an RL trainer needs to recreate an executable environment and check its end state
                "module": impl.module if impl else None,
                # real MCP servers: how each starts and which tools it serves (its seed is initial_state)
                "servers": [{"key": p.key, "launch": p.launch.model_dump(mode="json", exclude_defaults=True),
                             "tools": [s.name for s in p.specs]} for p in parts],
                "gold_actions": [a.model_dump() for a in task.gold_actions],
                "assertions": [a.model_dump() for a in task.assertions],
                "gold_final_state": task.gold_final_state or None, "free_paths": task.free_paths,
                "distractor_tools": sorted(tools[i].name for i in agent.distractor_tool_ids if i in tools),
                "rollout": {"max_turns": ctx.cfg.rollout.max_turns, "max_tool_steps": ctx.cfg.rollout.max_tool_steps,
                            "tool_timeout_s": ctx.cfg.rollout.tool_timeout_s}},
            "privileged": hint, "privileged_source": source,
            "samples": n, "passed": c, "pass_at_k": list(outcome.get("pass@k", {}).values()),
            "pass_hat_k": list(outcome.get("pass^k", {}).values()),
            # GRPO learns only where the group reward varies: keep "mixed", drop "unsolved"/"solved".
            "solve_band": "unjudged" if n == 0 else "unsolved" if c == 0 else "solved" if c == n else "mixed",
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
    """Write export/sft, export/rl, export/all, export/dpo (save_to_disk + parquet) and export/README.md.
    Safe to repeat."""
    disable_progress_bars()  # the pipeline shows its own progress; these would flood batch logs
    trajectories, verdicts, tasks = ctx.store.read("trajectories"), ctx.store.read("verdicts"), ctx.store.read("tasks")
    test_domains = split_domains([a.domain for a in ctx.store.read("agents")], ctx.cfg.export.test_fraction, ctx.cfg.seed)
    out, staging = ctx.store.root / "export", ctx.store.root / "export.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    judged = judged_rows(ctx, trajectories, verdicts)
    kept = [{k: v for k, v in row.items() if k not in ("keep", "reasons")} for row in judged if row["keep"]]
    datasets = {
        "sft": _splits(kept, SFT_FEATURES, test_domains),
        "rl": _splits(rl_rows(ctx, tasks), RL_FEATURES, test_domains),
        "all": _splits(judged, ALL_FEATURES, test_domains),
        "dpo": _splits(dpo_pairs(judged), DPO_FEATURES, test_domains),
    }
    parquet: dict[str, list[str]] = {}
    for name, data in datasets.items():
        # datasets cannot load back an empty split saved with its default zero shards.
        data.save_to_disk(str(staging / name), num_shards={k: 1 for k, ds in data.items() if len(ds) == 0})
        if ctx.cfg.export.parquet:
            # load_dataset("parquet") refuses an empty file, so empty splits get none (and no card config).
            for split in (s for s, ds in data.items() if len(ds)):
                data[split].to_parquet(str(staging / "parquet" / name / f"{split}.parquet"))
                parquet.setdefault(name, []).append(split)
    (staging / "README.md").write_text(dataset_card(ctx, verdicts, datasets, test_domains, parquet))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return {f"{name}_rows": sum(map(len, data.values())) for name, data in datasets.items()}


def load_export(export_dir: str | Path, name: str = "sft") -> DatasetDict:
    """export/<name> in the current row format, whichever format wrote it: an export whose card has no
    `synth_format` (format 1: JSON strings, null-padded messages) is upgraded row by row."""
    from datasets import load_from_disk

    from synth.chat_rows import upgrade_sft_row

    export_dir = Path(export_dir)
    if not (export_dir / name).is_dir():
        raise ConfigError(f"{export_dir / name} does not exist: run `synth export` first (or check the path)")
    data = load_from_disk(str(export_dir / name))
    card = (export_dir / "README.md").read_text() if (export_dir / "README.md").is_file() else ""
    version = (yaml.safe_load(card.split("---\n")[1]) or {}).get("synth_format", 1) if card.startswith("---\n") else 1
    if version == FORMAT_VERSION:
        return data
    if version != 1 or name not in ("sft", "rl"):
        raise ConfigError(f"{export_dir} was written in row format {version} ({name}); this synth reads formats 1 and "
                          f"{FORMAT_VERSION}: upgrade synth or export the run again")
    upgrade, features = (upgrade_sft_row, SFT_FEATURES) if name == "sft" else (_upgrade_rl, RL_FEATURES)
    return DatasetDict({split: _dataset([_fill(upgrade(r), features) for r in ds.to_list()], features)
                        for split, ds in data.items()})


def _upgrade_rl(row: dict[str, Any]) -> dict[str, Any]:
    from synth.chat_rows import upgrade_rl_row

    row = upgrade_rl_row(row)
    spec = row.pop("environment") or {}
    row["env_spec"] = spec
    row["environment"] = env_name(row.get("domain") or "toolset", [t["function"]["name"] for t in row["tools"]])
    return row


def _fill(row: dict[str, Any], features: Features) -> dict[str, Any]:
    """Columns a format-1 row did not have get their empty value."""
    empty = {"privileged_source": "none", "samples": 0, "passed": 0, "pass_at_k": [], "pass_hat_k": [],
             "solve_band": "unjudged"}
    return {name: row[name] if name in row else empty.get(name) for name in features}


def _splits(rows: list[dict[str, Any]], features: Features, test_domains: list[str]) -> DatasetDict:
    splits = {"train": [r for r in rows if r["domain"] not in test_domains]}
    if test_domains:
        splits["test"] = [r for r in rows if r["domain"] in test_domains]
    return DatasetDict({name: _dataset(part, features) for name, part in splits.items()})


def _dataset(rows: list[dict[str, Any]], features: Features) -> Dataset:
    # Column-wise, so an empty export still has its columns (from_list([]) would have none).
    return Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)


def dataset_card(ctx: Context, verdicts: list[Verdict], datasets: dict[str, DatasetDict], test_domains: list[str],
                 parquet: dict[str, list[str]]) -> str:
    sft, rl = datasets["sft"], datasets["rl"]
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
        all_rows=_per_split(datasets["all"]), dpo_rows=_per_split(datasets["dpo"]), format_version=FORMAT_VERSION,
        privileged=f"format {ctx.cfg.export.privileged.format}, parts {', '.join(ctx.cfg.export.privileged.include)}",
        model=models_line(ctx), config_hash=manifest.get("config_hash", ""), seed=ctx.cfg.seed,
        sandbox=f"{isolation_statement(ctx.cfg)}{f' (image `{image}`)' if image else ''}",
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
        cost=_cost(manifest), calibration=calibration_markdown(ctx.store.root),
        train_with_it=train_with_it(), tool_runtimes=tool_runtime_section(ctx, manifest),
    )


def tool_runtime_section(ctx: Context, manifest: dict[str, Any]) -> str:
    """Which runtime answered the tool calls, which real servers stayed simulated and why, and the
    simulator's measured fidelity (`synth tools fidelity`)."""
    counts = (manifest.get("tool_runtimes") or {}).get("calls") or {}
    answered = ", ".join(f"{k}: {v}" for k, v in counts.items()) if counts else "none recorded"
    lines = [f"Tool calls per runtime: {answered} (real: the MCP server itself in the sandbox; executable: a "
             "generated implementation; simulated: the LLM tool simulator)."]
    offline = sorted({t.toolset for t in ctx.store.read("tools")
                      if (launch := launch_of(t)) is not None and not launch.runnable})
    if offline:
        lines.append(f"Real servers that need the network stay simulated (sandboxes have none): {', '.join(offline)}.")
    fidelity = manifest.get("tool_fidelity") or {}
    if not fidelity.get("calls"):
        lines.append("Simulator fidelity: not measured (`synth tools fidelity` on a run with real servers).")
        return "\n".join(lines)
    o = fidelity["overall"]
    value = "-" if o.get("value_agreement") is None else f"{o['value_agreement']:.0%} of {o['values_compared']}"
    lines.append(f"Simulator fidelity (`synth tools fidelity`: {fidelity['calls']} calls to "
                 f"{', '.join(fidelity.get('servers', []))} replayed from the same seed through the real server and "
                 f"the simulator, model `{fidelity.get('simulator_model') or '?'}`): errors agree "
                 f"{o['error_agreement']:.0%}, structure agrees {o['structural_agreement']:.0%}, values agree {value}. "
                 "Read the simulated toolsets' data with that in mind.\n")
    lines.append("| tool | calls | errors agree | structure agrees | values agree |\n|---|---|---|---|---|")
    for tool, f in sorted(fidelity.get("tools", {}).items()):
        v = "-" if f.get("value_agreement") is None else f"{f['value_agreement']:.0%}"
        lines.append(f"| {tool} | {f['calls']} | {f['error_agreement']:.0%} | {f['structural_agreement']:.0%} | {v} |")
    return "\n".join(lines)


def train_with_it() -> str:
    """The card's "Train with it" section: the snippets tests/test_train_smoke.py and tests/test_envs.py run."""
    return (Path(__file__).parent / "prompts" / "train_with_it.md").read_text().strip()


def front_matter(license: str, parquet: dict[str, list[str]], layout: str = "parquet/{config}/{split}.parquet") -> str:
    """The card's YAML header; `configs` lists only splits that have data (an empty one cannot be loaded)."""
    meta: dict[str, Any] = {"license": license, "tags": ["synthetic", "tool-use", "agents"],
                            "synth_format": FORMAT_VERSION}
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


def _cost(manifest: dict[str, Any]) -> str:
    """The card's cost table: per stage, in total and per kept trajectory (manifest `cost`, from llm.prices)."""
    cost = manifest.get("cost")
    if not cost:
        return "No price table (`llm.prices`) was configured: usage is in requests and tokens only."
    usage = manifest.get("usage", {})
    lines = ["| stage | requests | tokens | cost |", "|---|---|---|---|"]
    for stage, amount in cost["by_stage"].items():
        row = usage.get(stage, {})
        lines.append(f"| {stage} | {row.get('requests', 0)} | {row.get('prompt_tokens', 0) + row.get('completion_tokens', 0)} "
                     f"| {money(amount)} |")
    per_kept = cost.get("per_kept_trajectory")
    lines += ["", f"Total {money(cost['total'])}"
              + (f", {money(per_kept)} per kept trajectory ({cost['kept_trajectories']} kept)." if per_kept is not None
                 else "; no trajectory was kept."),
              "Prices per million input / output tokens: "
              + ", ".join(f"`{m}` {p['input']} / {p['output']}" for m, p in cost.get("prices", {}).items()) + "."]
    return "\n".join(lines)


def _per_split(data: DatasetDict) -> str:
    return ", ".join(f"{split} {len(ds)}" for split, ds in data.items())


def _stats(kept: list[dict[str, int]], verdicts: list[Verdict]) -> str:
    lines = ["| measure (kept trajectories) | mean | min | max |", "|---|---|---|---|"]
    for key, label in (("turns", "user turns"), ("num_tool_calls", "tool calls per trajectory")):
        values = [row[key] for row in kept]
        lines.append(f"| {label} | {mean(values):.2f} | {min(values)} | {max(values)} |" if values else f"| {label} | - | - | - |")
    on_state = state_check_report(verdicts)
    lines += ["", f"Kept on a state check (the task's final-state assertions or the gold replay's final state "
              f"held, beside the judge): {on_state['kept_on_state_check']} of {on_state['kept']}."]
    bins = Counter(min(int(v.score * 5), 4) for v in verdicts)
    kept_bins = Counter(min(int(v.score * 5), 4) for v in verdicts if v.keep)
    lines += ["", "| judge score | judged | kept |", "|---|---|---|"]
    lines += [f"| {b / 5:.1f}-{(b + 1) / 5:.1f}{']' if b == 4 else ')'} | {bins[b]} | {kept_bins[b]} |" for b in range(5)]
    return "\n".join(lines)
