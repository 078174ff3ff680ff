"""Charts as plain HTML + inline SVG, escaped: no script, no network, readable from file://."""

from __future__ import annotations

from html import escape
from typing import Iterable


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "–"


def link_attrs(filters: dict[str, str] | None) -> str:
    """data-* attributes the page's script turns into a filtered trajectory list when clicked."""
    if not filters:
        return ""
    return " class=\"go\" tabindex=\"0\"" + "".join(f" data-{esc(k)}=\"{esc(v)}\"" for k, v in filters.items())


def bars(rows: Iterable[tuple[str, float, str, dict[str, str] | None]], *, scale: float | None = None,
         cls: str = "") -> str:
    """Horizontal bars: (label, value, text shown right of the bar, filter to open on click)."""
    rows = list(rows)
    if not rows:
        return '<p class="muted">none</p>'
    top = scale or max((value for _, value, _, _ in rows), default=0) or 1
    out = [f'<table class="bars {esc(cls)}">']
    for label, value, note, filters in rows:
        width = max(0.0, min(100.0, 100 * value / top))
        out.append(f'<tr{link_attrs(filters)}><th title="{esc(label)}">{esc(label)}</th>'
                   f'<td class="bar"><span style="width:{width:.1f}%"></span></td><td class="num">{esc(note)}</td></tr>')
    out.append("</table>")
    return "".join(out)


def stacked(parts: list[tuple[str, int, str]]) -> str:
    """One bar split in parts (label, count, css class), with a legend."""
    total = sum(count for _, count, _ in parts)
    if not total:
        return '<p class="muted">no tool calls</p>'
    segments = "".join(f'<span class="seg {esc(cls)}" style="width:{100 * count / total:.2f}%" '
                       f'title="{esc(label)}: {count}"></span>' for label, count, cls in parts if count)
    legend = "".join(f'<li><i class="seg {esc(cls)}"></i>{esc(label)} <b>{count}</b> <span class="muted">'
                     f'{pct(count, total)}</span></li>' for label, count, cls in parts)
    return f'<div class="stack">{segments}</div><ul class="legend">{legend}</ul>'


def histogram(bins: list[tuple[float, float, int, int]], width: int = 360, height: int = 120) -> str:
    """Score histogram as SVG: kept (green) stacked on dropped (red) per bin."""
    top = max((kept + dropped for _, _, kept, dropped in bins), default=0)
    if not top:
        return '<p class="muted">no scored verdicts</p>'
    pad, axis = 4, 16
    column = (width - 2 * pad) / len(bins)
    scale = (height - axis - 12) / top  # 12: room for the tallest column's count
    out = [f'<svg class="hist" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="judge score histogram">']
    for n, (low, high, kept, dropped) in enumerate(bins):
        x = pad + n * column
        base = height - axis
        for count, cls in ((dropped, "dropped"), (kept, "kept")):
            if count:
                h = count * scale
                base -= h
                out.append(f'<rect class="{cls}" x="{x + 1:.1f}" y="{base:.1f}" width="{column - 2:.1f}" height="{h:.1f}">'
                           f'<title>score {low:.1f}–{high:.1f}: {cls} {count}</title></rect>')
        if kept + dropped:
            out.append(f'<text class="count" x="{x + column / 2:.1f}" y="{base - 2:.1f}">{kept + dropped}</text>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{height - 4}">{low:.1f}</text>')
    out.append(f'<text class="tick" x="{width - pad - 14}" y="{height - 4}">1.0</text></svg>')
    return "".join(out)


def table(head: list[str], rows: Iterable[Iterable[object]], cls: str = "") -> str:
    body = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return (f'<table class="grid {esc(cls)}"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in head)
            + f"</tr></thead><tbody>{body}</tbody></table>")
