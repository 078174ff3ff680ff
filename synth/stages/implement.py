"""The implement stage (`synth tools implement`): an executable module per simulated toolset
(tools/implement.py drafts, tests and repairs it). Passing ones run for real in rollouts."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from synth.context import Context
from synth.core.hashing import content_hash
from synth.core.records import Implementation, ToolSpec
from synth.core.units import StageStats, Unit, run_units
from tools.implement import implement_toolset


async def run(ctx: Context, *, max_repairs: int | None = None, sandbox: Any = None) -> StageStats:
    """One unit per simulated toolset; `max_repairs` and `sandbox` default to the config's
    (tools.implement_max_repairs, rollout.sandbox)."""
    groups: dict[str, list[ToolSpec]] = defaultdict(list)
    for spec in ctx.store.read("tools"):
        if spec.kind == "simulated" and spec.toolset_id:
            groups[spec.toolset_id].append(spec)
    units = [Unit(content_hash(["implement", tid, sorted(s.id for s in specs)]), specs)
             for tid, specs in groups.items()]
    repairs = ctx.cfg.tools.implement_max_repairs if max_repairs is None else max_repairs
    cfg = sandbox or ctx.cfg.rollout.sandbox

    async def work(unit: Unit[list[ToolSpec]]) -> list[Implementation]:
        labels = ctx.sandbox_labels(**{"synth.implement": unit.id})
        record = await implement_toolset(ctx.llm, ctx.cfg.seed, unit.id, unit.payload, max_repairs=repairs,
                                         sandbox=cfg, labels=labels)
        if record.passed:  # readable copies beside the records (the record stays the source of truth)
            folder = ctx.store.root / "implementations"
            folder.mkdir(exist_ok=True)
            (folder / f"{record.toolset_id}.py").write_text(record.module)
            (folder / f"{record.toolset_id}_tests.py").write_text(record.tests)
        return [record]

    return await run_units(ctx, "implement", "implementations", units, work, ctx.cfg.concurrency)
