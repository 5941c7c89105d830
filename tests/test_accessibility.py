"""axe-core (vendored from the npm registry: tests/vendor/axe-*.min.js) over every state of the page,
in Debian's Chromium: empty, streaming, finished, error, dark theme, JavaScript off, sign-in; and the
people pages (sign-in, sign-up, invitation, reset, account, claim, admin, single sign-on)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from chatapp.accounts import HEADER, Accounts
from tests.support.browser import NewPage, send
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live_server import LiveServer
from tests.support.people import PASSWORD, with_accounts

if TYPE_CHECKING:  # Playwright itself is imported only when a browser starts (tests/support/browser.py)
    from playwright.sync_api import Page

    from tests.support.oidc import OIDCProvider

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


# --- the people pages (issue 15): signing in, links, the account, the claim, the admin page ---------

def checked(page: Page, new_page: NewPage, scheme: str) -> list[tuple[str, str, str]]:
    """axe's findings for the page, JavaScript on or off. Where it is off axe cannot run either (its
    timers never fire), so the document as it stands is served to a second page, in the same colour
    scheme, whose scripts (the app's) are blocked, and axe runs there."""
    if _javascript_on(page):
        return violations(page)
    html, url = page.content(), page.url
    copy = new_page(bypass_csp=True, color_scheme=scheme)
    copy.route("**/static/**/*.js*", lambda route: route.abort())
    copy.route(url, lambda route: route.fulfill(body=html, content_type="text/html; charset=utf-8"))
    copy.goto(url)
    found = violations(copy)
    copy.context.close()
    return found


def _javascript_on(page: Page) -> bool:
    # app.js marks <html class="js"> when it runs.
    return page.evaluate("() => document.documentElement.classList.contains('js')")


def _submit(page: Page, button: str) -> None:
    """Click a form's button, waiting for the page it loads (without JavaScript, or a form htmx leaves alone)."""
    with page.expect_navigation():
        page.get_by_role("button", name=button).click()


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_people_pages_have_no_violations(new_page: NewPage, make_live_server: Callable[..., LiveServer],
                                             fake_upstream: FakeOpenAI, tmp_path: Path, scheme: str,
                                             javascript: bool) -> None:
    database = tmp_path / "chat.db"
    page = new_page(bypass_csp=True, color_scheme=scheme, java_script_enabled=javascript)

    def check(what: str) -> None:
        assert checked(page, new_page, scheme) == [], what

    # A conversation from before accounts were turned on: the claim page offers it at sign-in.
    anonymous = make_live_server()
    page.goto(anonymous.url + "/")
    send(page, "From before", javascript=javascript)
    page.locator("article[data-role=assistant][aria-busy=false]").wait_for()
    anonymous.stop()

    async def people(accounts: Accounts) -> tuple[str, str]:
        await accounts.create_person("ada", PASSWORD, admin=True, display_name="Ada Lovelace")
        bob = await accounts.create_person("bob", PASSWORD)
        carol = await accounts.person_for_subject(HEADER, "carol@example.org", name="carol")
        await accounts.set_budget(bob.id, 5000)
        await accounts.disable(carol.id)
        await accounts.record("sign-in failed", address="203.0.113.9", detail="name 'mallory'")
        return await accounts.create_invitation(None), await accounts.create_reset(bob.id, None)

    invitation, reset = with_accounts(database, people)
    server = make_live_server(CHATAPP_AUTH="accounts", CHATAPP_OPEN_SIGNUP="true")
    for path, what in ((f"/join/{invitation}", "invitation"), (f"/reset/{reset}", "reset"),
                       ("/sign-up", "sign-up")):
        page.goto(server.url + path)
        check(what)
    page.fill("#name", "dan")
    page.fill("#password", "short")
    page.evaluate("() => document.querySelector('#password').removeAttribute('minlength')")
    _submit(page, "Create account")
    check("sign-up, refused")
    page.goto(server.url + "/sign-in")
    check("sign-in")
    page.fill("#name", "ada")
    page.fill("#password", "not the password")
    _submit(page, "Sign in")
    check("sign-in, refused")
    page.fill("#password", PASSWORD)
    _submit(page, "Sign in")
    assert "/account/claim" in page.url
    check("claim")
    _submit(page, "Not now")
    page.goto(server.url + "/account")
    check("account")
    page.goto(server.url + "/admin")
    check("admin")

    if javascript:
        page.get_by_role("button", name="Make an invitation link").click()
        page.locator("#invitation code").wait_for()
        page.get_by_role("button", name="Reset link for bob").click()
        page.locator("tr code").wait_for()
        page.get_by_role("button", name="No longer admin (ada)").click()
        page.locator("tr [role=alert]").wait_for()
    else:
        _submit(page, "Make an invitation link")
        check("admin, an invitation made")
        _submit(page, "Reset link for bob")
        check("admin, a reset link made")
        _submit(page, "No longer admin (ada)")
        assert page.locator("[role=alert]").count() == 1
    check("admin, after its actions")


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_single_sign_on_page_has_no_violations(new_page: NewPage, make_live_server: Callable[..., LiveServer],
                                                   oidc_provider: OIDCProvider, scheme: str,
                                                   javascript: bool) -> None:
    server = make_live_server(CHATAPP_AUTH="oidc", CHATAPP_OIDC_ISSUER=oidc_provider.issuer,
                              CHATAPP_OIDC_CLIENT_ID=oidc_provider.client_id,
                              CHATAPP_OIDC_CLIENT_SECRET=oidc_provider.client_secret)
    page = new_page(bypass_csp=True, color_scheme=scheme, java_script_enabled=javascript)
    page.goto(server.url + "/")
    assert "/sign-in" in page.url
    assert checked(page, new_page, scheme) == []
    page.goto(server.url + "/oidc/callback?code=made-up&state=made-up")  # no sign-in under way: refused
    assert page.locator("[role=alert]").count() == 1
    assert checked(page, new_page, scheme) == [], "with the error shown"
