"""`synth`: the command line. It assembles the commands of synth/commands/; no logic here."""

from __future__ import annotations

import sys

import typer

from synth.commands import judges, models, pipeline, sandboxes, tools
from synth.commands.pipeline import stage_command
from synth.view import command as view_command

app = typer.Typer(
    help="Manufacture verified training data for tool-using agents: evolve MCP tools, write agents and "
    "tasks with rubrics, roll out episodes against an LLM user simulator in sandboxes, judge them, and "
    "export HuggingFace SFT and RL datasets. Every stage resumes where a killed run stopped.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(tools.app, name="tools")
app.add_typer(judges.app, name="judges")
app.add_typer(sandboxes.app, name="sandboxes")
app.add_typer(models.app, name="models")
app.command()(pipeline.run)
app.command("merge")(pipeline.merge)
app.command("agents")(stage_command(
    "agents", "Write agents: a toolset from tools.jsonl and a fresh system prompt each, into agents.jsonl."))
app.command("tasks")(stage_command(
    "tasks", "Write tasks for every agent into tasks.jsonl: goal, persona, hidden user facts, a seeded world "
    "(simulated tools) or gold actions replayed in a sandbox (tasks.gold, executable tools) with final-state "
    "assertions, and a rubric written by its own step. Rejected tasks go to errors.jsonl with their reasons."))
app.command("rollout")(stage_command(
    "rollout", "Roll out episodes: the user simulator drives the agent, tools run in per-episode sandboxes; writes trajectories.jsonl."))
app.command("judge")(stage_command(
    "judge", "Judge every trajectory against its rubric plus verifiable checks; writes verdicts.jsonl (keep/drop with reasons)."))
app.command("export")(pipeline.export)
app.command("view")(view_command.view)
app.command()(pipeline.serve)

if __name__ == "__main__":
    sys.exit(app())
