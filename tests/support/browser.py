"""Debian's Chromium through Playwright: one launch for the tests that drive a browser, and for the
screenshot script.

The tests reach it through fixtures (tests/conftest.py loads this module as a plugin):

    browser   Chromium, one per test file; a test that asks for it is marked `browser`
    new_page  new_page(**context options) -> a page in a context of its own, closed after the test

Without Chromium or Playwright those tests are skipped, unless CHATAPP_REQUIRE_BROWSER is set (as in
CI), where a missing browser must fail the run rather than pass it quietly.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = "/usr/bin/chromium"
# No sandbox (containers have no user namespaces); nothing in the background that could reach out.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REQUIRE = "CHATAPP_REQUIRE_BROWSER"
# What the new_page fixture is: call it with Playwright's context options, get a page.
NewPage = Callable[..., "Page"]


def missing() -> str | None:
    """Why the browser tests cannot run here, or None if they can."""
    if not Path(CHROMIUM).exists():
        return f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (pip install playwright)"
    return None


@contextmanager
def chromium() -> Iterator[Browser]:
    """Chromium, launched for the length of the block."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that drives the browser carries the marker, so `-m browser` (or `-m "not browser"`)
    selects exactly those; and they run last, after every asyncio test. While Playwright's sync API
    is up, its event loop counts as running in this thread, and pytest-asyncio could not start a
    loop for an async test: the browser must be closed before the next one."""
    for item in items:
        if _drives_a_browser(item):
            item.add_marker(pytest.mark.browser)
    items.sort(key=_drives_a_browser)  # stable: the order within each group is kept


def _drives_a_browser(item: pytest.Item) -> bool:
    return "browser" in getattr(item, "fixturenames", ())


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium, launched once for a test file's browser tests, each test working in contexts of its
    own (new_page). Per file, not per session: a file may still start Playwright by itself, which it
    cannot do while another instance is up."""
    reason = missing()
    if reason is not None:
        if os.environ.get(REQUIRE):
            pytest.fail(f"{REQUIRE} is set but {reason}", pytrace=False)
        pytest.skip(reason)
    with chromium() as launched:
        yield launched


@pytest.fixture
def new_page(browser: Browser) -> Iterator[NewPage]:
    """Opens a page in a fresh context (cookies, storage and options of its own); all closed after
    the test, even one that failed half way."""
    contexts: list[BrowserContext] = []

    def open_page(**context_options: object) -> Page:
        context = browser.new_context(**context_options)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


def send(page: Page, message: str, *, javascript: bool = True) -> None:
    """Write a message in the composer and send it as a person would: Enter with JavaScript on, the
    button without (which loads the streamed answer page)."""
    page.fill("#composer textarea[name=message]", message)
    if javascript:
        page.keyboard.press("Enter")
        return
    with page.expect_navigation():
        page.click("#composer button[type=submit]")


def save_settings(page: Page, field: str, value: str) -> None:
    """In a conversation's page (the one the last send went to), open its settings, set one field
    (`#title`, `#system-prompt`) and save them: a form post, so it works without JavaScript."""
    page.goto(page.url.removesuffix("/messages"))
    page.click("details.conversation-settings summary")
    page.fill(field, value)
    with page.expect_navigation():
        page.click("form.settings button[type=submit]")
