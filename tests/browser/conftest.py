"""Fixtures of the console's browser tests: a real cluster behind a real
gateway (tests/integration/gateway_support.py: coordinator + worker on a real
nats-server, tokens and a policy), one Chromium per module driven by
Playwright, a fresh browser context (cookies, storage) per test.

Chromium is Debian's (``apt-get install chromium``, /usr/bin/chromium or
``AGENTICFLOW_CHROMIUM``); the ``playwright`` package only drives it, so no
browser download is needed. test_console.py skips itself when either is
missing.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agenticflow.cluster.nats_server import NatsServer
from tests.conftest import unique_prefix
from tests.integration.gateway_support import Env, start_env
from tests.support.browser import chromium, watched

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
async def env(
    nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Env]:
    """The cluster and its gateway (serving the console), for the module."""
    started = await start_env(
        nats_server.url, unique_prefix("web"), tmp_path_factory.mktemp("console")
    )
    async with started.stack:
        yield started


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the module."""
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh context (no cookie, no storage) for one test."""
    fresh = await browser.new_context(viewport={"width": 1400, "height": 1000})
    fresh.set_default_timeout(20_000)
    try:
        yield fresh
    finally:
        await fresh.close()


@pytest.fixture
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    """A page on which an uncaught script error or a CSP violation (the page
    breaking its own policy) fails the test."""
    async with watched(await context.new_page()) as opened:
        yield opened


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the tests write screenshots (``AGENTICFLOW_SCREENSHOTS``)."""
    folder = Path(os.environ.get("AGENTICFLOW_SCREENSHOTS", REPO / "build" / "console-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
