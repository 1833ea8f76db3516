"""The dashboard in a real browser: Debian's Chromium, driven headless by playwright.

Highway runs in this process (offline mode, SQLite, an API key); the browser enters the key,
presses "Simulated call", and watches the call's status and transcript arrive live. The
screenshots are kept under test-output/ (or $HIGHWAY_TEST_OUTPUT) for people to look at.

playwright's sync API runs in a worker thread: its async API needs asyncio, and the server
runs under Trio in this thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from playwright.sync_api import Browser, Page, expect, sync_playwright

from highway.app import create_app
from highway.config import Settings
from highway.testing.serving import serve_on_loopback

CHROMIUM = Path(os.environ.get("HIGHWAY_CHROMIUM", "/usr/bin/chromium"))
OUTPUT = Path(os.environ.get("HIGHWAY_TEST_OUTPUT", Path(__file__).parents[1] / "test-output"))
# No background traffic: this machine has no internet, and the test needs none.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY = "browser-test-key-7c2d"
# A simulated call lasts a few seconds; a busy CI machine may take several times longer.
CALL_TIMEOUT_MS = 60_000
STEP_TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} not found: CI must install Debian's chromium (.ci/run)")
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium or set HIGHWAY_CHROMIUM")
    return CHROMIUM


@pytest.fixture
def browser_settings(clean_env: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        HIGHWAY_DATABASE_URL=f"sqlite:///{clean_env / 'highway.db'}",
        HIGHWAY_API_KEY=API_KEY,
    )


def open_browser(chromium: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


def watch_for_errors(page: Page) -> list[str]:
    """Script errors and console errors, CSP violations included."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    return problems


def run_a_simulated_call(chromium: Path, base_url: str) -> list[str]:
    """On a laptop-sized window: enter the key, start a simulated call, see it through."""
    for browser in open_browser(chromium):
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        problems = watch_for_errors(page)
        page.goto(base_url + "/")
        connection = page.get_by_test_id("connection")
        # No key yet: the event stream refuses, and the page says so.
        expect(connection).to_have_attribute("data-state", "rejected", timeout=STEP_TIMEOUT_MS)

        page.get_by_test_id("api-key").fill(API_KEY)
        page.get_by_test_id("api-key").press("Enter")
        expect(connection).to_have_attribute("data-state", "live", timeout=STEP_TIMEOUT_MS)

        page.get_by_test_id("simulate-call").click()
        status = page.get_by_test_id("selected-status")
        expect(status).to_have_attribute("data-status", "in-progress", timeout=CALL_TIMEOUT_MS)
        transcript = page.get_by_test_id("transcript")
        agent = transcript.locator("[data-testid=transcript-line][data-role=agent]")
        customer = transcript.locator("[data-testid=transcript-line][data-role=customer]")
        expect(agent.first).to_be_visible(timeout=CALL_TIMEOUT_MS)
        expect(customer.first).to_be_visible(timeout=CALL_TIMEOUT_MS)
        page.screenshot(path=OUTPUT / "dashboard-live-call.png")

        expect(status).to_have_attribute("data-status", "completed", timeout=CALL_TIMEOUT_MS)
        row = page.get_by_test_id("call-row").first
        expect(row.get_by_test_id("call-status")).to_have_attribute("data-status", "completed")
        page.screenshot(path=OUTPUT / "dashboard.png")
        lines = agent.all_inner_texts() + customer.all_inner_texts()

        # The same page on a phone: everything fits the width.
        phone = browser.new_page(viewport={"width": 375, "height": 812}, is_mobile=True)
        problems += watch_for_errors(phone)
        phone.add_init_script(f"localStorage.setItem('highway.apiKey', '{API_KEY}')")
        phone.goto(base_url + "/")
        expect(phone.get_by_test_id("connection")).to_have_attribute("data-state", "live")
        expect(phone.get_by_test_id("call-row").first).to_be_visible()
        width = phone.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        phone.screenshot(path=OUTPUT / "dashboard-phone.png", full_page=True)
        assert width[0] <= width[1], f"horizontal scrolling on a phone: {width}"
        # A refused key, while signed out, is expected; nothing else may go wrong.
        unexpected = [p for p in problems if "401" not in p and "1008" not in p]
        assert unexpected == []
        return lines
    raise AssertionError("unreachable")


async def test_a_simulated_call_shows_live_in_the_browser(
    chromium: Path, browser_settings: Settings
) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    async with serve_on_loopback(create_app(browser_settings)) as base_url:
        lines = await trio.to_thread.run_sync(run_a_simulated_call, chromium, base_url)

    assert any("offline agent" in line for line in lines), lines
    assert (OUTPUT / "dashboard.png").stat().st_size > 10_000
    print(f"dashboard screenshots: {OUTPUT}")
