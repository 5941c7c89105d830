"""web/gate.py: the passphrase in front of the app. What is open without it, what a request
without it gets, sessions on signing in again, and whose failures a sign-in counts against (the
known-browser cookie, and what it takes to be believed). The basic sign-in, sign-out and back-off
are in test_security.py and test_limits.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from itsdangerous import URLSafeSerializer
from quart import Quart
from quart.testing import QuartClient

from chatapp import create_app
from chatapp.web import attempts, gate
from tests.conftest import app_settings, soup
from tests.support import HTMX
from tests.support.fake_openai import FakeOpenAI

PASSPHRASE = "open sesame"


@pytest.fixture
async def gated(tmp_path: Path, fake_upstream: FakeOpenAI) -> AsyncIterator[Quart]:
    app = create_app(app_settings(tmp_path, fake_upstream, password=PASSPHRASE, login_rate_limit="3/minute"))
    async with app.test_app():
        yield app


async def _csrf(client: QuartClient) -> str:
    page = soup(await (await client.get("/login")).get_data())
    return page.select_one("form input[name=csrf_token]")["value"]


async def _sign_in(client: QuartClient, password: str) -> int:
    response = await client.post("/login", form={"password": password, "csrf_token": await _csrf(client)})
    await response.get_data()
    return response.status_code


def _cookies(client: QuartClient) -> dict[str, str]:
    return {cookie.name: cookie.value for cookie in client.cookie_jar}


# --- open and closed --------------------------------------------------------------------------------

def test_every_open_endpoint_is_a_real_endpoint(gated: Quart) -> None:
    endpoints = {rule.endpoint for rule in gated.url_map.iter_rules()}
    assert gate.OPEN_ENDPOINTS <= endpoints  # a renamed one would lock the health checks behind the gate


@pytest.mark.parametrize("path", ["/login", "/healthz", "/readyz", "/metrics", "/favicon.ico", "/static/app.css"])
async def test_the_sign_in_page_health_metrics_and_styles_are_open(gated: Quart, path: str) -> None:
    response = await gated.test_client().get(path)
    assert response.status_code in (200, 204), path


@pytest.mark.parametrize(("method", "path", "headers", "status"), [
    ("GET", "/", {}, 302), ("GET", "/new", {}, 302), ("GET", "/c/abc", {}, 302), ("GET", "/c/abc/export.md", {}, 302),
    ("POST", "/theme", {}, 401), ("POST", "/c/abc/messages", {}, 401), ("POST", "/logout", {}, 401),
    ("GET", "/c/abc", HTMX, 401),
])
async def test_without_signing_in_a_page_redirects_and_anything_else_is_a_401(
        gated: Quart, method: str, path: str, headers: dict[str, str], status: int) -> None:
    response = await gated.test_client().open(path, method=method, headers=headers, form={"message": "hi"})
    assert response.status_code == status
    if status == 302:
        assert response.headers["Location"] == "/login"
    else:  # a page for a form, a fragment for htmx: either way it says what to do
        text = soup(await response.get_data())
        assert "sign in" in text.select_one("[data-role=error]").get_text()
        assert (text.find("html") is None) is bool(headers)


async def test_without_a_passphrase_there_is_no_gate(client: QuartClient) -> None:
    assert (await client.get("/login")).status_code == 404
    assert (await client.get("/", follow_redirects=True)).status_code == 200


# --- sessions ---------------------------------------------------------------------------------------

async def test_signing_in_again_ends_the_session_it_had(gated: Quart) -> None:
    person = gated.test_client()
    assert await _sign_in(person, PASSPHRASE) == 303
    copy = gated.test_client()
    for cookie in person.cookie_jar:
        copy.cookie_jar.set_cookie(cookie)
    assert (await copy.get("/")).status_code == 302 and (await copy.get("/")).headers["Location"] != "/login"

    assert await _sign_in(person, PASSPHRASE) == 303  # the same browser signs in again
    assert (await person.get("/", follow_redirects=True)).status_code == 200
    assert (await copy.get("/")).headers["Location"] == "/login"  # the old session is over


async def test_a_sign_in_without_its_form_token_is_refused_and_not_counted(gated: Quart) -> None:
    client = gated.test_client()
    await client.get("/login")
    for _ in range(5):  # more than the three the back-off allows
        response = await client.post("/login", form={"password": PASSPHRASE, "csrf_token": "forged"})
        assert response.status_code == 403
        assert soup(await response.get_data()).select_one("input[name=password]") is not None  # the form again
    assert await _sign_in(client, PASSPHRASE) == 303


async def test_the_known_browser_cookie_is_set_on_signing_in_and_outlives_signing_out(gated: Quart) -> None:
    client = gated.test_client()
    response = await client.post("/login", form={"password": PASSPHRASE, "csrf_token": await _csrf(client)})
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{attempts.KNOWN_BROWSER_COOKIE}="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and f"Max-Age={400 * 86400}" in cookie
    known = _cookies(client)[attempts.KNOWN_BROWSER_COOKIE]
    page = soup(await (await client.get("/", follow_redirects=True)).get_data())
    csrf = page.select_one("form[action='/logout'] input[name=csrf_token]")["value"]
    assert (await client.post("/logout", form={"csrf_token": csrf})).status_code == 303
    assert _cookies(client)[attempts.KNOWN_BROWSER_COOKIE] == known
    assert await _sign_in(client, PASSPHRASE) == 303
    assert _cookies(client)[attempts.KNOWN_BROWSER_COOKIE] == known  # the same browser, the same id


# --- whose failures ---------------------------------------------------------------------------------

async def test_a_right_passphrase_forgets_a_known_browsers_failures_but_not_an_addresss(gated: Quart) -> None:
    colleague = gated.test_client()
    assert [await _sign_in(colleague, p) for p in ("typo", "typo", PASSPHRASE)] == [401, 401, 303]
    # Those two failures stay with the address: whoever guesses from it next has one left.
    guesser = gated.test_client()
    assert [await _sign_in(guesser, "guess") for _ in range(2)] == [401, 429]
    # The colleague's browser is known now: its own failures, and a right passphrase forgets them.
    assert [await _sign_in(colleague, p) for p in ("typo", "typo", PASSPHRASE)] == [401, 401, 303]
    assert [await _sign_in(colleague, "typo") for _ in range(4)] == [401, 401, 401, 429]


def _signed(app: Quart, value: object) -> str:
    return URLSafeSerializer(app.config["SECRET_KEY"], salt="chatapp-known-browser").dumps(value)


@pytest.mark.parametrize("forged", ["not signed", "another passphrase's", "not a dict", "no id"])
async def test_a_known_browser_cookie_that_does_not_hold_up_counts_against_the_address(gated: Quart,
                                                                                    forged: str) -> None:
    async with gated.app_context():
        right = attempts.stamp(PASSPHRASE)
    cookie = {"not signed": "eyJpZCI6ICJ4In0.bad-signature",
              "another passphrase's": _signed(gated, {"id": "x", "gate": "0" * 32}),
              "not a dict": _signed(gated, "x"),
              "no id": _signed(gated, {"id": "", "gate": right})}[forged]
    guesser = gated.test_client()
    guesser.set_cookie("localhost", attempts.KNOWN_BROWSER_COOKIE, cookie)
    assert [await _sign_in(guesser, "guess") for _ in range(4)] == [401, 401, 401, 429]
    newcomer = gated.test_client()  # from the same address, without a cookie
    assert await _sign_in(newcomer, PASSPHRASE) == 429
