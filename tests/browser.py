"""Debian's Chromium driven by Playwright, for the page tests: `pytest_plugins = ("tests.browser",)`
gives the `browser` fixture; opened() loads the page of a running carescore and records its script
and console errors (page.errors); shot() names a screenshot under test-artifacts/
(CARESCORE_TEST_ARTIFACTS puts them elsewhere)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from carescore.serve import Service
from connectors.hl7v2.client import MLLPClient, ack_code
from engine.config import REPO_ROOT, Settings

playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect

CHROMIUM = Path("/usr/bin/chromium")  # Debian's (make system-deps), never `playwright install`
ARTIFACTS = Path(os.environ.get("CARESCORE_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))
WAIT = 20_000  # ms: the page polls every 5 s; a condition not met in 20 s is a failure


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is absent: `make system-deps` installs Debian's chromium")
    async with playwright_api.async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def running(
    settings_for: Callable[..., Settings], kpi_dir: Callable[..., Path]
) -> AsyncIterator[Service]:
    """A carescore whose STAT turnaround alert fires after 1 s and 3 results (the shipped `for`
    and p90 sample are long), for the page tests that make an alert over MLLP."""
    svc = Service(settings_for(kpi_defs=kpi_dir({"lab_tat_stat": {"for": "1s", "min_samples": 3}})))
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


def shot(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / f"{name}.png"


async def send(svc: Service, *messages: str) -> None:
    async with MLLPClient("127.0.0.1", svc.mllp.port) as client:
        for message in messages:
            assert ack_code(await client.send(message)) == "AA"


async def opened(browser: Any, svc: Service, **context: Any) -> Any:
    page = await (await browser.new_context(**context)).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # and what the console reports as errors: a CSP refusal (uPlot's styles, a script), a failed request
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.errors = errors
    await page.goto(f"http://127.0.0.1:{svc.api_port}/")
    await expect(page.get_by_role("combobox", name="Place")).to_be_visible()
    return page


async def drawn(page: Any) -> None:
    """Wait until the history chart has drawn (uPlot commits its scales after a microtask:
    read before that, a scale may still be the data's own extent)."""
    await page.wait_for_function(
        "() => { const s = window.carescoreHistory.state; return s.chart !== null && s.drawn === s.chart; }"
    )
