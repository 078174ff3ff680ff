"""`synth tools ...`: evolve and implement (the stages), import (tools.mcp_import), stats (tools.repository)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from rich.console import Console
from rich.table import Table

from synth.commands.common import exit_on_errors
from synth.commands.pipeline import stage_command
from synth.core.errors import ConfigError

app = typer.Typer(
    help="Build the tool pool: import real MCP servers' tools, evolve synthetic MCP tool specs, show stats.",
    no_args_is_help=True,
)
app.command("evolve")(stage_command(
    "tools", "Evolve categories -> domains -> toolsets of MCP tool specs into tools.jsonl; invalid schemas are dropped with their reason."))
out = Console()
err = Console(stderr=True)

RunDirOpt = Annotated[Optional[Path], typer.Option("--run-dir", help="Run directory (default: RUNS_DIR/NAME).")]
NameOpt = Annotated[str, typer.Option("--name", help="Run name: the directory under --runs-dir.")]
RunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="Parent directory of run directories.")]


class ServersFile(BaseModel):
    """--servers-file: `servers: [{stdio: "cmd args" | [argv], url:, json_path:, label:, package:, ...}]`."""

    model_config = ConfigDict(extra="forbid")
    servers: list[dict]


def _run_dir(run_dir: Optional[Path], name: str, runs_dir: Path) -> Path:
    return run_dir or runs_dir / name


def _sources(stdio: list[str], url: list[str], json_paths: list[Path], catalog: bool, servers_file: Optional[Path]):
    from tools.catalog import catalog_sources, ensure_installed
    from tools.mcp_import import ServerSource

    sources = [ServerSource(stdio=cmd) for cmd in stdio] + [ServerSource(url=u) for u in url]
    for path in json_paths:
        if not path.exists():
            raise ConfigError(f"--json {path}: no such file or folder")
        sources.append(ServerSource(json_path=str(path)))
    if servers_file is not None:
        try:
            data = yaml.safe_load(servers_file.read_text()) or {}
            entries = ServersFile.model_validate(data if isinstance(data, dict) else {"servers": data}).servers
            sources += [ServerSource.model_validate(entry) for entry in entries]
        except (OSError, yaml.YAMLError, ValidationError) as e:
            raise ConfigError(f"--servers-file {servers_file}: {e}") from None
    if catalog:
        err.print("installing the catalog's MCP servers (once; cached)...")
        sources += catalog_sources(root=asyncio.run(ensure_installed()))
    if not sources:
        raise ConfigError("nothing to import: give --stdio, --url, --json, --servers-file or --catalog")
    return sources


def _short(source: str) -> str:
    # Catalog commands start with a long cache path; the executable's name says enough here.
    head, _, rest = source.partition(" ")
    return f"{Path(head).name} {rest}".strip() if head.startswith("/") and " " not in head else source


@app.command("import")
def import_cmd(
    stdio: Annotated[list[str], typer.Option("--stdio", help='A server command line, e.g. "python -m mcp_server_time" (repeatable).')] = [],  # noqa: B006
    url: Annotated[list[str], typer.Option("--url", help="A streamable HTTP MCP endpoint (repeatable).")] = [],  # noqa: B006
    json_paths: Annotated[list[Path], typer.Option("--json", help="A tools/list JSON file or a folder of them (repeatable).")] = [],  # noqa: B006
    catalog: Annotated[bool, typer.Option("--catalog", help="Install (once) and import every reference server of tools/catalog.py.")] = False,
    servers_file: Annotated[Optional[Path], typer.Option("--servers-file", help="YAML list of servers (stdio/url/json_path, label, package, env, ro_paths).")] = None,
    run_dir: RunDirOpt = None,
    name: NameOpt = "quickstart",
    runs_dir: RunsDirOpt = Path("runs"),
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per server for start + initialize + tools/list.")] = 60.0,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Servers started at once.")] = 4,
) -> None:
    """Import MCP tool specs from live servers (stdio in a sandbox, streamable HTTP) and JSON dumps.

    Valid tools go to tools.jsonl (kind=real, with provenance); every dropped tool or failed server gets
    a line in errors.jsonl (stage tools-import) with its reason. Re-running adds nothing new.
    """
    from synth.core.store import RunStore
    from tools.mcp_import import import_tools

    with exit_on_errors():
        sources = _sources(stdio, url, json_paths, catalog, servers_file)
    root = _run_dir(run_dir, name, runs_dir)
    results = asyncio.run(import_tools(sources, RunStore(root), timeout=timeout, concurrency=concurrency))

    table = Table(title=f"tools import -> {root / 'tools.jsonl'}")
    for col in ("source", "server", "version", "imported", "rejected", "reasons"):
        table.add_column(col, overflow="fold")
    for r in results:
        reasons = "\n".join(e.message[:200] for e in r.rejections[:5]) + ("\n..." if len(r.rejections) > 5 else "")
        table.add_row(_short(r.source), r.server, r.version, str(len(r.tools)), str(len(r.rejections)), reasons)
    out.print(table)
    out.print(f"imported {sum(len(r.tools) for r in results)} tools, rejected {sum(len(r.rejections) for r in results)}")


@app.command("stats")
def stats_cmd(
    run_dir: RunDirOpt = None,
    name: NameOpt = "quickstart",
    runs_dir: RunsDirOpt = Path("runs"),
    category: Annotated[Optional[str], typer.Option("--category")] = None,
    domain: Annotated[Optional[str], typer.Option("--domain")] = None,
    kind: Annotated[Optional[str], typer.Option("--kind", help="real, executable or simulated")] = None,
    png: Annotated[Optional[Path], typer.Option("--png", help="Also write a PNG map of the tools' embedding space (2-D PCA).")] = None,
    embeddings: Annotated[str, typer.Option("--embeddings", help="auto, minilm or lexical (auto: minilm when installed).")] = "auto",
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Cosine for embedding near duplicates (default: the backend's).")] = None,
) -> None:
    """Counts of a run's tools per category and kind, schema validity, duplicate rates, and a map."""
    from tools.diversity import get_embedder
    from tools.repository import NEAR_DUP_JACCARD, filter_tools, load_tools, stats

    root = _run_dir(run_dir, name, runs_dir)
    with exit_on_errors():
        if embeddings not in ("auto", "minilm", "lexical"):
            raise ConfigError(f"--embeddings {embeddings!r}: use auto, minilm or lexical")
        embedder = get_embedder(embeddings)  # type: ignore[arg-type]
        tools = filter_tools(load_tools(root), category=category, domain=domain, kind=kind)
    s = stats(tools, embedder, threshold)
    for title, counts in (("category", s.by_category), ("kind", s.by_kind), ("toolset", s.by_toolset)):
        table = Table(title=f"tools per {title}")
        table.add_column(title)
        table.add_column("tools", justify="right")
        for key, n in counts.items():
            table.add_row(key, str(n))
        out.print(table)
    out.print(f"total {s.total}; schema-valid {s.valid}/{s.total}; exact duplicates {s.exact_duplicates} "
              f"({s.exact_duplicate_rate:.1%}); near duplicates (token Jaccard >= {NEAR_DUP_JACCARD}) "
              f"{s.near_duplicates} ({s.near_duplicate_rate:.1%}); near duplicates ({s.embedding_backend} "
              f"cosine >= {s.embedding_threshold}) {s.embedding_near_duplicates} ({s.embedding_near_duplicate_rate:.1%})")
    out.print(removal_line(root, s.total))
    if png is not None:
        from tools.coverage_map import write_map

        write_map(tools, embedder, png, title=root.name)
        out.print(f"map of {len(tools)} tools ({embedder.backend_name} embeddings) -> {png}")


app.command("implement")(stage_command(
    "implement", "Write + test (in a sandbox, with repair rounds) a Python implementation per synthetic toolset; "
    "passing ones run as executable MCP tools in rollouts, the rest stay LLM-simulated."))


def removal_line(root: Path, kept: int) -> str:
    """What evolution's near-duplicate gate did, from manifest.json and errors.jsonl."""
    from synth.core.store import RunStore
    from tools.repository import evolution_dedup

    d = evolution_dedup(RunStore(root))
    if not d.recorded:
        return "near-duplicate removal during evolution: not recorded (run before the manifest kept it)"
    if d.threshold is None:
        return f"near-duplicate removal during evolution: off (embeddings {d.backend or '-'}, configured {d.configured})"
    rate = d.dropped / (d.dropped + kept) if d.dropped + kept else 0.0
    return (f"near-duplicate removal during evolution: {d.backend} embeddings (configured {d.configured}), cosine >= "
            f"{d.threshold}: dropped {d.dropped} ({rate:.1%} of {d.dropped + kept} drafted)")


@app.command("fidelity")
def fidelity_cmd(
    config: Annotated[Optional[Path], typer.Argument(help="Run config (YAML) of the recorded run.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Run name; overrides the config.")] = None,
    runs_dir: Annotated[Optional[str], typer.Option("--runs-dir", help="Parent directory of run directories.")] = None,
    max_calls: Annotated[int, typer.Option("--max-calls", min=1, help="Calls replayed at most (each costs one "
                                           "simulator request and two real calls).")] = 40,
    judge: Annotated[bool, typer.Option("--judge/--no-judge", help="Judge the values of non-deterministic results "
                                        "with the LLM (else they are not compared).")] = False,
    worst: Annotated[int, typer.Option("--worst", min=0, help="Disagreements shown as examples.")] = 5,
) -> None:
    """How far the LLM tool simulator is from the real MCP servers it imitates: the run's calls to real servers
    (gold actions and recorded trajectories) replayed from the same seed through both, compared per tool
    (error agreement, structural agreement, value agreement). Saved in manifest.json (`tool_fidelity`) and
    shown in the dataset card on the next export."""
    from synth.commands.common import console, run_config
    from synth.run import open_run
    from tools.fidelity import measure

    async def main():
        async with open_run(cfg, quiet=True, console=console) as ctx:
            report = await measure(ctx.store, ctx.cfg.rollout.sandbox, ctx.llm, max_calls=max_calls, judge=judge,
                                   worst=worst)
            ctx.store.update_manifest(tool_fidelity=report.model_dump(mode="json"))
            return report

    cfg = run_config(config, name, runs_dir)
    with exit_on_errors():
        report = asyncio.run(main())
    if not report.calls:
        out.print("no calls to real servers in this run (no agent over an imported real server, or no tasks yet)")
        raise typer.Exit(0)
    table = Table(title=f"simulator fidelity: {report.calls} calls to {', '.join(report.servers)} replayed through "
                        f"the real server and the simulator ({report.simulator_model or 'its model'})")
    for col in ("tool", "calls", "errors agree", "structure agrees", "values agree", "compared", "deterministic"):
        table.add_column(col, justify="left" if col == "tool" else "right")

    def row(label: str, f) -> None:
        value = "-" if f.value_agreement is None else f"{f.value_agreement:.0%}"
        table.add_row(label, str(f.calls), f"{f.error_agreement:.0%}", f"{f.structural_agreement:.0%}", value,
                      str(f.values_compared), str(f.deterministic))

    for tool, f in report.tools.items():
        row(tool, f)
    row("all", report.overall)
    out.print(table)
    for c in report.worst:
        out.print(f"[bold]{c.tool}[/bold]({c.arguments[:120]}): errors {'agree' if c.error_agrees else 'DIFFER'}, "
                  f"structure {'agrees' if c.structure_agrees else 'DIFFERS'}, value {c.value_mode} "
                  f"{'-' if c.value_agrees is None else 'agrees' if c.value_agrees else 'DIFFERS'}\n"
                  f"  real:      {c.real[:200]!r}\n  simulated: {c.simulated[:200]!r}")
    for failure in report.failed_cases:
        out.print(f"[yellow]not replayed:[/yellow] {failure}")
