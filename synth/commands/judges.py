"""`synth judges ...`: judge tooling beyond the judge stage. Parses arguments and prints; no logic."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from synth.commands.common import console, exit_on_errors, run_config

# judges/planted.py's PLANTERS, named here so `synth --help` does not import the judges (a test keeps them equal).
PLANTED_KINDS = ("drop_write_call", "change_key_argument", "fabricate_tool_result", "leak_hidden_fact",
                 "user_breaks_role", "cut_last_turns")

app = typer.Typer(help="Judge tooling: calibrate the LLM judge against verifiable checks.", no_args_is_help=True)


@app.callback()
def judges() -> None:
    """Judge tooling: calibrate the LLM judge against verifiable checks."""  # keeps `calibrate` a subcommand


@app.command()
def calibrate(
    config: Annotated[Optional[Path], typer.Argument(help="Run config (YAML) of the run to calibrate on.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Run name; overrides the config.")] = None,
    runs_dir: Annotated[Optional[str], typer.Option("--runs-dir", help="Parent directory of run directories.")] = None,
    k: Annotated[int, typer.Option("--k", min=2, max=20, help="Judge calls per trajectory (different seeds).")] = 3,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Calibrate on the first N trajectories only.")] = None,
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="Always make k new judge calls; by default a verdict's stored judge samples "
        "(judge.samples >= k, same mode) are used instead.")] = False,
    planted: Annotated[bool, typer.Option(
        "--planted", help="Measure recall of planted defects instead: copies of the trajectories that pass, each "
        "with one known defect, through the whole filter (checks + judge); per defect kind how many are dropped "
        "and why, and how many untouched copies are still kept.")] = False,
    source: Annotated[str, typer.Option(
        "--from", help="--planted: plant in the trajectories the run kept (`kept`), or in those whose checks all "
        "pass today (`checks`), when too few were kept.")] = "kept",
    defects: Annotated[Optional[str], typer.Option(
        "--defects", help="--planted: comma-separated defect kinds (default all: " + ", ".join(PLANTED_KINDS) + ").")] = None,
    no_judge: Annotated[bool, typer.Option("--no-judge", help="--planted: checks only, no judge call.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table, only calibration.json.")] = False,
) -> None:
    """Agreement of the judge's keep decision with the verifiable checks (accuracy, Cohen's kappa,
    precision and recall of keep; overall, on tasks with state checks, per criterion kind) and its
    stability over k seeds; or, with --planted, the filter's recall of planted defects. Writes
    calibration.json in the run dir (each mode its own section) and, when the run was exported,
    rebuilds the dataset card with it. Trajectories already judged with at least k samples reuse
    those samples (no new LLM calls)."""
    from judges.calibration import calibrate as run_calibration
    from judges.planted_recall import planted_recall
    from synth.run import open_run
    from synth.stages.export import export_run

    if source not in ("kept", "checks"):
        raise typer.BadParameter(f"--from must be kept or checks, got {source!r}")
    kinds = [d.strip() for d in defects.split(",") if d.strip()] if defects else None
    unknown = sorted(set(kinds or []) - set(PLANTED_KINDS))
    if unknown:
        raise typer.BadParameter(f"unknown defect kind(s) {', '.join(unknown)}; known: {', '.join(PLANTED_KINDS)}")

    async def main():
        async with open_run(cfg, quiet=quiet, console=console) as ctx:
            judge_llm = ctx.llm.role("judge")
            if planted:
                report = await planted_recall(None if no_judge else judge_llm, ctx.store, ctx.cfg.judge,
                                              run_seed=ctx.cfg.seed, concurrency=ctx.cfg.concurrency,
                                              source=source, kinds=kinds, limit=limit)  # type: ignore[arg-type]
            else:
                report = await run_calibration(judge_llm, ctx.store, ctx.cfg.judge, run_seed=ctx.cfg.seed,
                                               concurrency=ctx.cfg.concurrency, k=k, limit=limit, reuse=not fresh)
            if (ctx.store.root / "export").is_dir():
                export_run(ctx)  # the card shows calibration.json
            return report, ctx.store.root / "calibration.json"

    cfg = run_config(config, name, runs_dir)
    with exit_on_errors():
        report, path = asyncio.run(main())
    if not quiet:
        console.print(planted_table(report) if planted else report_table(report))
    console.print(f"saved {path}")


def planted_table(report) -> Table:
    table = Table(title=f"planted defects: copies of {report.trajectories} trajectories ({report.source}), "
                        f"{'checks + judge' if report.judged else 'checks only'}")
    for column in ("defect", "planted", "dropped", "by check: built / dropped", "checks", "judge only", "n/a",
                   "top reasons"):
        table.add_column(column, justify="left" if column in ("defect", "top reasons") else "right")
    for kind, k in report.kinds.items():
        reasons = ", ".join(f"{r} ({n})" for r, n in sorted(k.reasons.items(), key=lambda x: -x[1])[:2])
        table.add_row(kind, str(k.planted), str(k.dropped), f"{k.by_check} / {k.by_check_dropped}",
                      str(k.caught_by_checks), str(k.caught_by_judge_only), str(k.not_applicable), reasons)
    u = report.untouched
    reasons = ", ".join(f"{r} ({n})" for r, n in sorted(u.reasons.items(), key=lambda x: -x[1])[:2])
    table.add_row("(untouched)", str(u.judged), str(u.judged - u.kept), "-", "-", "-", "-", reasons)
    table.caption = "by check: copies a check is built to catch / how many of them were dropped (must be equal)"
    return table


def report_table(report) -> Table:
    a, s = report.agreement, report.stability
    table = Table(title=f"judge calibration: {report.judged} trajectories x {report.k} calls ({report.mode} mode)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for label, value in (
        ("decisions compared (judge vs checks)", str(a.n)),
        ("confusion tp / fp / fn / tn (keep = positive)", f"{a.tp} / {a.fp} / {a.fn} / {a.tn}"),
        ("accuracy", f"{a.accuracy:.3f}"), ("Cohen's kappa", f"{a.kappa:.3f}"),
        ("precision of keep", f"{a.precision:.3f}"), ("recall of keep", f"{a.recall:.3f}"),
        (f"keep identical across {s.k} calls", f"{s.keep_identical:.3f}"),
        ("mean per-criterion agreement", f"{s.criterion_agreement:.3f}"),
        *state_rows(report),
        ("trajectories from stored judge samples", str(report.reused)),
        ("trajectories failed (see errors.jsonl)", str(report.failed)),
    ):
        table.add_row(label, value)
    return table


def state_rows(report) -> list[tuple[str, str]]:
    """Agreement against the state checks alone, and per criterion kind, where there is any."""
    rows = []
    if (a := report.state_agreement) is not None:
        rows.append((f"vs state checks ({report.state_checked} trajectories): accuracy / kappa",
                     f"{a.accuracy:.3f} / {a.kappa:.3f}"))
    rows += [(f"{kind} criteria vs checks: accuracy / kappa", f"{a.accuracy:.3f} / {a.kappa:.3f}")
             for kind, a in report.by_kind.items()]
    return rows
