"""axe-core (vendored from the npm registry: tests/vendor/axe-*.min.js) over every state of the page,
in Debian's Chromium: empty, streaming, finished, error, dark theme, JavaScript off, sign-in."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live_server import LiveServer, app_environment

CHROMIUM = "/usr/bin/chromium"
AXE = Path(__file__).parent / "vendor" / "axe-4.14.1.min.js"
RULES = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
ANSWER = ["# A title\n\n", "Some **bold** and a [link](https://example.com).\n\n", "- one\n- two\n\n",
          "```python\nprint('hi')\n```\n\n", "| a | b |\n|---|---|\n| 1 | 2 |\n"]

if shutil.which("chromium") is None:
    if os.environ.get("CHATAPP_REQUIRE_BROWSER"):
        raise RuntimeError("CHATAPP_REQUIRE_BROWSER is set but Debian's chromium is not installed")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                             "--disable-background-networking", "--disable-component-update"])
        yield browser
        browser.close()


def violations(page: Page) -> list[tuple[str, str, str]]:
    """axe's findings for the page as it is now. axe is added by the test (the page's CSP is
    bypassed for that alone); the app's own scripts run, or not, as they would for a person."""
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(f"async () => (await axe.run(document, {{runOnly: {RULES}}})).violations"
                          ".map(v => [v.id, v.help, v.nodes[0].target.join(' ')])")
    return [tuple(v) for v in found]


def _server(tmp_path: Path, fake: FakeOpenAI, **env: str) -> LiveServer:
    return LiveServer(app_environment(fake.base_url, tmp_path / "chat.db", **env), tmp_path / "server.log")


@pytest.mark.parametrize(("scheme", "width"), [("light", 1100), ("dark", 1100), ("light", 360)])
def test_every_state_of_the_chat_page_has_no_violations(browser: Browser, tmp_path: Path,
                                                       fake_upstream: FakeOpenAI, scheme: str, width: int) -> None:
    server = _server(tmp_path, fake_upstream)
    try:
        context = browser.new_context(bypass_csp=True, color_scheme=scheme, viewport={"width": width, "height": 800})
        page = context.new_page()
        page.goto(server.url + "/")
        assert violations(page) == [], "empty page"

        fake_upstream.script(Reply(tokens=ANSWER * 20, delay=0.03))
        page.fill("#composer textarea[name=message]", "Show me everything")
        page.keyboard.press("Enter")
        page.locator("article[data-role=assistant][aria-busy=true]").wait_for()
        time.sleep(0.5)
        assert violations(page) == [], "while streaming"
        page.locator("article[data-role=assistant][aria-busy=false]").wait_for(timeout=20_000)
        assert violations(page) == [], "finished"

        fake_upstream.script(Reply(status=500))
        page.fill("#composer textarea[name=message]", "And now an error")
        page.keyboard.press("Enter")
        page.locator("article[data-role=assistant] [data-role=error]").wait_for()
        assert violations(page) == [], "error"
        page.reload()
        page.click("details.conversation-settings summary")
        assert violations(page) == [], "reloaded, with the settings open"
        context.close()
    finally:
        server.stop()


def test_the_page_without_javascript_has_no_violations(browser: Browser, tmp_path: Path,
                                                      fake_upstream: FakeOpenAI) -> None:
    fake_upstream.default = Reply(tokens=ANSWER)
    server = _server(tmp_path, fake_upstream)
    try:
        context = browser.new_context(bypass_csp=True)
        page = context.new_page()
        page.route("**/static/**/*.js*", lambda route: route.abort())  # the app's scripts: off
        page.goto(server.url + "/")
        page.fill("#composer textarea[name=message]", "No scripts")
        with page.expect_navigation():
            page.click("#composer button[type=submit]")
        page.locator("article[data-role=assistant][aria-busy=false]").wait_for()
        assert violations(page) == []
        context.close()
    finally:
        server.stop()


def test_the_sign_in_page_has_no_violations(browser: Browser, tmp_path: Path, fake_upstream: FakeOpenAI) -> None:
    server = _server(tmp_path, fake_upstream, CHATAPP_PASSWORD="letmein")
    try:
        context = browser.new_context(bypass_csp=True)
        page = context.new_page()
        page.goto(server.url + "/")
        assert page.url.endswith("/login")
        assert violations(page) == []
        page.fill("#password", "wrong")
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert violations(page) == [], "with the error shown"
        context.close()
    finally:
        server.stop()
