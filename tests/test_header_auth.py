"""CHATAPP_AUTH=header: a sign-in proxy names the person in X-Forwarded-User (web/trusted_header.py),
believed only on a connection from CHATAPP_TRUSTED_PROXIES (web/proxies.py). Through the test
client first, then behind the real nginx of deploy/nginx.conf with deploy/nginx-header-auth.conf."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import httpx2
import pytest
from quart import Quart
from quart.testing import QuartClient
from werkzeug.datastructures import Headers

from chatapp.accounts import Accounts, Person
from chatapp.storage import Store
from tests.conftest import MakeApp
from tests.support import HTMX
from tests.support.client import conversation_url, form_csrf, open_chat, send, send_form, soup
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.idor import assert_no_idor
from tests.support.live_server import ROOT, LiveServer
from tests.support.nginx import HOST, Nginx, missing, skip_or_fail

PROXY = "127.0.0.1"
HEADER = "X-Forwarded-User"
FORGED = f"This request names a person in {HEADER} but did not come through the sign-in proxy."


class Browser(QuartClient):
    """A browser whose requests reach the app from `peer`: through the sign-in proxy (PROXY), which
    names `name` (None: no one), or from elsewhere, sending the header itself."""

    def __init__(self, app: Quart, name: str | None, *, peer: str | None = PROXY) -> None:
        super().__init__(app)
        self.name, self.peer = name, peer

    async def _make_request(self, path: str, method: str, headers: Any, *rest: Any) -> Any:  # type: ignore[override]
        headers = Headers(headers)
        if self.name is not None and HEADER not in headers:
            headers[HEADER] = self.name
        *before, scope_base, auth, subdomain = rest
        if self.peer is not None:  # None: a connection whose peer the server does not know
            scope_base = {"client": (self.peer, 40000), **(scope_base or {})}
        return await super()._make_request(path, method, headers, *before, scope_base, auth, subdomain)


@pytest.fixture
async def app(make_app: MakeApp) -> Quart:
    return await make_app(auth="header", trusted_proxies=(ip_network(f"{PROXY}/32"),))


def _accounts(app: Quart) -> Accounts:
    return app.extensions["accounts"]


def _store(app: Quart) -> Store:
    return app.extensions["store"]


async def _person(app: Quart, name: str) -> Person:
    found = await _accounts(app).find(name)
    assert found is not None, name
    return found


async def _audit(app: Quart, action: str) -> list[str | None]:
    entries, _ = await _accounts(app).audit_log(limit=100)
    return [entry.detail for entry in entries if entry.action == action]


# --- the proxy names the person -------------------------------------------------------------------

async def test_the_proxys_header_signs_that_person_in(app: Quart) -> None:
    ada = Browser(app, "ada")
    response = await ada.get("/", follow_redirects=True)
    page = soup(await response.get_data())
    assert response.status_code == 200
    assert page.select_one(".account-link").get_text(strip=True) == "ada"
    # Signing out is the proxy's business: the page offers no button that would not sign them out.
    assert page.select_one("form[action='/sign-out']") is None
    for _ in range(3):
        assert (await ada.get("/account")).status_code == 200
    person = await _person(app, "ada")
    assert person.source == "header" and person.subject == "ada"
    assert await _audit(app, "sign-in") == ["header"]  # once for the browser, not once a request


async def test_two_people_each_see_only_their_own_conversations(app: Quart, fake_upstream: FakeOpenAI) -> None:
    ada, grace = Browser(app, "ada"), Browser(app, "grace")
    action, csrf = await open_chat(ada)
    assert (await send(ada, action, csrf, "a question of ada")).status_code == 200
    conversation_id = action.split("/")[2]
    owned = await _store(app).conversation(conversation_id, (await _person(app, "ada")).owner)
    assert owned is not None
    grace_page = await (await grace.get("/", follow_redirects=True)).get_data()
    assert b"a question of ada" not in grace_page
    assert (await grace.get(conversation_url(action))).status_code == 404
    # Ada's conversation from another browser of hers (the proxy names her there too).
    assert b"a question of ada" in await (await Browser(app, "ada").get(conversation_url(action))).get_data()


async def test_no_route_with_an_id_shows_or_changes_another_persons_conversation(
    app: Quart, fake_upstream: FakeOpenAI
) -> None:
    tried = await assert_no_idor(app, Browser(app, "ada"), Browser(app, "grace"), fake_upstream)
    assert tried >= 10  # messages, stop, versions, export, delete, settings…


async def test_a_known_person_costs_one_database_statement_a_request(app: Quart, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read again on every request (so that disabling takes effect at once), in one statement."""
    ada = Browser(app, "ada")
    assert (await ada.get("/account")).status_code == 200  # the first time: created, signed in
    db = _accounts(app).db
    statements: list[str] = []
    rows = db.rows

    async def counted(sql: str, parameters: Any = ()) -> Any:
        statements.append(sql)
        return await rows(sql, parameters)

    monkeypatch.setattr(db, "rows", counted)
    assert (await ada.get("/new")).status_code == 302  # a route that asks the database nothing itself
    assert len(statements) == 1, statements


# --- a header from anyone but the proxy ------------------------------------------------------------

@pytest.mark.parametrize("peer", ["203.0.113.7", "127.0.0.2", None])
async def test_a_header_not_from_the_proxy_is_refused_and_nothing_is_stored(
    app: Quart, fake_upstream: FakeOpenAI, peer: str | None
) -> None:
    """From another address, another address of this host, or a connection with none known."""
    forger = Browser(app, "ada", peer=peer)
    for path in ("/", "/account", "/c/abc", "/sign-in"):
        response = await forger.get(path)
        assert response.status_code == 403, path
        assert FORGED in soup(await response.get_data()).get_text(" ", strip=True)
    response = await forger.post("/c/abc/messages", form={"message": "hi"}, headers=HTMX)
    assert response.status_code == 403
    assert await _accounts(app).people() == [] and fake_upstream.requests == []
    entries, _ = await _accounts(app).audit_log()
    assert {entry.action for entry in entries} == {"forged header"}


async def test_forged_headers_are_audited_once_a_minute_per_address(app: Quart) -> None:
    for peer in ("203.0.113.7", "203.0.113.7", "203.0.113.7", "198.51.100.9"):
        assert (await Browser(app, "ada", peer=peer).get("/")).status_code == 403
    entries, _ = await _accounts(app).audit_log()
    forged = sorted((entry.address, entry.detail) for entry in entries if entry.action == "forged header")
    assert forged == [("198.51.100.9", f"{HEADER}: 'ada'"), ("203.0.113.7", f"{HEADER}: 'ada'")]


async def test_a_visitor_who_is_not_the_proxy_without_the_header_is_sent_to_sign_in(app: Quart) -> None:
    stranger = Browser(app, None, peer="203.0.113.7")
    response = await stranger.get("/c/abc")
    assert response.status_code == 302 and response.headers["Location"].startswith("/sign-in")


# --- what the proxy sends -------------------------------------------------------------------------

async def test_the_proxy_naming_no_one_leads_to_a_page_that_says_so(app: Quart) -> None:
    for nobody in (None, "", "  "):
        browser = Browser(app, nobody)
        response = await browser.get("/c/abc")
        assert response.status_code == 302 and response.headers["Location"] == "/sign-in?next=/c/abc"
        assert (await browser.get("/", headers=HTMX)).status_code == 401
        page = soup(await (await browser.get("/sign-in")).get_data())
        assert "did not say who you are" in page.select_one("main").get_text(" ", strip=True)
        assert page.select_one("input[type=password]") is None  # no password form in this mode
    assert await _accounts(app).people() == []


@pytest.mark.parametrize("value", ["ada, grace", "ada,", "a" * 257, "ada\x07", "ada\u202egrace", "zero\u200bwidth"])
async def test_a_value_that_is_not_one_readable_name_is_a_400(app: Quart, value: str) -> None:
    response = await Browser(app, value).get("/")
    assert response.status_code == 400
    assert "cannot read" in soup(await response.get_data()).get_text(" ", strip=True)
    assert await _accounts(app).people() == []


async def test_two_header_lines_are_a_400(app: Quart) -> None:
    browser = Browser(app, None)
    response = await browser.get("/", headers=Headers([(HEADER, "ada"), (HEADER, "grace")]))
    assert response.status_code == 400 and await _accounts(app).people() == []


@pytest.mark.parametrize("value", ["a" * 256, "zoë@example.org", "李 雷", "CN=ada"])
async def test_any_one_name_up_to_256_characters_is_a_person(app: Quart, value: str) -> None:
    assert (await Browser(app, value).get("/account")).status_code == 200
    [usage] = await _accounts(app).people()
    # The subject is the whole value; the name, as long as names go, is where it starts.
    assert usage.person.subject == value and usage.person.name and value.startswith(usage.person.name)


async def test_a_disabled_person_is_out_at_their_next_request_and_back_when_enabled(app: Quart) -> None:
    ada = Browser(app, "ada")
    assert (await ada.get("/account")).status_code == 200
    person = await _person(app, "ada")
    await _accounts(app).disable(person.id)
    response = await ada.get("/account")
    assert response.status_code == 403
    assert "Your account is disabled. Ask an admin." in soup(await response.get_data()).get_text(" ", strip=True)
    assert (await ada.get("/", headers=HTMX)).status_code == 403
    await _accounts(app).enable(person.id)
    assert (await ada.get("/account")).status_code == 200


async def test_a_disabled_persons_answer_being_written_stops(app: Quart, fake_upstream: FakeOpenAI) -> None:
    """Disabling asks their streams to stop (Accounts.disable); the header mode adds nothing to
    that but must not keep the person in: the stream ends, and so does the next request."""
    fake_upstream.script(Reply(tokens=["word "] * 400, delay=0.02))  # 8 s if nothing stops it
    ada = Browser(app, "ada")
    action, csrf = await open_chat(ada)
    sending = asyncio.ensure_future(send(ada, action, csrf, "a long answer please"))
    while not fake_upstream.requests:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    await _accounts(app).disable((await _person(app, "ada")).id)
    disabled_at = time.monotonic()
    answer = await asyncio.wait_for(sending, timeout=5)
    assert time.monotonic() - disabled_at < 1.5 and answer.status_code == 200
    messages, _ = await _store(app).page_of_messages(action.split("/")[2], before=None, size=2)
    assert [message.status for message in messages if message.role == "assistant"] == ["stopped"]
    assert (await ada.get(conversation_url(action))).status_code == 403


# --- one browser, the session -----------------------------------------------------------------------

async def test_another_person_on_the_same_browser_gets_a_fresh_session(app: Quart) -> None:
    browser = Browser(app, "ada")
    ada_action, ada_csrf = await open_chat(browser, "/new")
    browser.name = "grace"  # the proxy signed someone else in on this browser
    grace_action, grace_csrf = await open_chat(browser, "/")
    assert grace_csrf != ada_csrf and grace_action != ada_action  # neither Ada's token nor her draft
    # A form Ada's page still shows is refused rather than sent as Grace.
    assert (await send_form(browser, ada_action, ada_csrf, "from ada's page")).status_code == 403
    assert await _audit(app, "sign-in") == ["header, after another person", "header"]


async def test_the_first_person_named_on_a_browser_is_offered_its_earlier_conversations(
    make_app: MakeApp, fake_upstream: FakeOpenAI
) -> None:
    """An operator who turns the header mode on: a browser's anonymous conversations from before
    are offered to the first person named on it, never to whoever comes after."""
    before = await make_app(auth="none")
    anonymous = before.test_client()
    action, csrf = await open_chat(anonymous)
    assert (await send_form(anonymous, action, csrf, "written anonymously")).status_code == 200
    app = await make_app(auth="header", trusted_proxies=(ip_network(f"{PROXY}/32"),))
    browser = Browser(app, "ada")
    browser.cookie_jar = anonymous.cookie_jar
    page = soup(await (await browser.get("/account")).get_data())
    assert "1 conversation from before" in page.get_text(" ", strip=True)
    browser.name = "grace"
    page = soup(await (await browser.get("/account")).get_data())
    assert "from before" not in page.get_text(" ", strip=True)


async def test_the_apps_sign_out_is_harmless_the_proxy_still_names_the_person(app: Quart) -> None:
    ada = Browser(app, "ada")
    csrf = await form_csrf(ada, "/")
    response = await ada.post("/sign-out", form={"csrf_token": csrf}, follow_redirects=True)
    assert response.status_code == 200
    assert soup(await response.get_data()).select_one(".account-link").get_text(strip=True) == "ada"
    assert (await ada.post("/sign-out-everywhere", form={"csrf_token": await form_csrf(ada, "/")})
            ).status_code == 303
    assert (await ada.get("/account")).status_code == 200


# --- behind nginx -----------------------------------------------------------------------------------

SNIPPET = ROOT / "deploy" / "nginx-header-auth.conf"
PASSWORD_FILE = "/etc/nginx/chatapp.htpasswd"
# nginx connects to the app from an address of its own, so that a client on this host reaching
# the app's port directly (from 127.0.0.1) is not the trusted proxy.
NGINX_ADDRESS = "127.0.0.2"
PASSWORDS = {"ada": "ada's password", "grace": "grace's password"}


@pytest.fixture
def signing_nginx(tmp_path: Path, make_live_server: Callable[..., LiveServer]) -> Any:
    """The app in header mode behind deploy/nginx.conf with deploy/nginx-header-auth.conf included,
    its password file made as the snippet says (openssl passwd -6)."""
    if (reason := missing()) is not None:
        skip_or_fail(reason)
    live = make_live_server(CHATAPP_AUTH="header", CHATAPP_TRUSTED_PROXIES=NGINX_ADDRESS)
    lines = []
    for name, password in PASSWORDS.items():
        hashed = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True,
                                text=True, check=True).stdout.strip()
        lines.append(f"{name}:{hashed}\n")
    (tmp_path / "htpasswd").write_text("".join(lines))
    snippet = SNIPPET.read_text()
    assert PASSWORD_FILE in snippet
    server_lines = snippet.replace(PASSWORD_FILE, str(tmp_path / "htpasswd")) + f"proxy_bind {NGINX_ADDRESS};\n"
    with Nginx([live.port], tmp_path / "nginx", server_lines=server_lines) as nginx:
        yield live, nginx


def _through(nginx: Nginx, name: str | None) -> httpx2.Client:
    auth = (name, PASSWORDS[name]) if name else None
    return httpx2.Client(base_url=nginx.url, verify=nginx.ssl_context(), headers={"Host": HOST}, auth=auth,
                         trust_env=False, timeout=30.0)


def _shown_name(html: str) -> str:
    return soup(html).select_one(".account-link").get_text(strip=True)


def test_behind_nginx_the_name_nginx_checked_is_the_person(signing_nginx: Any) -> None:
    _, nginx = signing_nginx
    with _through(nginx, "ada") as ada, _through(nginx, None) as nobody:
        response = ada.get("/", follow_redirects=True)
        assert response.status_code == 200 and _shown_name(response.text) == "ada"
        # A client's own X-Forwarded-User is overwritten by nginx's.
        response = ada.get("/", follow_redirects=True, headers={HEADER: "grace"})
        assert response.status_code == 200 and _shown_name(response.text) == "ada"
        assert nobody.get("/", headers={HEADER: "ada"}).status_code == 401  # nginx's: no password
    with _through(nginx, "grace") as grace:
        assert _shown_name(grace.get("/", follow_redirects=True).text) == "grace"


def test_behind_nginx_a_message_is_sent_and_answered_as_the_person(signing_nginx: Any) -> None:
    _, nginx = signing_nginx
    with _through(nginx, "ada") as ada:
        page = soup(ada.get("/", follow_redirects=True).text)
        form = page.select_one("form#composer")
        csrf = form.select_one("input[name=csrf_token]")["value"]
        response = ada.post(form["action"], data={"message": "hello from ada", "csrf_token": csrf},
                            follow_redirects=True)
        assert response.status_code == 200 and "hello from ada" in response.text
    with _through(nginx, "grace") as grace:
        assert "hello from ada" not in grace.get("/", follow_redirects=True).text
        assert grace.get(form["action"].removesuffix("/messages")).status_code == 404


def test_the_apps_own_port_refuses_the_header_from_anyone_but_nginx(signing_nginx: Any) -> None:
    live, _ = signing_nginx
    with httpx2.Client(base_url=live.url, trust_env=False, timeout=30.0) as direct:
        response = direct.get("/", headers={HEADER: "ada"})
        assert response.status_code == 403 and FORGED in soup(response.text).get_text(" ", strip=True)
        response = direct.get("/")
        assert response.status_code == 302 and response.headers["Location"].startswith("/sign-in")
