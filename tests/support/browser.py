"""Driving Debian's Chromium with Playwright, for the console's browser tests
(tests/browser) and the attacks that need a real browser (tests/security).

Chromium is Debian's (``apt-get install chromium``, /usr/bin/chromium or
``AGENTICFLOW_CHROMIUM``); the ``playwright`` package only drives it, so no
browser download is needed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = os.environ.get("AGENTICFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
WATCH_CSP = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""
"""Run before the page's own scripts: notes every CSP violation."""


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium, closed on exit."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@contextlib.asynccontextmanager
async def watched(page: Page) -> AsyncIterator[Page]:
    """``page``, on which an uncaught script error or a CSP violation (the
    page breaking its own policy) fails the test on exit."""
    await page.add_init_script(WATCH_CSP)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    assert not errors, f"uncaught errors in the page: {errors}"
    if not page.is_closed() and page.url.startswith("http"):
        violations = await page.evaluate("window.__violations || []")
        assert violations == [], f"CSP violations: {violations}"
