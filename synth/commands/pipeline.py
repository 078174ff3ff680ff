"""The pipeline commands: `synth run`, one command per stage, `synth export`, `synth merge`, `synth serve`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from synth.commands.common import console, exit_on_errors, run_config
from synth.config import RunConfig

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
EstimateOpt = Annotated[bool, typer.Option(
    "--estimate", help="Run a small pilot (--pilot-units per stage, in a scratch dir, through this run's response "
    "cache, so the real run reuses its answers) and print the projected requests, tokens, cost and wall time "
    "of the full config. Writes no records to the run dir.")]
PilotUnitsOpt = Annotated[int, typer.Option("--pilot-units", min=1, help="Units per stage in the --estimate pilot.")]
QualityOpt = Annotated[bool, typer.Option(
    "--quality", help="Serve the embedded quality preset (Qwen2.5-Coder-1.5B) instead of embedded.model, with "
    "a 900 s request timeout; the run is named NAME-quality unless --name is given. Slower than the SmolLM2 "
    "default; its time and funnel are measured in bench/README.md. Only without an LLM endpoint.")]
AllowEmptyOpt = Annotated[bool, typer.Option(
    "--allow-empty", help="Exit 0 even when a stage produced nothing (0 toolsets, 0 trajectories, 0 kept ...); "
    "without it such a run says which stage and its top error, and exits with code 4.")]


def run_pipeline(cfg: RunConfig, stages: list[str], *, quiet: bool, shard: tuple[int, int] | None = None,
                 allow_empty: bool = False) -> None:
    """Run these stages on the run dir of `cfg`, print the summary table and what the run failed to
    make; exit with EMPTY_EXIT_CODE when a stage made nothing, unless `allow_empty`."""
    from synth.core.budget import BudgetReached
    from synth.outcome import EMPTY_EXIT_CODE, empty_stage, repaired_names
    from synth.run import open_run, run_stages, summary_table

    async def main() -> bool:
        async with open_run(cfg, quiet=quiet, console=console, shard=shard) as ctx:
            try:
                await run_stages(ctx, stages)
            except BudgetReached:
                console.print(summary_table(ctx))  # what was done, and which budget stopped it
                raise
            console.print(summary_table(ctx))
            if "tools" in stages and (repaired := repaired_names(ctx.store)):
                console.print(f"names repaired to snake_case: {repaired} (what the model wrote: "
                              "provenance.repaired in tools.jsonl)")
            if (empty := empty_stage(ctx.store, stages)) is None:
                return False
            console.print(f"[bold {'yellow' if allow_empty else 'red'}]{empty.message()}[/]")
            return True

    with exit_on_errors(resume_hint=f"rerun the same command to resume {cfg.run_dir}"):
        empty = asyncio.run(main())
    if empty and not allow_empty:
        raise typer.Exit(EMPTY_EXIT_CODE)


def stage_command(stage: str, help_text: str) -> Callable[..., None]:
    """A command that runs one stage with the usual config and options."""

    def command(config: ConfigArg = None, name: NameOpt = None, runs_dir: RunsDirOpt = None,
                quiet: QuietOpt = False, allow_empty: AllowEmptyOpt = False) -> None:
        run_pipeline(run_config(config, name, runs_dir), [stage], quiet=quiet, allow_empty=allow_empty)

    command.__doc__ = help_text
    return command


def run(config: ConfigArg = None, name: NameOpt = None, runs_dir: RunsDirOpt = None, quiet: QuietOpt = False,
        shard: ShardOpt = None, estimate: EstimateOpt = False, pilot_units: PilotUnitsOpt = 2,
        quality: QualityOpt = False, allow_empty: AllowEmptyOpt = False) -> None:
    """Run every stage (tools, implement if tools.implement is on, agents, tasks, rollout, judge) and export the datasets.

    With no LLM endpoint configured (llm.base_url or OPENAI_BASE_URL), the embedded model server
    starts and stops with the run. A killed run resumes when the same command is run again.
    A shard (--shard) does not export: merge the shards, then export the merged run.
    With llm.budget set, the run stops sending requests when its spend reaches the budget, keeps
    what it finished, says which budget stopped it and exits with code 3; rerun with a higher
    budget to resume. --estimate projects the run's requests, tokens, cost and time from a pilot.
    A run in which a stage made nothing (0 toolsets, ..., 0 kept) names the stage and its top error
    and exits with code 4; --allow-empty accepts it (exit 0).
    --quality serves the embedded quality preset instead (slower; measured in bench/README.md).
    """
    from synth.core.shard import parse_shard
    from synth.run import pipeline_stages

    with exit_on_errors():
        parsed = parse_shard(shard) if shard else None
    cfg = run_config(config, name, runs_dir)
    if quality:
        with exit_on_errors():
            cfg = with_quality_preset(cfg, rename=name is None)
    if estimate:
        run_estimate(cfg, pilot_units, quiet=quiet, shard=parsed)
    else:
        run_pipeline(cfg, pipeline_stages(cfg, parsed), quiet=quiet, shard=parsed, allow_empty=allow_empty)


def with_quality_preset(cfg: RunConfig, *, rename: bool) -> RunConfig:
    """`cfg` served by the embedded quality preset (synth/core/models.py `serve_preset`), with a timeout its
    slow requests fit in and, with `rename`, a run dir of its own."""
    import os

    from synth.core.models import QUALITY_PRESET, QUALITY_TIMEOUT_S, serve_preset

    data = serve_preset(cfg.model_dump(mode="json", exclude_unset=True), QUALITY_PRESET,
                        endpoint=cfg.llm.base_url or os.environ.get("OPENAI_BASE_URL"), asked_by="--quality")
    data["llm"]["timeout_s"] = max(cfg.llm.timeout_s, QUALITY_TIMEOUT_S)
    if rename:
        data["name"] = f"{cfg.name}-quality"
    return RunConfig.model_validate(data)


def run_estimate(cfg: RunConfig, units: int, *, quiet: bool, shard: tuple[int, int] | None = None) -> None:
    from synth.estimate import estimate, estimate_table

    async def main() -> None:
        console.print(estimate_table(cfg, await estimate(cfg, units, quiet=quiet, console=console, shard=shard)))

    with exit_on_errors(resume_hint="the pilot's answers so far are cached: rerun to go on"):
        asyncio.run(main())


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


def export(
    config: ConfigArg = None, name: NameOpt = None, runs_dir: RunsDirOpt = None, quiet: QuietOpt = False,
    push_to_hub: Annotated[Optional[str], typer.Option(
        "--push-to-hub", metavar="REPO", help="Also push export/ to this Hugging Face dataset repo (needs HF_TOKEN).")] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the Hub repo private.")] = False,
) -> None:
    """Export kept trajectories (sft), tasks with environment specs and pass@k (rl), every judged trajectory (all) and kept-vs-dropped pairs (dpo) as HuggingFace datasets, split by domain, + a dataset card with "Train with it" snippets, under export/."""
    cfg = run_config(config, name, runs_dir)
    run_pipeline(cfg, ["export"], quiet=quiet)
    if push_to_hub:
        from synth.hub import push_to_hub as push

        with exit_on_errors():
            console.print(f"pushed {push(cfg.run_dir / 'export', push_to_hub, private=private)}")


def serve(
    model: Annotated[Optional[str], typer.Option(help="A preset (`synth models list`) or a GGUF path (default: SmolLM2-135M).")] = None,
    model_file: Annotated[Optional[Path], typer.Option(help="A GGUF model to serve (older form of --model PATH).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port on 127.0.0.1 (default: a free one).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: half the cores).")] = None,
) -> None:
    """Serve the embedded model as an OpenAI-compatible endpoint until Ctrl-C."""
    from synth.core.local_llm import EmbeddedConfig, serve_forever

    with exit_on_errors():
        serve_forever(EmbeddedConfig(model=model, model_file=str(model_file) if model_file else None, port=port,
                                     n_threads=threads))
