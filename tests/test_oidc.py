"""CHATAPP_AUTH=oidc against a real OpenID Provider (tests/support/oidc.py: panva's oidc-provider on
Node.js): the start's redirect read without a browser, then whole sign-ins in Chromium, and the
attacks that `state`, `nonce`, PKCE and single-use codes are there for, played honestly against
the real provider (a copied cookie, a tampered redirect, a request whose nonce was swapped)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx2
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from playwright.sync_api import Page
from quart import Quart
from quart.testing import QuartClient

from chatapp.accounts import OIDC, oidc_subject
from chatapp.openid import DENIED, EXPIRED, MISCONFIGURED, PROVIDER_ERROR, REFUSED, UNREACHABLE, UNVERIFIED
from chatapp.web.oidc import DISABLED, FLOW
from tests.conftest import MakeApp
from tests.support.browser import NewPage, send
from tests.support.client import soup
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.idor import assert_no_idor
from tests.support.live_server import LiveServer, free_port
from tests.support.oidc import OIDCProvider, require, running_provider

# What the in-process app (Quart's test client) calls its own callback.
TEST_CLIENT_CALLBACK = "http://localhost/oidc/callback"


def _query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode({**_query(url), **changes})))


# Without a browser: the app in this process, the provider for real.

@pytest.fixture
async def oidc_app(make_app: MakeApp, oidc_provider: OIDCProvider) -> Quart:
    oidc_provider.allow_redirect_uri(TEST_CLIENT_CALLBACK)
    return await make_app(auth="oidc", oidc_issuer=oidc_provider.issuer, oidc_client_id=oidc_provider.client_id,
                          oidc_client_secret=oidc_provider.client_secret)


async def test_start_sends_the_browser_to_the_provider_with_pkce_state_and_nonce(
        oidc_app: Quart, oidc_provider: OIDCProvider) -> None:
    client = oidc_app.test_client()
    starts = []
    for _ in range(2):
        response = await client.get("/oidc/start?next=/c/abc")
        async with client.session_transaction() as session:
            starts.append((_query(response.headers["Location"]), dict(session[FLOW])))

    (first, first_flow), (second, second_flow) = starts
    assert response.status_code == 302
    assert response.headers["Location"].startswith(f"{oidc_provider.issuer}/auth?")
    assert {key: first[key] for key in ("response_type", "client_id", "redirect_uri", "scope")} == {
        "response_type": "code", "client_id": oidc_provider.client_id, "redirect_uri": TEST_CLIENT_CALLBACK,
        "scope": "openid profile email"}
    assert first["code_challenge_method"] == "S256"
    assert first["code_challenge"] == create_s256_code_challenge(first_flow["code_verifier"])
    assert (first["state"], first["nonce"]) == (first_flow["state"], first_flow["nonce"])
    assert first_flow["next"] == "/c/abc"
    assert len(first["state"]) >= 32 and len(first["nonce"]) >= 32 and len(first_flow["code_verifier"]) >= 43
    # Fresh each time, and the second start replaces the first in the session (one key).
    assert len({first["state"], first["nonce"], second["state"], second["nonce"]}) == 4
    assert first["code_challenge"] != second["code_challenge"]
    assert second_flow["state"] == second["state"]


@pytest.mark.parametrize("next_url", ["//evil.example", "https://evil.example/", "/\\evil.example", "javascript:x"])
async def test_start_keeps_no_way_off_the_site(oidc_app: Quart, next_url: str) -> None:
    client = oidc_app.test_client()

    await client.get("/oidc/start", query_string={"next": next_url})

    async with client.session_transaction() as session:
        assert session[FLOW]["next"] == "/"


async def test_an_issuer_that_discovery_names_otherwise_is_a_clear_start_error(
        make_app: MakeApp, oidc_provider: OIDCProvider, caplog: pytest.LogCaptureFixture) -> None:
    # The same provider under another name: its discovery says it is 127.0.0.1, not localhost.
    other_name = oidc_provider.issuer.replace("127.0.0.1", "localhost")
    app = await make_app(auth="oidc", oidc_issuer=other_name, oidc_client_id=oidc_provider.client_id,
                         oidc_client_secret=oidc_provider.client_secret)

    with caplog.at_level(logging.ERROR, logger="chatapp.openid"):
        response = await app.test_client().get("/oidc/start")

    assert response.status_code == 502 and "Location" not in response.headers
    page = soup(await response.get_data())
    assert page.select_one("#login-error").text.startswith(MISCONFIGURED)
    assert page.select_one("a.button-link")["href"].startswith("/oidc/start")  # a way to try again
    assert f"names the issuer {oidc_provider.issuer!r}, not CHATAPP_OIDC_ISSUER={other_name!r}" in caplog.text


async def test_an_unreachable_provider_is_a_sentence_not_a_traceback(make_app: MakeApp) -> None:
    app = await make_app(auth="oidc", oidc_issuer=f"http://127.0.0.1:{free_port()}", oidc_client_id="chatapp")

    response = await app.test_client().get("/oidc/start")

    assert response.status_code == 502
    assert soup(await response.get_data()).select_one("#login-error").text.startswith(UNREACHABLE)


async def _audit(app: Quart) -> list[tuple[str, str | None]]:
    async with app.app_context():
        entries, _ = await app.extensions["accounts"].audit_log()
    return [(entry.action, entry.detail) for entry in entries]


async def test_a_flood_of_made_up_callbacks_is_audited_a_few_times_a_minute(make_app: MakeApp) -> None:
    """Anyone can make up a callback; the audit log (on disk) does not grow with them."""
    app = await make_app(auth="oidc", oidc_issuer=f"http://127.0.0.1:{free_port()}", oidc_client_id="chatapp")
    client = app.test_client()
    for number in range(25):
        response = await client.get(f"/oidc/callback?code=x&state=made-up-{number}")
        assert response.status_code == 400
    assert [action for action, _ in await _audit(app)] == ["sign-in failed"] * 10


async def test_a_callback_with_no_sign_in_under_way_is_refused_and_audited(oidc_app: Quart) -> None:
    client = oidc_app.test_client()

    response = await client.get("/oidc/callback?code=made-up&state=made-up")

    assert response.status_code == 400
    assert soup(await response.get_data()).select_one("#login-error").text.startswith(EXPIRED)
    assert (await client.get("/")).headers["Location"].startswith("/sign-in")
    assert ("sign-in failed", "oidc: state unknown, expired or used already") in await _audit(oidc_app)


@pytest.mark.parametrize(("error", "status", "sentence"), [("access_denied", 403, DENIED),
                                                          ("server_error", 400, PROVIDER_ERROR)])
async def test_the_providers_error_is_a_sentence_and_a_way_back(
        oidc_app: Quart, error: str, status: int, sentence: str) -> None:
    client = oidc_app.test_client()
    state = _query((await client.get("/oidc/start?next=/c/abc")).headers["Location"])["state"]

    response = await client.get("/oidc/callback", query_string={
        "error": error, "error_description": "Call +1 555 0100 to unlock your account", "state": state})

    page = soup(await response.get_data())
    assert response.status_code == status
    assert page.select_one("#login-error").text.startswith(sentence)
    assert "555" not in page.text  # the description is anyone's to write: never shown
    assert page.select_one("a.button-link")["href"] == "/oidc/start?next=/c/abc"
    async with client.session_transaction() as session:
        assert FLOW not in session  # used up
    assert ("sign-in failed", f"oidc: provider said {error!r}") in await _audit(oidc_app)


async def test_a_code_from_another_issuer_is_never_sent_to_this_one(oidc_app: Quart) -> None:
    client = oidc_app.test_client()
    state = _query((await client.get("/oidc/start")).headers["Location"])["state"]

    response = await client.get("/oidc/callback", query_string={
        "code": "a-code-from-elsewhere", "state": state, "iss": "https://login.evil.example"})

    assert response.status_code == 400
    assert soup(await response.get_data()).select_one("#login-error").text.startswith(UNVERIFIED)
    assert ("sign-in failed", "oidc: answered by another issuer: 'https://login.evil.example'") \
        in await _audit(oidc_app)


async def test_a_provider_gone_by_the_callback_is_a_sentence_not_a_traceback(
        make_app: MakeApp, tmp_path: Path) -> None:
    require()
    with running_provider(tmp_path) as provider:
        provider.allow_redirect_uri(TEST_CLIENT_CALLBACK)
        app = await make_app(auth="oidc", oidc_issuer=provider.issuer, oidc_client_id=provider.client_id,
                             oidc_client_secret=provider.client_secret)
        client = app.test_client()
        state = _query((await client.get("/oidc/start")).headers["Location"])["state"]

    response = await client.get("/oidc/callback", query_string={"code": "any", "state": state})

    assert response.status_code == 502
    assert soup(await response.get_data()).select_one("#login-error").text.startswith(UNREACHABLE)
    assert ("sign-in failed", "oidc: token endpoint unreachable: ConnectError") in await _audit(app)


async def test_a_sign_in_makes_a_person_by_subject_never_by_name_or_address(
        oidc_app: Quart, oidc_provider: OIDCProvider) -> None:
    """The whole flow, the browser's part played by an HTTP client; on each database."""
    async with oidc_app.app_context():
        local = await oidc_app.extensions["accounts"].create_person("alice", "a long local password 1")
    client = oidc_app.test_client()

    with httpx2.Client(timeout=10, trust_env=False) as http:
        authorize = (await client.get("/oidc/start?next=/account")).headers["Location"]
        callback = urlsplit(oidc_provider.walk(http, authorize, "alice"))
        first = await client.get(f"{callback.path}?{callback.query}")
        again = (await client.get("/oidc/start")).headers["Location"]  # signed in at the provider
        callback = urlsplit(oidc_provider.walk(http, again, "alice"))
        second = await client.get(f"{callback.path}?{callback.query}")

    assert (first.status_code, first.headers["Location"]) == (303, "/account")
    assert second.status_code == 303
    alice = oidc_provider.accounts["alice"]
    async with oidc_app.app_context():
        people = oidc_app.extensions["accounts"]
        person = await people.person_for_subject(OIDC, oidc_subject(oidc_provider.issuer, alice.sub), name="x")
        assert (person.name, person.display_name, person.source) == ("alice-2", "Alice Liddell", OIDC)
        assert person.id != local.id
        assert len(await people.sessions(person.id)) == 1  # the second sign-in replaced the first
    page = soup(await (await client.get("/account")).get_data())
    assert "Signed in as Alice Liddell (alice-2)" in " ".join(page.select_one("main").text.split())
    assert [detail for action, detail in await _audit(oidc_app) if action == "sign-in"] == ["oidc", "oidc"]


# In Chromium: the real app under Hypercorn, the real provider.

@pytest.fixture
def oidc_server(make_live_server: Callable[..., LiveServer], oidc_provider: OIDCProvider) -> LiveServer:
    return _start(make_live_server, oidc_provider)


def _start(make_live_server: Callable[..., LiveServer], provider: OIDCProvider) -> LiveServer:
    live = make_live_server(CHATAPP_AUTH="oidc", CHATAPP_OIDC_ISSUER=provider.issuer,
                            CHATAPP_OIDC_CLIENT_ID=provider.client_id,
                            CHATAPP_OIDC_CLIENT_SECRET=provider.client_secret)
    provider.allow_redirect_uri(f"{live.url}/oidc/callback")
    return live


def _callbacks(page: Page, live: LiveServer) -> list[str]:
    """The callback URLs the page is sent to, as they are asked for."""
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url)
            if request.url.startswith(f"{live.url}/oidc/callback") else None)
    return seen


def _sign_in(page: Page, live: LiveServer, provider: OIDCProvider, username: str, path: str = "/") -> None:
    """As a person would: open the app, press the sign-in button, sign in at the provider."""
    page.goto(live.url + path)
    page.get_by_role("link", name="Sign in with your organisation").click()
    provider.sign_in(page, username)
    page.wait_for_load_state()


def _signed_in_as(page: Page) -> str | None:
    link = page.locator("a.account-link")
    return link.text_content() if link.count() else None


def _error(page: Page) -> str:
    return page.locator("#login-error").inner_text()


def _database(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "chat.db")


def _sessions(tmp_path: Path) -> int:
    with _database(tmp_path) as db:
        return db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]


@pytest.fixture
def provider_elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    """A provider on another site than the app (localhost, the app on 127.0.0.1), as deployed: the
    way back to the app is a cross-site redirect, which the app's SameSite=Lax cookie must survive."""
    require()
    with running_provider(tmp_path_factory.mktemp("elsewhere"), host="localhost") as provider:
        yield provider


def test_a_person_signs_in_chats_and_finds_the_chat_again_in_another_browser(
        new_page: NewPage, make_live_server: Callable[..., LiveServer], provider_elsewhere: OIDCProvider,
        fake_upstream: FakeOpenAI) -> None:
    live = _start(make_live_server, provider_elsewhere)
    fake_upstream.script(Reply(tokens=["Hello ", "Alice."]))
    page = new_page()

    _sign_in(page, live, provider_elsewhere, "alice")
    assert page.url.startswith(live.url + "/") and page.locator("form#composer").is_visible()  # the chat
    assert _signed_in_as(page) == "Alice Liddell"
    send(page, "Remember the white rabbit")
    page.locator("article[data-role=assistant][aria-busy=false]").wait_for()

    laptop = new_page()  # another browser: no cookie of the first, signed in at the provider again
    _sign_in(laptop, live, provider_elsewhere, "alice")
    laptop.get_by_role("link", name="Remember the white rabbit").click()
    assert "Remember the white rabbit" in laptop.locator("article[data-role=user]").inner_text()
    assert "Hello Alice." in laptop.locator("article[data-role=assistant]").inner_text()


def test_another_person_sees_none_of_her_conversations(
        new_page: NewPage, oidc_server: LiveServer, oidc_provider: OIDCProvider) -> None:
    alice = new_page()
    _sign_in(alice, oidc_server, oidc_provider, "alice")
    send(alice, "Alice's secret plan")
    alice.locator("article[data-role=assistant][aria-busy=false]").wait_for()
    hers = alice.url.removesuffix("/messages")

    bob = new_page()
    _sign_in(bob, oidc_server, oidc_provider, "bob")

    assert _signed_in_as(bob) == "Bob Dobbs"
    assert "secret plan" not in bob.content()
    response = bob.goto(hers)
    assert response is not None and response.status == 404
    assert "secret plan" not in bob.content()


def test_a_replayed_callback_is_refused_and_makes_no_session(
        new_page: NewPage, oidc_server: LiveServer, oidc_provider: OIDCProvider, tmp_path: Path) -> None:
    page = new_page()
    callbacks = _callbacks(page, oidc_server)
    _sign_in(page, oidc_server, oidc_provider, "alice")
    assert _signed_in_as(page) == "Alice Liddell" and len(callbacks) == 1
    sessions = _sessions(tmp_path)

    again = page.goto(callbacks[0])  # the same code and state, in the same browser
    assert again is not None and again.status == 400 and _error(page).startswith(EXPIRED)
    stranger = new_page()  # and in another browser, which never started a sign-in
    elsewhere = stranger.goto(callbacks[0])
    assert elsewhere is not None and elsewhere.status == 400 and _error(stranger).startswith(EXPIRED)

    assert _sessions(tmp_path) == sessions
    stranger.goto(oidc_server.url + "/")
    assert urlsplit(stranger.url).path == "/sign-in"


def test_a_tampered_state_is_refused_and_uses_the_sign_in_up(
        new_page: NewPage, oidc_server: LiveServer, oidc_provider: OIDCProvider) -> None:
    page = new_page()
    page.goto(oidc_server.url + "/sign-in")
    page.get_by_role("link", name="Sign in with your organisation").click()
    callback = oidc_provider.held_callback(page, "alice")
    state = _query(callback)["state"]

    tampered = page.goto(_with_query(callback, state=state[:-2] + ("AA" if state[-2:] != "AA" else "BB")))
    assert tampered is not None and tampered.status == 400 and _error(page).startswith(EXPIRED)
    genuine = page.goto(callback)  # the sign-in it belonged to was used up by the tampered one
    assert genuine is not None and genuine.status == 400 and _error(page).startswith(EXPIRED)
    assert _signed_in_as(page) is None


def test_an_id_token_for_another_nonce_is_refused(
        new_page: NewPage, oidc_server: LiveServer, oidc_provider: OIDCProvider) -> None:
    """An authorization request whose nonce was swapped on its way to the provider (all else the
    app's own: its state, its PKCE challenge): the provider signs an ID token for the swapped nonce,
    and the app, which remembers its own, refuses it."""
    page = new_page()
    start = page.request.get(oidc_server.url + "/oidc/start", max_redirects=0)  # the page's own cookies
    assert start.status == 302
    page.goto(_with_query(start.headers["location"], nonce="a-nonce-the-app-never-made"))
    oidc_provider.sign_in(page, "bob")
    page.wait_for_load_state()

    assert urlsplit(page.url).path == "/oidc/callback"
    assert _error(page).startswith(UNVERIFIED)
    assert _signed_in_as(page) is None
    page.goto(oidc_server.url + "/")
    assert urlsplit(page.url).path == "/sign-in"


def test_a_replayed_code_is_refused_by_the_provider(
        new_page: NewPage, oidc_server: LiveServer, oidc_provider: OIDCProvider, tmp_path: Path) -> None:
    """The whole callback replayed with a copy of the browser's cookie from before it came back
    (the state and the PKCE verifier still in it): the app has no record of the code's use, but the
    provider does, and refuses it."""
    page = new_page()
    callbacks = _callbacks(page, oidc_server)
    page.goto(oidc_server.url + "/sign-in")
    page.get_by_role("link", name="Sign in with your organisation").click()
    page.wait_for_url(f"{oidc_provider.issuer}/interaction/**")
    copy = new_page()
    copy.context.add_cookies([cookie for cookie in page.context.cookies(oidc_server.url)
                              if cookie["name"] == "chatapp_session"])
    oidc_provider.sign_in(page, "alice")
    page.wait_for_load_state()
    assert _signed_in_as(page) == "Alice Liddell"
    sessions = _sessions(tmp_path)

    replay = copy.goto(callbacks[0])

    assert replay is not None and replay.status == 400 and _error(copy).startswith(REFUSED)
    assert _signed_in_as(copy) is None and _sessions(tmp_path) == sessions
    with _database(tmp_path) as db:
        assert db.execute("SELECT detail FROM audit_log WHERE action = 'sign-in failed'").fetchall() \
            == [("oidc: token endpoint refused: invalid_grant",)]


def test_next_never_leads_off_the_site(
        new_page: NewPage, oidc_server: LiveServer, oidc_provider: OIDCProvider) -> None:
    page = new_page()

    page.goto(oidc_server.url + "/oidc/start?next=//evil.example/")
    oidc_provider.sign_in(page, "carol")
    page.wait_for_load_state()

    assert page.url.startswith(oidc_server.url + "/") and _signed_in_as(page) == "Carol Danvers"


def test_a_disabled_person_is_refused_at_the_callback(
        new_page: NewPage, oidc_server: LiveServer, oidc_provider: OIDCProvider, tmp_path: Path) -> None:
    _sign_in(new_page(), oidc_server, oidc_provider, "bob")
    with _database(tmp_path) as db:
        db.execute("UPDATE people SET disabled_at = '2026-01-01T00:00:00+00:00' WHERE name = 'bob'")
    page = new_page()

    page.goto(oidc_server.url + "/sign-in")
    page.get_by_role("link", name="Sign in with your organisation").click()
    oidc_provider.sign_in(page, "bob")
    page.wait_for_load_state()

    assert urlsplit(page.url).path == "/oidc/callback" and _error(page).startswith(DISABLED)
    assert _signed_in_as(page) is None


async def _signed_in_with_provider(app: Quart, provider: OIDCProvider, username: str) -> QuartClient:
    """A test client signed in as the provider's `username`, through the whole flow."""
    client = app.test_client()
    with httpx2.Client(timeout=10, trust_env=False) as http:
        authorize = (await client.get("/oidc/start")).headers["Location"]
        callback = urlsplit(provider.walk(http, authorize, username))
        assert (await client.get(f"{callback.path}?{callback.query}")).status_code == 303
    return client


async def test_the_idor_walk_with_two_people_of_the_provider(oidc_app: Quart, oidc_provider: OIDCProvider,
                                                            fake_upstream: FakeOpenAI) -> None:
    alice = await _signed_in_with_provider(oidc_app, oidc_provider, "alice")
    bob = await _signed_in_with_provider(oidc_app, oidc_provider, "bob")
    assert await assert_no_idor(oidc_app, alice, bob, fake_upstream) >= 10
