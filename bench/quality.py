"""The data-quality bench: one table of what a run made and how far it can be trusted.

    python -m bench.quality [CONFIG] --model NAME    # run the pipeline on embedded preset NAME, then measure
    python -m bench.quality --run-dir DIR            # measure a finished run
    python -m bench.quality --compare DIR DIR ...    # measured runs side by side (their quality.json), markdown

The first form runs `synth run CONFIG --allow-empty` (default examples/quickstart.yaml) into a run
dir of its own, `<runs_dir>/<name>-quality-<preset>`, with `embedded.model: NAME`; `llm.model` is
dropped, so requests name the preset served (its alias), and no endpoint may be configured. Rerun
it and the finished run resumes from its response cache (no request). Both forms print the table,
write `quality.json` and `quality.md` into the run dir and, when the run exported, regenerate the
dataset card (export/README.md) with the table in it. The metrics are judges/quality.py: pure
functions over the run dir's files; what cannot be computed says "n/a (why)".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "examples" / "quickstart.yaml"


def bench_config(config: Path, model: str) -> dict:
    """The config a `--model` run uses: CONFIG serving the preset (synth/core/models.py `serve_preset`),
    under its own run name."""
    from synth.core.errors import ConfigError
    from synth.core.models import find_preset, presets, serve_preset

    data = yaml.safe_load(config.read_text()) or {}
    found = find_preset(model)
    if found is None:
        raise SystemExit(f"--model {model!r} is not a preset; presets: {', '.join(presets())}")
    endpoint = (data.get("llm") or {}).get("base_url") or os.environ.get("OPENAI_BASE_URL")
    try:
        data = serve_preset(data, found.name, endpoint=endpoint, asked_by="bench.quality --model")
    except ConfigError as exc:
        raise SystemExit(f"{exc}; or run the pipeline yourself and measure it with --run-dir") from None
    data["name"] = f"{data.get('name', 'quickstart')}-quality-{found.name.lower()}"
    return data


def run_pipeline(data: dict, cwd: Path) -> Path:
    """`synth run` on `data` (an empty result is still measured: --allow-empty); the run dir."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(data, f)
    try:
        argv = [sys.executable, str(REPO / "cli.py"), "run", f.name, "--allow-empty", "--quiet"]
        done = subprocess.run(argv, cwd=cwd)
    finally:
        os.unlink(f.name)
    run_dir = cwd / data.get("runs_dir", "runs") / data["name"]
    if done.returncode != 0:
        raise SystemExit(f"synth run failed (exit {done.returncode}); the run dir is {run_dir}: rerun to resume")
    return run_dir


def measure(run_dir: Path) -> dict:
    from judges.quality import quality_report, render_markdown

    report = quality_report(run_dir)
    (run_dir / "quality.json").write_text(json.dumps(report, indent=1) + "\n")
    (run_dir / "quality.md").write_text(render_markdown(report))
    card = run_dir / "export" / "README.md"
    if card.is_file():
        card.write_text(with_quality_section(card.read_text(), render_markdown(report)))
    return report


CARD_BEGIN, CARD_END = "<!-- bench.quality: begin -->", "<!-- bench.quality: end -->"


def with_quality_section(card: str, table: str) -> str:
    """The dataset card with the quality table in it, replacing an earlier one (`synth export`
    rebuilds the card without it: run the bench again after an export)."""
    section = f"{CARD_BEGIN}\n{table.rstrip()}\n{CARD_END}\n"
    if CARD_BEGIN in card and CARD_END in card:
        head, rest = card.split(CARD_BEGIN, 1)
        return head + section + rest.split(CARD_END, 1)[1].lstrip("\n")
    return card.rstrip("\n") + "\n\n" + section


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", type=Path, help="run config (default: examples/quickstart.yaml)")
    parser.add_argument("--model", help="embedded preset to run the pipeline on (synth models list)")
    parser.add_argument("--run-dir", type=Path, help="measure this finished run instead of running one")
    parser.add_argument("--compare", type=Path, nargs="+", metavar="DIR",
                        help="print the quality.json of these measured runs side by side (markdown)")
    args = parser.parse_args(argv)
    if args.compare and (args.model or args.run_dir or args.config):
        parser.error("--compare prints measured runs side by side: give it alone")
    if args.compare:
        from judges.quality import render_side_by_side

        missing = [d for d in args.compare if not (d / "quality.json").is_file()]
        if missing:
            parser.error(f"not measured yet (no quality.json): {', '.join(map(str, missing))}; "
                         "run python -m bench.quality --run-dir DIR first")
        print(render_side_by_side([json.loads((d / "quality.json").read_text()) for d in args.compare]), end="")
        return
    if args.run_dir and (args.model or args.config):
        parser.error("--run-dir measures a finished run: give it alone")
    if not args.run_dir and not args.model:
        parser.error("give --model NAME (run the pipeline on that preset) or --run-dir DIR (a finished run)")
    if args.run_dir:
        run_dir = args.run_dir
        if not (run_dir / "manifest.json").is_file():
            parser.error(f"{run_dir} is not a run directory (no manifest.json)")
    else:
        run_dir = run_pipeline(bench_config(args.config or DEFAULT_CONFIG, args.model), Path.cwd())
    from judges.quality import render_text

    report = measure(run_dir)
    print(render_text(report))
    print(f"\nwritten: {run_dir / 'quality.json'}, {run_dir / 'quality.md'}"
          + (", export/README.md" if (run_dir / "export" / "README.md").is_file() else ""))


if __name__ == "__main__":
    main()
