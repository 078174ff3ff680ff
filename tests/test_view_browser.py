"""The report in a real browser: headless Chromium (Debian's chromium) driven by Playwright opens the report
of a fixture run, filters, opens a trajectory and checks what is shown; hostile text must not run.
Screenshots are kept as test artifacts (listed at the end of the pytest run)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from synth.view.diff import state_diff
from synth.view.page import write_report
from synth.view.summary import reason_kind
from tests.browser import browser_context, missing
from tests.synthetic_run import write_synthetic_run

pytestmark = pytest.mark.browser
ESSENTIAL = "essential criterion failed"
# Before the page's script runs: record what a successful injection would leave behind.
WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", e => window.__csp.push(e.violatedDirective + " " + e.blockedURI));
"""


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory):
    if problem := missing():
        pytest.fail(problem)  # CI installs both: a missing browser is a failure, never a skip
    root = write_synthetic_run(tmp_path_factory.mktemp("browser") / "run", 260, seed=7, hostile=True, future=True)
    return root, write_report(root)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
async def page():
    async with browser_context() as context:
        await context.add_init_script(WATCH)
        page = await context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
        page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
        page.problems = problems
        yield page
        assert problems == []
        assert await page.evaluate("window.__csp") == []  # nothing was even attempted
        assert await page.evaluate("window.__pwned") is None


async def open_report(page, report: Path, hash_: str = "") -> None:
    await page.goto(report.as_uri() + hash_)
    await page.wait_for_selector("html[data-ready]")


def pick_target(root: Path) -> tuple[dict, dict, dict]:
    """A dropped trajectory with an essential criterion failed, a tool error, an injected fault and a state change."""
    tasks = {t["id"]: t for t in lines(root / "tasks.jsonl")}
    verdicts = {v["trajectory_id"]: v for v in lines(root / "verdicts.jsonl")}
    for trajectory in lines(root / "trajectories.jsonl")[1:]:  # [0] carries the hostile payloads
        verdict = verdicts.get(trajectory["id"])
        calls = trajectory["tool_calls"]
        if (verdict and not verdict["keep"] and any(r.startswith(ESSENTIAL) for r in verdict["reasons"])
                and any(c["fault"] for c in calls) and any(c["is_error"] and not c["fault"] for c in calls)
                and state_diff(tasks[trajectory["task_id"]]["initial_state"], trajectory["final_state"])[0]):
            return trajectory, verdict, tasks[trajectory["task_id"]]
    raise AssertionError("the fixture run has no trajectory with every feature the test looks at: change its seed")


async def test_filter_open_a_trajectory_and_see_its_verdicts_calls_errors_and_state_diff(fixture_run, page, tmp_path, artifact):
    root, report = fixture_run
    trajectory, verdict, task = pick_target(root)
    verdicts = lines(root / "verdicts.jsonl")
    dropped_essential = [v for v in verdicts if not v["keep"] and ESSENTIAL in {reason_kind(r) for r in v["reasons"]}]
    await open_report(page, report)
    assert "trajectories" in await page.inner_text("#card-funnel")

    await page.click('nav [data-tab="trajectories"]')
    await page.select_option("#f-kept", "dropped")
    await page.select_option("#f-reason", ESSENTIAL)
    assert f"of {len(dropped_essential)} " in await page.inner_text(".pager")
    assert await page.locator("#trajectory-list tbody tr").count() == min(100, len(dropped_essential))
    await page.fill("#f-text", trajectory["id"])
    assert await page.locator("#trajectory-list tbody tr").count() == 1
    await page.click("#trajectory-list tbody tr")
    shown = page.locator(f'.trajectory[data-id="{trajectory["id"]}"]')
    await shown.wait_for()

    # the verdict per criterion, with its reason
    rows = shown.locator("table.rubric tbody tr")
    assert await rows.count() == len(task["rubric"]) == 8
    for result in verdict["results"]:
        row = shown.locator(f'table.rubric tr[data-index="{result["index"]}"]')
        kind = task["rubric"][result["index"]]["kind"]
        expected = ({True: "happened", False: "avoided"} if kind == "pitfall" else {True: "pass", False: "fail"})[result["passed"]]
        cells = await row.locator("td").all_inner_texts()
        assert expected in cells and result["reason"] in cells and f"turn {result['turn']}" in cells
    # the checks, failed ones marked
    failed = sorted(name for name, ok in verdict["checks"].items() if not ok)
    assert sorted(await shown.locator(".check.bad").evaluate_all("els => els.map(e => e.dataset.check)")) == failed
    # tool calls with their arguments and results; errors and injected faults marked
    calls = trajectory["tool_calls"]
    assert await shown.locator(".call").count() == len(calls)
    first = shown.locator(f'.call[data-call="{calls[0]["call_id"]}"]')
    assert await first.locator(".fn").inner_text() == calls[0]["name"]
    assert await first.locator(".result").inner_text() == calls[0]["result"]
    assert await shown.locator(".call .err-mark").count() == sum(c["is_error"] for c in calls)
    faults = [c["fault"] for c in calls if c["fault"]]
    assert await shown.locator(".fault-mark").all_inner_texts() == [f"injected fault: {f}" for f in faults]
    # the final state's diff from the task's initial state
    changes, _ = state_diff(task["initial_state"], trajectory["final_state"])
    assert await shown.locator("table.diff td.path").all_inner_texts() == [c["path"] for c in changes]
    # the system prompt and each turn of the conversation
    assert trajectory["messages"][0]["content"] == await shown.locator(".msg.system .content").text_content()
    assert await shown.locator(".msg.user").count() == trajectory["turns"]

    # the turn a criterion cites: its link scrolls the detail pane to that user turn
    cited = max(verdict["results"], key=lambda r: r["turn"])
    await shown.locator(f'table.rubric tr[data-index="{cited["index"]}"] a.turn-link').click()
    target = shown.locator(f'.msg.user[data-turn="{cited["turn"]}"]')
    await page.wait_for_timeout(100)
    assert "flash" in await target.get_attribute("class")
    box, pane = await target.bounding_box(), await page.locator("#detail").bounding_box()
    assert pane["y"] - 1 <= box["y"] <= pane["y"] + pane["height"]
    await shown.locator("details.sect").first.scroll_into_view_if_needed()
    await page.locator("#detail").evaluate("d => d.scrollTop = 0")

    screenshot = tmp_path / "trajectory.png"
    await page.screenshot(path=str(screenshot))
    print(f"screenshot: {artifact(screenshot)}")
    # the state is in the URL: a reload shows the same list and trajectory
    assert trajectory["id"] in page.url
    await page.reload()
    await page.wait_for_selector("html[data-ready]")
    await page.locator(f'.trajectory[data-id="{trajectory["id"]}"]').wait_for()
    assert await page.input_value("#f-reason") == ESSENTIAL


async def test_hostile_text_in_messages_results_and_state_is_shown_and_never_runs(fixture_run, page, artifact, tmp_path):
    from playwright.async_api import expect  # imported here: without playwright, the fixture's message says what to install

    root, report = fixture_run
    hostile = lines(root / "trajectories.jsonl")[0]
    await open_report(page, report, f"#trajectories?t={hostile['id']}")
    shown = page.locator(f'.trajectory[data-id="{hostile["id"]}"]')
    await shown.wait_for()
    conversation = await shown.locator(".conversation").inner_text()
    assert "<script>window.__pwned = 1</script>" in conversation and '<img src=x onerror="window.__pwned = 2">' in conversation
    assert await page.locator("main img, main script, main iframe").count() == 0
    # the other tabs with planted text: errors (message + raw reply), tasks (goal)
    await page.click('nav [data-tab="errors"]')
    await page.click("#tab-errors tbody tr")
    await expect(page.locator("#error-detail .error")).to_contain_text("<script>window.__pwned")
    await page.click('nav [data-tab="tasks"]')
    await page.fill("#t-text", "window.__pwned")
    await page.click("#tab-tasks tbody tr")
    await expect(page.locator("#task-detail .task")).to_contain_text("<script>window.__pwned")
    await page.wait_for_timeout(200)  # an onerror would fire by now

    # a task with gold actions and assertions shows them
    gold = next(t for t in lines(root / "tasks.jsonl") if t["validated"])
    await page.fill("#t-text", gold["id"])
    await page.click("#tab-tasks tbody tr")
    shown = page.locator(f'#task-detail .task[data-id="{gold["id"]}"]')
    await shown.wait_for()
    assert await shown.locator("ol.gold li .fn").all_inner_texts() == [a["tool"] for a in gold["gold_actions"]]
    assert await shown.locator("td.path").all_inner_texts() == [a["path"] for a in gold["assertions"]]
    assert await shown.locator("text=validated").count() >= 1
    await page.screenshot(path=str(tmp_path / "task.png"))
    artifact(tmp_path / "task.png")


async def test_overview_links_filter_the_list_and_pages_stay_short(fixture_run, page, artifact, tmp_path):
    from playwright.async_api import expect

    root, report = fixture_run
    trajectories = lines(root / "trajectories.jsonl")
    verdicts = lines(root / "verdicts.jsonl")
    await open_report(page, report)
    await page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)
    artifact(tmp_path / "overview.png")
    below = sum(1 for v in verdicts if "score below threshold" in {reason_kind(r) for r in v["reasons"]})
    await page.click('#card-reasons tr[data-reason="score below threshold"]')
    assert await page.is_visible("#tab-trajectories")
    assert f"of {below} " in await page.inner_text(".pager")
    assert "reason=score" in page.url

    await page.click("text=reset")
    assert f"of {len(trajectories)} " in await page.inner_text(".pager")
    assert await page.locator("#trajectory-list tbody tr").count() == 100  # one page in the DOM, not 260 rows
    await page.click("text=next ›")
    await page.click("text=next ›")
    assert re.search(r"201–260 of 260", await page.inner_text(".pager"))
    last = trajectories[-1]
    await page.click(f'#trajectory-list tr[data-i="{len(trajectories) - 1}"]')  # in the last chunk
    await page.locator(f'.trajectory[data-id="{last["id"]}"]').wait_for()
    # keyboard: k goes to the previous one
    await page.keyboard.press("k")
    await page.locator(f'.trajectory[data-id="{trajectories[-2]["id"]}"]').wait_for()
    # a criterion citing a turn the conversation does not have says so instead of linking nowhere
    odd = lines(root / "verdicts.jsonl")[0]
    await page.fill("#f-text", odd["trajectory_id"])
    await page.click("#trajectory-list tbody tr")
    cell = page.locator(f'.trajectory[data-id="{odd["trajectory_id"]}"] table.rubric tr[data-index="0"] td:last-child')
    await expect(cell).to_have_text("turn 120 (not in the conversation)")
    # "search messages" finds a word that only occurs inside a tool result
    await page.fill("#f-text", "tokens_left")
    assert "none match" in await page.inner_text(".pager")
    await page.check("#f-deep")
    await expect(page.locator("#deep-status")).to_contain_text(" ms")  # (wait_for_function would need unsafe-eval)
    assert f"of {len(trajectories)} " in await page.inner_text(".pager")  # every trajectory has the field


async def test_synth_view_serve_answers_the_browser_on_loopback(fixture_run, page, tmp_path):
    root, _ = fixture_run
    server = subprocess.Popen([sys.executable, "-m", "cli", "view", str(root), "--out", str(tmp_path / "r.html"), "--serve"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    try:
        url = None
        for line in server.stderr:
            if match := re.search(r"serving on (http://127\.0\.0\.1:\d+/)", line):
                url = match[1]
                break
        assert url, "synth view --serve printed no URL"
        assert server.stdout.readline().strip() == str(tmp_path / "r.html")
        await page.goto(url)
        await page.wait_for_selector("html[data-ready]")
        await page.click('nav [data-tab="trajectories"]')
        await page.click("#trajectory-list tbody tr:nth-child(2)")
        await page.locator(".trajectory table.rubric").wait_for()
    finally:
        server.terminate()
        server.wait(timeout=10)


async def test_a_run_written_by_the_pipeline_shows_executable_calls_and_judge_samples(page, tmp_path, artifact):
    """tests/fixtures/runs/resume: real stage output (executable and simulated rollouts, 2 judge samples)."""
    from playwright.async_api import expect

    if problem := missing():
        pytest.fail(problem)
    root = Path(__file__).parent / "fixtures" / "runs" / "resume"
    report = write_report(root, tmp_path / "report.html")
    trajectory = next(t for t in lines(root / "trajectories.jsonl")
                      if any(c["fault"] for c in t["tool_calls"]) and "notes" in t["final_state"])
    verdict = next(v for v in lines(root / "verdicts.jsonl") if v["trajectory_id"] == trajectory["id"])
    await open_report(page, report, f"#trajectories?t={trajectory['id']}")
    shown = page.locator(f'.trajectory[data-id="{trajectory["id"]}"]')
    await shown.wait_for()
    assert set(await shown.locator(".call .rt").all_inner_texts()) == {"executable"}
    tallies = await shown.locator("table.rubric tbody tr td:nth-child(6)").all_inner_texts()
    assert tallies == [f"{sum(any(r['index'] == i and r['passed'] for r in s['results']) for s in verdict['samples'])}/2"
                       for i in range(len(verdict["results"]))]
    await expect(shown.locator("ul.reasons")).to_contain_text(verdict["reasons"][0])
    await page.screenshot(path=str(tmp_path / "pipeline-trajectory.png"))
    artifact(tmp_path / "pipeline-trajectory.png")
