"""Trying to break it: CSRF, headers and cookies, input, ownership, rate limits, the passphrase gate,
and the API key in responses and logs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart import Quart
from quart.testing import QuartClient

from chatapp import create_app
from chatapp.logs import REDACTED, RedactSecrets
from tests.conftest import CANARY_KEY, app_settings, open_chat, parse_sse, soup
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support import HTMX



async def make_app(tmp_path: Path, fake: FakeOpenAI | None, **settings: object) -> AsyncIterator[Quart]:
    app = create_app(app_settings(tmp_path, fake, **settings))
    async with app.test_app():
        yield app


@pytest.fixture
async def strict_app(tmp_path: Path, fake_upstream: FakeOpenAI) -> AsyncIterator[Quart]:
    """Tight limits, so a test can reach them in a few requests."""
    async for app in make_app(
        tmp_path, fake_upstream, rate_limit_per_session="3/minute", rate_limit_per_address="5/minute",
        max_streams_per_session=1, max_streams=2,
    ):
        yield app


@pytest.fixture
async def gated_app(tmp_path: Path, fake_upstream: FakeOpenAI) -> AsyncIterator[Quart]:
    async for app in make_app(tmp_path, fake_upstream, password="open sesame", login_rate_limit="3/minute"):
        yield app


async def _send(client: QuartClient, action: str, csrf: str, message: str = "hi", **headers: str):
    return await client.post(action, form={"message": message, "csrf_token": csrf}, headers=headers)


# --- CSRF ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"Sec-Fetch-Site": "same-origin"}, True),
        ({"Sec-Fetch-Site": "cross-site"}, False),
        ({"Sec-Fetch-Site": "same-site"}, False),
        ({"Origin": "http://localhost"}, True),
        ({"Origin": "https://attacker.example"}, False),
        ({"Origin": "null"}, False),
    ],
)
async def test_cross_origin_posts_are_refused_even_with_the_token(
    client: QuartClient, fake_upstream: FakeOpenAI, headers: dict[str, str], allowed: bool
) -> None:
    action, csrf = await open_chat(client)
    response = await _send(client, action, csrf, **headers)
    assert (response.status_code == 200) is allowed
    if not allowed:
        assert response.status_code == 403 and "Reload the page" in (await response.get_data()).decode()
        assert fake_upstream.requests == []


async def test_csrf_refusal_is_a_fragment_for_htmx(client: QuartClient) -> None:
    action, _ = await open_chat(client)
    response = await client.post(action, form={"message": "hi"}, headers={**HTMX, "X-CSRF-Token": "forged"})
    page = soup(await response.get_data())
    assert response.status_code == 403 and page.find("html") is None
    assert "request id" in page.select_one("[data-role=error]").get_text()


# --- headers and cookies -----------------------------------------------------------------------

async def test_main_page_headers_and_cookie(client: QuartClient) -> None:
    response = await client.get("/", follow_redirects=True)
    csp = dict(d.strip().split(" ", 1) for d in response.headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'self'" and csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["img-src"] == "'self' data:" and csp["frame-ancestors"] == "'none'"
    assert csp["form-action"] == "'self'" and csp["base-uri"] == "'none'" and csp["object-src"] == "'none'"
    assert "unsafe" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "camera=()" in response.headers["Permissions-Policy"]
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP here
    cookie = next(c for c in client.cookie_jar if c.name == "chatapp_session")
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") == "Lax"
    assert not cookie.secure


async def test_over_https_hsts_and_secure_cookies(tmp_path: Path) -> None:
    async for app in make_app(tmp_path, None, https=True):
        client = app.test_client()
        response = await client.get("/healthz")
        assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")
        response = await client.get("/", scheme="https")
        assert "Secure" in response.headers["Set-Cookie"]


# --- input --------------------------------------------------------------------------------------

async def test_invalid_utf8_is_a_400_and_nothing_is_sent(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    action, csrf = await open_chat(client)
    for body in (b"message=%FF%FEhi&csrf_token=" + csrf.encode(), b"message=\xff\xfe&csrf_token=" + csrf.encode()):
        response = await client.post(action, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 400
        assert "not valid UTF-8" in (await response.get_data()).decode()
    assert fake_upstream.requests == []


async def test_a_form_in_another_encoding_is_a_415(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    action, csrf = await open_chat(client)
    response = await client.post(action, data=b'{"message": "hi"}', headers={"Content-Type": "application/json"})
    assert response.status_code == 415 and fake_upstream.requests == []


# --- ownership ----------------------------------------------------------------------------------

async def test_every_conversation_route_answers_404_to_another_browser(app: Quart, fake_upstream: FakeOpenAI) -> None:
    owner, stranger = app.test_client(), app.test_client()
    action, csrf = await open_chat(owner)
    await _send(owner, action, csrf, "private")
    conversation_id = action.split("/")[2]
    _, stranger_csrf = await open_chat(stranger)

    routes = [r for r in app.url_map.iter_rules() if "conversation_id" in r.arguments]
    assert routes, "no conversation routes found"
    for rule in routes:
        url = rule.rule.replace("<conversation_id>", conversation_id)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            response = await stranger.open(url, method=method, form={"csrf_token": stranger_csrf, "message": "x"})
            body = (await response.get_data()).decode()
            assert response.status_code == 404, (method, url)
            assert "private" not in body
    assert len(fake_upstream.requests) == 1


# --- rate limits, stream caps, budgets ------------------------------------------------------------

async def test_sending_too_fast_gets_429_with_retry_after_and_keeps_the_text(strict_app: Quart) -> None:
    client = strict_app.test_client()
    action, csrf = await open_chat(client)
    for _ in range(3):
        assert (await _send(client, action, csrf)).status_code == 200
    response = await _send(client, action, csrf, "the fourth message")
    assert response.status_code == 429 and 1 <= int(response.headers["Retry-After"]) <= 60
    page = soup(await response.get_data())
    assert "too quickly" in page.select_one("[data-role=error]").get_text()
    assert page.select_one("#composer textarea[name=message]").get_text() == "the fourth message"


async def test_the_address_limit_spans_sessions(strict_app: Quart) -> None:
    statuses = []
    for _ in range(3):  # three browsers on one address: 2 + 2 + 2 messages, the limit is 5
        client = strict_app.test_client()
        action, csrf = await open_chat(client)
        statuses += [(await _send(client, action, csrf)).status_code for _ in range(2)]
    assert statuses == [200] * 5 + [429]


async def test_one_streaming_answer_per_session_and_a_cap_for_the_process(strict_app: Quart, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.default = Reply(tokens=["slow"], stall_after=0, stall=1.0)
    first, second, third = (strict_app.test_client() for _ in range(3))
    opened = [await open_chat(c) for c in (first, second, third)]

    async def send(client: QuartClient, chat: tuple[str, str]) -> int:
        return (await client.post(chat[0], form={"message": "hi"}, headers={**HTMX, "X-CSRF-Token": chat[1]})).status_code

    running = asyncio.ensure_future(send(first, opened[0]))
    while strict_app.extensions["quota"].streaming < 1:
        await asyncio.sleep(0.01)
    assert await send(first, opened[0]) == 429  # the same browser, while its answer streams
    running_too = asyncio.ensure_future(send(second, opened[1]))
    while strict_app.extensions["quota"].streaming < 2:
        await asyncio.sleep(0.01)
    busy = await third.post(opened[2][0], form={"message": "hi"}, headers={**HTMX, "X-CSRF-Token": opened[2][1]})
    assert busy.status_code == 503 and "busy" in (await busy.get_data()).decode()
    assert await running == 200 and await running_too == 200
    assert strict_app.extensions["quota"].streaming == 0
    assert await send(first, opened[0]) == 200  # the slot came back


@pytest.mark.parametrize("scope", ["daily_tokens_per_session", "daily_tokens"])
async def test_a_spent_daily_budget_refuses_politely(tmp_path: Path, fake_upstream: FakeOpenAI, scope: str) -> None:
    fake_upstream.default = Reply(tokens=["an answer"], usage=(40, 10))
    async for app in make_app(tmp_path, fake_upstream, **{scope: 50}):
        client = app.test_client()
        action, csrf = await open_chat(client)
        assert (await _send(client, action, csrf)).status_code == 200
        response = await client.post(action, form={"message": "more"}, headers={**HTMX, "X-CSRF-Token": csrf})
        assert response.status_code == 429 and int(response.headers["Retry-After"]) <= 86_400
        assert "allowance" in soup(await response.get_data()).select_one("[data-role=error]").get_text()
        assert len(fake_upstream.requests) == 1


# --- the passphrase gate ------------------------------------------------------------------------

async def _login(client: QuartClient, password: str):
    page = soup(await (await client.get("/login")).get_data())
    csrf = page.select_one("input[name=csrf_token]")["value"]
    return await client.post("/login", form={"password": password, "csrf_token": csrf})


async def test_the_gate_keeps_everything_but_health_behind_the_passphrase(gated_app: Quart) -> None:
    client = gated_app.test_client()
    assert (await client.get("/healthz")).status_code == 200
    response = await client.get("/")
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    htmx = await client.post("/c/x/messages", form={"message": "hi"}, headers=HTMX)
    assert htmx.status_code == 401 and "sign in" in (await htmx.get_data()).decode()

    wrong = await _login(client, "open sesame!")
    assert wrong.status_code == 401 and "not right" in (await wrong.get_data()).decode()
    assert (await client.get("/")).status_code == 302

    before = {c.name: c.value for c in client.cookie_jar}
    right = await _login(client, "open sesame")
    assert right.status_code == 303
    assert {c.name: c.value for c in client.cookie_jar} != before  # a new session
    page = await client.get("/", follow_redirects=True)
    assert page.status_code == 200 and soup(await page.get_data()).select_one("form#composer")

    sign_out_form = soup(await page.get_data()).select_one("form[action='/logout']")
    csrf = sign_out_form.select_one("input[name=csrf_token]")["value"]
    assert (await client.post("/logout", form={"csrf_token": csrf})).status_code == 303
    assert (await client.get("/")).status_code == 302


async def test_sign_in_rotates_the_identity(gated_app: Quart) -> None:
    client = gated_app.test_client()
    await client.get("/login")
    async with client.session_transaction() as session:
        session["owner"] = "planted-by-attacker"
    await _login(client, "open sesame")
    async with client.session_transaction() as session:
        assert session["owner"] != "planted-by-attacker"


async def test_login_attempts_are_rate_limited(gated_app: Quart) -> None:
    client = gated_app.test_client()
    statuses = [(await _login(client, "guess")).status_code for _ in range(3)]
    blocked = await _login(client, "open sesame")  # even the right one, once the limit is reached
    assert statuses == [401, 401, 401] and blocked.status_code == 429 and "Retry-After" in blocked.headers


async def test_changing_the_passphrase_signs_everyone_out(tmp_path: Path, fake_upstream: FakeOpenAI) -> None:
    async for app in make_app(tmp_path, fake_upstream, password="first"):
        client = app.test_client()
        await _login(client, "first")
        assert (await client.get("/", follow_redirects=True)).status_code == 200
        cookies = list(client.cookie_jar)
    async for app in make_app(tmp_path, fake_upstream, password="second"):
        client = app.test_client()
        for cookie in cookies:
            client.cookie_jar.set_cookie(cookie)
        assert (await client.get("/")).status_code == 302


# --- the API key ----------------------------------------------------------------------------------

async def test_the_key_is_in_no_response_and_no_log_line(client: QuartClient, fake_upstream: FakeOpenAI,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake_upstream.script(Reply(status=401), Reply(status=500), Reply(tokens=["x"], drop_after=0),
                         Reply(tokens=["a", "b"], malformed_after=1), Reply(status=404),
                         Reply(status=400), Reply(status=400))  # a 400 is tried once more without stream_options
    action, csrf = await open_chat(client)
    bodies = []
    for _ in range(6):
        response = await client.post(action, form={"message": "hi"}, headers={**HTMX, "X-CSRF-Token": csrf})
        bodies.append((await response.get_data()).decode())
        assert soup(parse_sse(bodies[-1])[-2][1]).select_one("[data-role=error]") is not None
    bodies.append((await (await client.get(action.removesuffix("/messages"))).get_data()).decode())
    assert fake_upstream.requests[0].headers["authorization"] == f"Bearer {CANARY_KEY}"  # it was used
    for text in [*bodies, caplog.text]:
        assert CANARY_KEY not in text and CANARY_KEY[3:20] not in text


def test_the_log_filter_redacts_key_shaped_strings() -> None:
    redact = RedactSecrets(["my-configured-secret-value"]).redact
    assert redact("key sk-proj-abcdefghijklmnopqrstuvwx used") == f"key {REDACTED} used"
    assert redact("Authorization: Bearer abcdefghijklmnopqrstu") == f"Authorization: {REDACTED}"
    assert redact("api_key='abcdefghijklmnop'") == f"{REDACTED}'"
    assert redact("the my-configured-secret-value leaked") == f"the {REDACTED} leaked"
    assert redact("a normal line with sk-short") == "a normal line with sk-short"


def test_the_filter_catches_a_key_in_an_exception(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("chatapp.test")
    handler = logging.StreamHandler()
    handler.addFilter(RedactSecrets([]))
    record = logging.LogRecord("chatapp.test", logging.ERROR, __file__, 1, "failed", (), None)
    try:
        raise RuntimeError(f"request with header Bearer {CANARY_KEY}")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    assert handler.filter(record)
    assert CANARY_KEY not in record.exc_text and REDACTED in record.exc_text
    assert logger.name == "chatapp.test"
