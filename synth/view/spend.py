"""What a run cost and whether a budget stopped it: the overview's cost card and the banner above it.

Read from manifest.json (`usage.<stage>.cost`, `cost`, `budget`), which only the pipeline can
write (cost needs `llm.prices`); the kept count comes from the files, like the rest of the overview.
"""

from __future__ import annotations

from typing import Any

from synth.view.charts import bars, esc, table


def amount(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1 else f"{value:,.2f}"


def stage_costs(manifest: dict[str, Any]) -> dict[str, float]:
    usage = manifest.get("usage")
    if not isinstance(usage, dict):
        return {}
    return {stage: float(row["cost"]) for stage, row in usage.items()
            if isinstance(row, dict) and isinstance(row.get("cost"), (int, float))}


def cost_card(manifest: dict[str, Any], kept: int) -> str:
    costs = stage_costs(manifest)
    parts = []
    if costs:
        total = sum(costs.values())
        per_kept = f"{amount(total / kept)} per kept trajectory ({kept} kept)" if kept else "no kept trajectory yet"
        parts.append(f"<p>total <b>{esc(amount(total))}</b> · {esc(per_kept)}</p>")
        parts.append(bars([(stage, value, amount(value), None) for stage, value in costs.items()]))
        prices = (manifest.get("cost") or {}).get("prices") if isinstance(manifest.get("cost"), dict) else None
        if isinstance(prices, dict) and prices:
            rows = [[model, p.get("input", ""), p.get("output", "")] for model, p in prices.items() if isinstance(p, dict)]
            parts.append(table(["model", "input / M tokens", "output / M tokens"], rows, cls="prices"))
    else:
        parts.append('<p class="muted">no cost: the run had no price table (llm.prices)</p>')
    budget = manifest.get("budget")
    if isinstance(budget, dict):
        parts.append(budget_table(budget))
    return "".join(parts)


def budget_table(budget: dict[str, Any]) -> str:
    limits = budget.get("limits") if isinstance(budget.get("limits"), dict) else {}
    spent = budget.get("spent") if isinstance(budget.get("spent"), dict) else {}
    rows = [[which, limits.get(which, "none"), spent.get(which, "")] for which in ("tokens", "cost")]
    html = "<h4>budget</h4>" + table(["budget", "limit", "spent"], rows, cls="budget")
    stops = budget.get("stops") if isinstance(budget.get("stops"), list) else []
    if stops:
        html += "<p>stops: " + "; ".join(
            esc(f"{s.get('at', '?')} in {s.get('stage', '?')} by the {s.get('by', '?')} budget (limit {s.get('limit', '?')})")
            for s in stops if isinstance(s, dict)) + "</p>"
    return html


def stopped_banner(manifest: dict[str, Any]) -> str:
    """A line above the overview when the run's last invocation was stopped by its budget."""
    budget = manifest.get("budget")
    if not isinstance(budget, dict) or not budget.get("stopped_by"):
        return ""
    which = str(budget["stopped_by"])
    stages = manifest.get("stages") if isinstance(manifest.get("stages"), dict) else {}
    stage = next((name for name, info in stages.items() if isinstance(info, dict) and info.get("status") == "stopped"), "?")
    limit = (budget.get("limits") or {}).get(which, "?") if isinstance(budget.get("limits"), dict) else "?"
    spent = (budget.get("spent") or {}).get(which, "?") if isinstance(budget.get("spent"), dict) else "?"
    return (f'<div class="stopped" id="budget-stopped"><b>Stopped by the {esc(which)} budget</b> in the {esc(stage)} '
            f"stage: spent {esc(spent)} of llm.budget.{esc(which)} {esc(limit)}. What finished is shown; rerun with "
            "a higher budget to resume.</div>")
