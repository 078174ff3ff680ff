"""What every `synth` command shares: the default config and how expected errors end a command."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console

from synth.config import RunConfig, load_config
from synth.core.budget import BudgetReached
from synth.core.errors import ConfigError, SynthError

DEFAULT_CONFIG = Path("examples/quickstart.yaml")
BUDGET_EXIT_CODE = 3  # stopped by llm.budget (synth/core/budget.py): not an error, not done either
console = Console(stderr=True)


def run_config(path: Optional[Path], name: Optional[str], runs_dir: Optional[str]) -> RunConfig:
    """The config file given, else examples/quickstart.yaml when present, else the defaults."""
    with exit_on_errors():
        if path is None and DEFAULT_CONFIG.is_file():
            path = DEFAULT_CONFIG
        return load_config(path, {"name": name, "runs_dir": runs_dir})


@contextmanager
def exit_on_errors(resume_hint: str | None = None) -> Iterator[None]:
    """Expected errors end the command with a one-line message and an exit code, not a traceback."""
    try:
        yield
    except ConfigError as exc:
        console.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2) from None
    except SynthError as exc:
        console.print(f"[red]{type(exc).__name__}:[/red] {exc}")
        raise typer.Exit(1) from None
    except BudgetReached as exc:
        console.print(f"[yellow]stopped:[/yellow] {exc}; everything finished is on disk: rerun with a higher "
                      f"llm.budget.{exc.which} to resume")
        raise typer.Exit(BUDGET_EXIT_CODE) from None
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/yellow]{f': {resume_hint}' if resume_hint else ''}")
        raise typer.Exit(130) from None
