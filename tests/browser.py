"""Headless Chromium (Debian's `chromium`) driven by Playwright, for the viewer's browser tests and bench/view.py.

Playwright's own browser download is never used (`playwright install` cannot reach the network here):
the system binary is launched with flags that keep it off the network, with a fresh profile.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import asynccontextmanager
from typing import AsyncIterator

CHROMIUM = os.environ.get("SYNTH_CHROMIUM", "/usr/bin/chromium")
# As root Chromium needs --no-sandbox; the rest stop it from calling home on a closed network.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def missing() -> str | None:
    """Why no browser test can run here, or None."""
    if not shutil.which(CHROMIUM):
        return f"{CHROMIUM} not found: install Debian's chromium (scripts/install.sh does: apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[test]' (scripts/install.sh does)"
    return None


@asynccontextmanager
async def browser_context(width: int = 1500, height: int = 950) -> AsyncIterator[object]:
    """A persistent Chromium context with a fresh user-data dir, removed afterwards."""
    from playwright.async_api import async_playwright

    profile = tempfile.mkdtemp(prefix="synth-chromium-")
    try:
        async with async_playwright() as p:
            context = await p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=FLAGS, headless=True, viewport={"width": width, "height": height})
            try:
                yield context
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
