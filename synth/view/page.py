"""Assemble the one-file report: template + style + script from assets/, the overview, and the data.

Hostile text cannot run: HTML parts are escaped in Python, JSON in <script> elements has every `<`
escaped (so no `</script>` can close them), the page's script only writes text nodes, and a
Content-Security-Policy with a per-report nonce lets no other script (nor an inline handler such as
`onerror`) run and no request leave the page.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from pathlib import Path
from typing import Any

from synth.view.charts import esc
from synth.view.joins import Run
from synth.view.overview import json_block, render_overview
from synth.view.payload import Payload, build_payload
from synth.view.rundir import RunFiles, read_run_dir
from synth.view.summary import summarize

ASSETS = Path(__file__).with_name("assets")
SCRIPTS = ("base.js", "detail.js", "trajectories.js", "tasks.js", "app.js")  # in dependency order
_SLOT = re.compile(r"<!--slot:(\w+)-->")


def build_report(run_dir: Path) -> str:
    files = read_run_dir(run_dir)
    run = Run(files)
    return render_page(files, render_overview(files, summarize(run)), build_payload(run))


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    out = Path(out) if out else Path(run_dir) / "report.html"
    html = build_report(run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(html, encoding="utf-8")
    partial.replace(out)  # a reader never sees half a report
    return out


def render_page(files: RunFiles, overview: str, payload: Payload) -> str:
    script = "\n".join((ASSETS / name).read_text() for name in SCRIPTS)
    if "</script" in script.lower():
        raise AssertionError("an asset script contains </script, which would end its element early")
    chunks = "\n".join(f'<script type="application/gzip+base64" id="chunk-{n}">{_b64(chunk)}</script>'
                       for n, chunk in enumerate(payload.chunks))
    slots = {
        "nonce": secrets.token_urlsafe(18), "title": esc(f"synth view · {files.root.resolve().name}"),
        "style": (ASSETS / "report.css").read_text(), "meta": meta(files),
        "n_trajectories": f"{len(files['trajectories']):,}", "n_tasks": f"{len(files['tasks']):,}",
        "n_errors": f"{len(files['errors']):,}", "problems": problems(files), "overview": overview,
        "run": run_tab(files), "index": script_json(payload.index), "script": script,
        "tables": _b64(payload.tables), "errors": _b64(payload.errors), "chunks": chunks,
    }
    template = (ASSETS / "report.html").read_text()
    return _SLOT.sub(lambda m: slots[m[1]], template)  # one pass: inserted text is never rescanned


def script_json(data: Any) -> str:
    """JSON safe inside a <script> element: `<` only occurs in strings, where \\u003c means the same."""
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":"))
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def meta(files: RunFiles) -> str:
    manifest = files.manifest
    items = [("run dir", str(files.root)), ("created", manifest.get("created")), ("config", manifest.get("config_hash")),
             ("report", time.strftime("%Y-%m-%d %H:%M:%S"))]
    return " · ".join(f"{esc(k)} <b>{esc(v)}</b>" for k, v in items if v)


def problems(files: RunFiles) -> str:
    if not files.problems:
        return ""
    shown = files.problems[:50]
    more = len(files.problems) - len(shown)
    return ('<div class="problems" id="problems"><b>Some of the run directory could not be read (shown without it):</b><ul>'
            + "".join(f"<li>{esc(p)}</li>" for p in shown) + (f"<li>… {more} more</li>" if more else "") + "</ul></div>")


def run_tab(files: RunFiles) -> str:
    parts = ['<div class="cards">']
    config = files.config_yaml or "(no config.yaml)"
    parts.append(f'<section class="card"><h3>config.yaml</h3><pre>{esc(config)}</pre></section>')
    parts.append(f'<section class="card"><h3>manifest.json</h3>{json_block(files.manifest) if files.manifest else "<p class=muted>none</p>"}</section>')
    stages = files.manifest.get("stages")
    if isinstance(stages, dict):
        rows = "".join(f"<tr><td>{esc(name)}</td><td>{esc(info.get('status', '') if isinstance(info, dict) else info)}</td>"
                       f"<td>{esc(', '.join(f'{k} {v}' for k, v in info.items() if k != 'status') if isinstance(info, dict) else '')}</td></tr>"
                       for name, info in stages.items())
        parts.append(f'<section class="card"><h3>stages</h3><table class="grid"><tbody>{rows}</tbody></table></section>')
    parts.append("</div>")
    return "".join(parts)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
