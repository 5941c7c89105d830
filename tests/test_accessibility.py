"""axe-core (vendored from the npm registry: tests/vendor/axe-*.min.js) over every state of the page,
in Debian's Chromium: empty, streaming, finished, error, dark theme, JavaScript off, sign-in."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.browser import NewPage, send
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live_server import LiveServer

if TYPE_CHECKING:  # Playwright itself is imported only when a browser starts (tests/support/browser.py)
    from playwright.sync_api import Page

AXE = Path(__file__).parent / "vendor" / "axe-4.14.1.min.js"
RULES = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
ANSWER = ["# A title\n\n", "Some **bold** and a [link](https://example.com).\n\n", "- one\n- two\n\n",
          "```python\nprint('hi')\n```\n\n", "| a | b |\n|---|---|\n| 1 | 2 |\n"]


def violations(page: Page) -> list[tuple[str, str, str]]:
    """axe's findings for the page as it is now. axe is added by the test (the page's CSP is
    bypassed for that alone); the app's own scripts run, or not, as they would for a person."""
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(f"async () => (await axe.run(document, {{runOnly: {RULES}}})).violations"
                          ".map(v => [v.id, v.help, v.nodes[0].target.join(' ')])")
    return [tuple(v) for v in found]


@pytest.mark.parametrize(("scheme", "width"), [("light", 1100), ("dark", 1100), ("light", 360)])
def test_every_state_of_the_chat_page_has_no_violations(new_page: NewPage, live_server: LiveServer,
                                                       fake_upstream: FakeOpenAI, scheme: str, width: int) -> None:
    page = new_page(bypass_csp=True, color_scheme=scheme, viewport={"width": width, "height": 800})
    page.goto(live_server.url + "/")
    assert violations(page) == [], "empty page"

    fake_upstream.script(Reply(tokens=ANSWER * 20, delay=0.03))
    send(page, "Show me everything")
    page.locator("article[data-role=assistant][aria-busy=true]").wait_for()
    time.sleep(0.5)
    assert violations(page) == [], "while streaming"
    page.locator("article[data-role=assistant][aria-busy=false]").wait_for(timeout=20_000)
    assert violations(page) == [], "finished"

    fake_upstream.script(Reply(tokens=["A second ", "answer."]))
    page.click("article[data-role=assistant] button[form=regenerate-form]")
    page.locator("article[data-role=assistant] form.versions").wait_for()
    assert violations(page) == [], "regenerated: two answers to switch between"

    fake_upstream.script(Reply(status=500))
    send(page, "And now an error")
    page.locator("article[data-role=assistant] [data-role=error]").wait_for()
    assert violations(page) == [], "error"
    page.reload()
    page.click("details.conversation-settings summary")
    assert violations(page) == [], "reloaded, with the settings open"

    fake_upstream.script(Reply(tokens=["slow "] * 200, delay=0.05))
    send(page, "A long one")
    page.locator("article[data-role=assistant][aria-busy=true]").wait_for()
    page.reload()  # found being written: followed, with a Stop of its own
    page.locator("article[data-role=assistant][aria-busy=true] form.stop-form").wait_for()
    assert violations(page) == [], "reloaded mid-answer"


def test_the_page_without_javascript_has_no_violations(new_page: NewPage, live_server: LiveServer,
                                                      fake_upstream: FakeOpenAI) -> None:
    fake_upstream.default = Reply(tokens=ANSWER)
    page = new_page(bypass_csp=True)
    page.route("**/static/**/*.js*", lambda route: route.abort())  # the app's scripts: off
    page.goto(live_server.url + "/")
    send(page, "No scripts", javascript=False)
    page.locator("article[data-role=assistant][aria-busy=false]").wait_for()
    assert violations(page) == []


def test_the_sign_in_page_has_no_violations(new_page: NewPage, make_live_server: Callable[..., LiveServer]) -> None:
    server = make_live_server(CHATAPP_PASSWORD="letmein")
    page = new_page(bypass_csp=True)
    page.goto(server.url + "/")
    assert page.url.endswith("/login")
    assert violations(page) == []
    page.fill("#password", "wrong")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert violations(page) == [], "with the error shown"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_reasoning_block_has_no_violations_open_or_closed(new_page: NewPage, live_server: LiveServer,
                                                            fake_upstream: FakeOpenAI, scheme: str) -> None:
    page = new_page(bypass_csp=True, color_scheme=scheme)
    page.goto(live_server.url + "/")
    fake_upstream.script(Reply(reasoning=ANSWER * 3, reasoning_delay=0.05, tokens=ANSWER, delay=0.05))
    send(page, "Think first")
    page.locator("article[data-role=assistant] details.thinking.live[open]").wait_for()
    time.sleep(0.3)
    assert violations(page) == [], "thinking, open"
    page.locator("article[data-role=assistant][aria-busy=false]").wait_for(timeout=20_000)
    thinking = page.locator("article[data-role=assistant] details.thinking")
    assert thinking.get_attribute("open") is None
    assert violations(page) == [], "done, closed"
    thinking.locator("summary").click()
    assert thinking.get_attribute("open") is not None
    assert violations(page) == [], "done, opened by the reader"
