"""`synth view RUN_DIR [--out FILE] [--serve [--port N]]`: write the report, print its path, maybe serve it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from synth.view.page import write_report
from synth.view.rundir import ViewError
from synth.view.serve import serve_report

console = Console(stderr=True)


def view(
    run_dir: Annotated[Path, typer.Argument(help="The run directory (runs/<name>).")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write the report (default: RUN_DIR/report.html).")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Also serve the report on 127.0.0.1 until Ctrl-C.")] = False,
    port: Annotated[Optional[int], typer.Option("--port", help="Port for --serve (default: a free one).")] = None,
) -> None:
    """Write a self-contained HTML report of a run (one file, no network): funnel, drop reasons, yields, scores,
    tool coverage, and every trajectory with its verdicts, tool calls and state diff. Prints its path."""
    if port is not None and not serve:
        console.print("[red]usage error:[/red] --port is the port of --serve: add --serve, or leave --port out")
        raise typer.Exit(2)
    started = time.monotonic()
    try:
        path = write_report(run_dir, out)
    except ViewError as exc:
        console.print(f"[red]cannot show {run_dir}:[/red] {exc}")
        raise typer.Exit(2) from None
    size = path.stat().st_size / 1e6
    console.print(f"report written in {time.monotonic() - started:.1f} s ({size:.1f} MB); open it in a browser "
                  "(it needs no network)")
    print(path)  # stdout: the path alone, for scripts
    if serve:
        serve_report(path, port or 0, announce=lambda url: console.print(f"serving on {url} (loopback only; Ctrl-C stops)"))
