"""`synth view` on a large run: build time, file size, and time-to-interactive in headless Chromium.

    python -m bench.view [--trajectories 10000] [--loads 3] [--keep DIR]

Writes a synthetic run dir (tests/synthetic_run.py: several turns, tool calls, an 8-criterion rubric per
task), builds the report (timing each phase), then opens it from file:// in headless Chromium
(tests/browser.py) --loads times and reports the medians of: the list being interactive (the page's
script has rendered the first page of rows: `window.__viewReady`, ms since navigation start),
DOMContentLoaded and load; opening a trajectory (click -> rendered, the first in a chunk not yet
inflated and then one whose chunk is); a filter over every row; a text search; and the one-off
inflation of every detail for "search messages".
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from synth.view.joins import Run
from synth.view.overview import render_overview
from synth.view.page import render_page
from synth.view.payload import build_payload
from synth.view.rundir import read_run_dir
from synth.view.summary import summarize
from tests.browser import browser_context, missing

OPEN = """async (i) => {
  const t0 = performance.now();
  const shown = new Promise(r => document.addEventListener("trajectory-shown", r, { once: true }));
  document.querySelector(`#trajectory-list tr[data-i="${i}"]`).click();
  await shown;
  await new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
  return performance.now() - t0;
}"""
CHANGE = """async ([id, value]) => {
  const t0 = performance.now();
  const input = document.getElementById(id);
  if (input.type === "checkbox") input.checked = value; else input.value = value;
  input.dispatchEvent(new Event(input.type === "search" ? "input" : "change"));
  if (id === "f-deep") await new Promise(r => { const s = document.getElementById("deep-status");
    const check = () => s.textContent.includes("ms") ? r() : setTimeout(check, 5); check(); });
  await new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
  return performance.now() - t0;
}"""


def build(run_dir: Path, out: Path) -> dict[str, float]:
    times: dict[str, float] = {}
    cpu, wall = time.process_time(), time.perf_counter()
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        times[name] = now - mark
        mark = now

    files = read_run_dir(run_dir)
    lap("read")
    run = Run(files)
    overview = render_overview(files, summarize(run))
    lap("summary")
    payload = build_payload(run)
    lap("payload (index, diffs, gzip)")
    html = render_page(files, overview, payload)
    lap("page")
    out.write_text(html, encoding="utf-8")
    lap("write")
    times["total"] = time.perf_counter() - wall
    times["total cpu"] = time.process_time() - cpu
    return times


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def measure(report: Path, loads: int, trajectories: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    async with browser_context() as context:
        for _ in range(loads):
            page = await context.new_page()
            await page.goto(report.as_uri(), wait_until="commit")
            await page.wait_for_selector("html[data-ready]", timeout=120_000)
            add("interactive (list shown) ms", await page.evaluate("window.__viewReady"))
            await page.wait_for_load_state("load")
            nav = await page.evaluate("JSON.parse(JSON.stringify(performance.getEntriesByType('navigation')[0]))")
            add("DOMContentLoaded ms", nav["domContentLoadedEventEnd"])
            add("load ms", nav["loadEventEnd"])
            add("open trajectory, chunk cold ms", await page.evaluate(OPEN, 0))
            add("open trajectory, chunk warm ms", await page.evaluate(OPEN, 1))
            add(f"filter dropped over {trajectories} ms", await page.evaluate(CHANGE, ["f-kept", "dropped"]))
            add("text search ms", await page.evaluate(CHANGE, ["f-text", "ba"]))
            cdp = await context.new_cdp_session(page)
            add("JS heap after GC MB", await heap_mb(cdp))
            add("search messages: inflate all ms", await page.evaluate(CHANGE, ["f-deep", True]))
            add("JS heap after search messages MB", await heap_mb(cdp))
            await page.close()
    return results


async def heap_mb(cdp) -> float:
    """Live JS heap after a full GC (performance.memory is coarse and cached in Chromium)."""
    await cdp.send("HeapProfiler.collectGarbage")
    return (await cdp.send("Runtime.getHeapUsage"))["usedSize"] / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trajectories", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write the run dir and report here and keep them")
    args = parser.parse_args()
    if problem := missing():
        raise SystemExit(problem)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-view-"))
    try:
        started = time.perf_counter()
        run_dir = root / "run"
        # in a child process, so this one's peak RSS is the build's
        subprocess.run([sys.executable, "-m", "tests.synthetic_run", str(run_dir), "--trajectories", str(args.trajectories)],
                       check=True, stdout=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[1])
        print(f"synthetic run dir: {args.trajectories} trajectories in {time.perf_counter() - started:.1f} s, "
              f"trajectories.jsonl {(run_dir / 'trajectories.jsonl').stat().st_size / 1e6:.1f} MB, "
              f"all files {sum(p.stat().st_size for p in run_dir.iterdir()) / 1e6:.1f} MB")
        report = root / "report.html"
        for name, seconds in build(run_dir, report).items():
            print(f"build {name:32s} {seconds:6.2f} s")
        print(f"report size {report.stat().st_size / 1e6:.1f} MB; peak RSS of the build {peak_rss_mb():.0f} MB")
        results = asyncio.run(measure(report, args.loads, args.trajectories))
        print(f"in headless Chromium (file://), median of {args.loads} loads [min-max]:")
        for name, values in results.items():
            print(f"  {name:36s} {statistics.median(values):8.1f}   [{min(values):.1f}-{max(values):.1f}]")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
