"""The overview tab: the run at a glance, rendered once in Python (escaped) from `Summary` and the manifest."""

from __future__ import annotations

import json
from typing import Any

from synth.view.charts import bars, esc, histogram, pct, stacked, table
from synth.view.rundir import RunFiles
from synth.view.spend import cost_card, stopped_banner
from synth.view.summary import Summary, Yield, usage_rows

RUNTIME_CLASSES = {"real": "rt-real", "executable": "rt-exec", "simulated": "rt-sim"}
# manifest sections shown in their own cards; the rest are shown as JSON, so new sections are never hidden
SHOWN_SECTIONS = {"counts", "funnel", "usage", "last_invocation", "user_flags", "pass_k", "judge_agreement",
                  "created", "config_hash", "stages", "cost", "budget"}


def render_overview(files: RunFiles, summary: Summary) -> str:
    cards = [
        card("Funnel", funnel(summary), "funnel"),
        card("Drop reasons", drop_reasons(summary), "reasons"),
        card("Judge scores", histogram(summary.score_bins)
             + '<p class="muted"><i class="key kept"></i>kept <i class="key dropped"></i>dropped</p>', "scores"),
        card("Yield by domain", yield_bars(summary.yields["domain"], "domain"), "yield-domain"),
        card("Yield by difficulty", yield_bars(summary.yields["difficulty"], "difficulty"), "yield-difficulty"),
        card("Yield by agent strategy", yield_bars(summary.yields["strategy"], "strategy"), "yield-strategy"),
        card("User-simulator flags", user_flags(summary), "flags"),
        card("Tool runtime mix", runtime_mix(summary), "runtime"),
        card("LLM usage", usage(files.manifest), "usage"),
        card("Cost and budget", cost_card(files.manifest, dict(summary.funnel).get("kept", 0)), "cost"),
        card("Tool coverage", coverage(summary), "coverage", wide=True),
        card("Yield by toolset", yield_bars(summary.yields["toolset"], "toolset"), "yield-toolset"),
        card("Judge agreement and pass@k", judging(files), "judging"),
    ]
    extra = {k: v for k, v in files.manifest.items() if k not in SHOWN_SECTIONS}
    if extra:
        cards.append(card("Other manifest sections", json_block(extra), "manifest-extra", wide=True))
    return f'{stopped_banner(files.manifest)}<div class="cards">{"".join(cards)}</div>'


def card(title: str, body: str, key: str, wide: bool = False) -> str:
    return f'<section class="card{" wide" if wide else ""}" id="card-{esc(key)}"><h3>{esc(title)}</h3>{body}</section>'


def funnel(summary: Summary) -> str:
    top = max((count for _, count in summary.funnel), default=0)
    rows = []
    previous = None
    for stage, count in summary.funnel:
        note = f"{count}" + (f"  ({pct(count, previous)})" if stage in ("judged", "kept") and previous else "")
        go = {"go": "trajectories", "kept": "kept"} if stage == "kept" else (
            {"go": "trajectories"} if stage in ("trajectories", "judged") else {"go": stage} if stage == "tasks" else None)
        rows.append((stage, count, note, go))
        previous = count
    failed = summary.failed_units
    failed_html = ("<p>failed units: " + ", ".join(
        f'<a class="go" href="#" data-go="errors" data-stage="{esc(stage)}">{esc(stage)} {count}</a>'
        for stage, count in failed.items()) + "</p>") if failed else '<p class="muted">no failed units</p>'
    return bars(rows, scale=top) + failed_html


def drop_reasons(summary: Summary) -> str:
    if not summary.drop_reasons:
        return '<p class="muted">nothing dropped</p>'
    rows = [(kind, count, f"{count}  {pct(count, summary.dropped)}", {"go": "trajectories", "reason": kind})
            for kind, count in summary.drop_reasons]
    return (bars(rows) + f'<p class="muted">{summary.dropped} dropped; a trajectory may have several reasons, '
            "so shares are of dropped trajectories</p>")


def yield_bars(groups: dict[str, Yield], facet: str) -> str:
    if not groups:
        return '<p class="muted">no trajectories</p>'
    rows = [(name, (y.rate or 0.0), f"{y.kept}/{y.judged}  {pct(y.kept, y.judged)}", {"go": "trajectories", facet: name})
            for name, y in groups.items()]
    return bars(rows, scale=1.0, cls="rate")


def user_flags(summary: Summary) -> str:
    if not summary.user_flags:
        return f'<p class="muted">no flags on {summary.trajectories} trajectories</p>'
    rows = [(flag, count, f"{count}  {pct(count, summary.trajectories)}", {"go": "trajectories", "flag": flag})
            for flag, count in summary.user_flags]
    return bars(rows, scale=summary.trajectories) + f'<p class="muted">share of {summary.trajectories} trajectories</p>'


def runtime_mix(summary: Summary) -> str:
    order = ["real", "executable", "simulated"]
    names = order + [k for k in summary.runtime_mix if k not in order]
    parts = [(name, summary.runtime_mix.get(name, 0), RUNTIME_CLASSES.get(name, "rt-other")) for name in names]
    source = ("from the tool-call traces" if summary.runtime_from_traces else
              "inferred: traces do not name a runtime, so a call counts as executable when passing implementations "
              "cover every tool its agent was offered, else simulated")
    return stacked(parts) + f'<p class="muted">tool calls by runtime, {esc(source)}</p>'


def coverage(summary: Summary) -> str:
    pool = [u for u in summary.tools if u.in_pool]
    called = sum(1 for u in pool if u.calls)
    top = max((u.calls for u in summary.tools), default=0) or 1
    rows = []
    for use in summary.tools:
        cls = "uncalled" if not use.calls else ("invented" if not use.in_pool else "")
        width = 100 * use.calls / top
        err_width = 100 * use.errors / top
        rows.append(
            f'<tr class="{cls}"><td>{esc(use.name)}</td><td>{esc(use.toolset or "(not in the pool)")}</td>'
            f'<td>{esc(use.domain)}</td><td>{esc(use.kind)}</td><td class="num">{use.calls}</td>'
            f'<td class="num">{use.ok}</td><td class="num">{use.errors}</td><td class="num">{use.faults}</td>'
            f'<td class="bar"><span style="width:{width:.1f}%"></span><span class="err" style="width:{err_width:.1f}%">'
            f"</span></td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("tool", "toolset", "domain", "kind", "calls", "ok", "errors", "faults", ""))
    invented = sum(1 for u in summary.tools if not u.in_pool)
    note = (f"{called} of {len(pool)} pool tools called"
            + (f"; {invented} name(s) called that no agent was offered" if invented else ""))
    return (f'<p>{esc(note)}</p><div class="scroll"><table class="grid coverage"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def usage(manifest: dict[str, Any]) -> str:
    rows = usage_rows(manifest)
    if not rows:
        return '<p class="muted">manifest.json has no usage</p>'
    columns = ["requests", "cached", "prompt_tokens", "completion_tokens", "retries", "failures", "seconds"]
    # cost columns appear when the manifest has them (per-stage "cost" or anything named *cost*)
    columns += sorted({k for _, row in rows for k in row if "cost" in k and k not in columns})
    extra = sorted({k for _, row in rows for k in row if k not in columns})
    head = ["stage"] + columns + extra
    body = [[stage] + [_cell(row.get(c)) for c in columns + extra] for stage, row in rows]
    totals = ["total"] + [_cell(_sum(row.get(c) for _, row in rows)) for c in columns + extra]
    html = table(head, body + [totals], cls="usage")
    return f'<div class="scroll">{html}</div>'


def judging(files: RunFiles) -> str:
    parts = []
    agreement = files.manifest.get("judge_agreement")
    if isinstance(agreement, dict) and agreement.get("k"):
        parts.append(table(["measure", "value"], [[k, _cell(v)] for k, v in agreement.items()]))
    pass_k = files.manifest.get("pass_k")
    if isinstance(pass_k, dict) and isinstance(pass_k.get("mean"), dict):
        mean = pass_k["mean"]
        ks = sorted({k for values in mean.values() if isinstance(values, dict) for k in values}, key=_int_key)
        parts.append(table(["metric"] + [f"k={k}" for k in ks],
                           [[metric] + [_cell(values.get(k)) for k in ks] for metric, values in mean.items()
                            if isinstance(values, dict)]))
        parts.append(f'<p class="muted">over {esc(pass_k.get("tasks_judged", "?"))} tasks</p>')
    if files.calibration:
        parts.append("<h4>calibration.json</h4>" + json_block(files.calibration, collapsed=True))
    return "".join(parts) or '<p class="muted">one judge sample per trajectory; no pass@k in the manifest</p>'


def json_block(value: Any, collapsed: bool = False) -> str:
    text = esc(json.dumps(value, indent=1, ensure_ascii=False, default=str))
    return f"<details><summary>JSON</summary><pre>{text}</pre></details>" if collapsed else f"<pre>{text}</pre>"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _sum(values: Any) -> Any:
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(numbers) if numbers else None


def _int_key(key: str) -> tuple[int, str]:
    return (int(key), "") if str(key).isdigit() else (1 << 30, str(key))
