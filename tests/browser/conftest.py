"""Browser fixtures: Debian's chromium driven by Playwright (never a downloaded browser), one
per test module; a fresh context (own cookies) per test that saves a screenshot under the
test's tmp dir and fails the test when a page broke its Content-Security-Policy or threw."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

CHROMIUM = os.environ.get("AGENT_RUNTIME_CHROMIUM", "/usr/bin/chromium")
# Deadlines of Playwright's auto-retrying assertions and actions (not durations: they return as
# soon as the condition holds), generous for a loaded 2-core CI machine.
expect.set_options(timeout=20_000)
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Module-scoped, not session: while Playwright's sync API is started, its event loop is
    the thread's running loop, so every later test of the same process that runs a loop of
    its own (anyio.run, the anyio pytest plugin) fails with "Cannot run the event loop while
    another loop is running". Stopped at the end of the module, it leaves the process clean."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"no chromium at {CHROMIUM}: the browser tests need Debian's chromium package "
            "(apt-get install chromium; .ci/run installs it) or AGENT_RUNTIME_CHROMIUM",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-GB")
    context.set_default_timeout(30_000)
    problems: list[str] = []
    opened = context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            problems.append(message.text)

    context.on("console", on_console)
    context.on("weberror", lambda error: problems.append(f"uncaught: {error.error}"))
    yield opened
    for index, each in enumerate(context.pages):
        each.screenshot(path=tmp_path / f"final-{index}.png", full_page=True)
    context.close()
    assert problems == [], "the page broke its CSP or threw"
