"""`synth judges ...`: judge tooling beyond the judge stage. Parses arguments and prints; no logic."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from synth.commands.common import console, exit_on_errors, run_config

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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table, only calibration.json.")] = False,
) -> None:
    """Agreement of the judge's keep decision with the verifiable checks (accuracy, Cohen's kappa,
    precision and recall of keep) and its stability over k seeds; writes calibration.json in the run dir.
    Trajectories already judged with at least k samples reuse those samples (no new LLM calls)."""
    from judges.calibration import calibrate as run_calibration
    from synth.run import open_run

    async def main():
        async with open_run(cfg, quiet=quiet, console=console) as ctx:
            report = await run_calibration(ctx.llm, ctx.store, ctx.cfg.judge, run_seed=ctx.cfg.seed,
                                           concurrency=ctx.cfg.concurrency, k=k, limit=limit, reuse=not fresh)
            return report, ctx.store.root / "calibration.json"

    cfg = run_config(config, name, runs_dir)
    with exit_on_errors():
        report, path = asyncio.run(main())
    if not quiet:
        console.print(report_table(report))
    console.print(f"saved {path}")


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
        ("trajectories from stored judge samples", str(report.reused)),
        ("trajectories failed (see errors.jsonl)", str(report.failed)),
    ):
        table.add_row(label, value)
    return table
