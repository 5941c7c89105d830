"""Trying to break it: CSRF, headers and cookies, input, ownership, rate limits, the passphrase gate,
and the API key in responses and logs."""

from __future__ import annotations

import asyncio
import logging

import pytest
from quart import Quart
from quart.testing import QuartClient

from chatapp.logs import REDACTED, RedactSecrets
from tests.conftest import CANARY_KEY, MakeApp
from tests.support import HTMX
from tests.support.client import conversation_url, open_chat, send, send_form, sign_in, sign_out, soup
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.idor import assert_no_idor



@pytest.fixture
async def strict_app(make_app: MakeApp) -> Quart:
    """Tight limits, so a test can reach them in a few requests."""
    return await make_app(rate_limit_per_session="3/minute", rate_limit_per_address="5/minute",
                          max_streams_per_session=1, max_streams=2)


@pytest.fixture
async def gated_app(make_app: MakeApp) -> Quart:
    return await make_app(password="open sesame", login_rate_limit="3/minute")


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
    response = await send_form(client, action, csrf, headers=headers)
    assert (response.status_code == 200) is allowed
    if not allowed:
        assert response.status_code == 403 and "Reload the page" in response.body
        assert fake_upstream.requests == []


async def test_csrf_refusal_is_a_fragment_for_htmx(client: QuartClient) -> None:
    action, _ = await open_chat(client)
    response = await send(client, action, "forged")
    page = soup(response.body)
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


async def test_over_https_hsts_and_secure_cookies(make_app: MakeApp) -> None:
    app = await make_app(fake_model=False, https=True)
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
    assert await assert_no_idor(app, app.test_client(), app.test_client(), fake_upstream) >= 10


async def test_behind_the_passphrase_each_browser_still_sees_only_its_own(gated_app: Quart,
                                                                          fake_upstream: FakeOpenAI) -> None:
    owner, stranger = gated_app.test_client(), gated_app.test_client()
    for client in (owner, stranger):
        assert (await sign_in(client, "open sesame")).status_code == 303
    assert await assert_no_idor(gated_app, owner, stranger, fake_upstream) >= 10


# --- rate limits, stream caps, budgets ------------------------------------------------------------

async def test_sending_too_fast_gets_429_with_retry_after_and_keeps_the_text(strict_app: Quart) -> None:
    client = strict_app.test_client()
    action, csrf = await open_chat(client)
    for _ in range(3):
        assert (await send_form(client, action, csrf)).status_code == 200
    response = await send_form(client, action, csrf, "the fourth message")
    assert response.status_code == 429 and 1 <= int(response.headers["Retry-After"]) <= 60
    page = soup(response.body)
    assert "too quickly" in page.select_one("[data-role=error]").get_text()
    assert page.select_one("#composer textarea[name=message]").get_text() == "the fourth message"


async def test_the_address_limit_spans_sessions(strict_app: Quart) -> None:
    statuses = []
    for _ in range(3):  # three browsers on one address: 2 + 2 + 2 messages, the limit is 5
        client = strict_app.test_client()
        action, csrf = await open_chat(client)
        statuses += [(await send_form(client, action, csrf)).status_code for _ in range(2)]
    assert statuses == [200] * 5 + [429]


async def test_one_streaming_answer_per_session_and_a_cap_for_the_process(strict_app: Quart, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.default = Reply(tokens=["slow"], stall_after=0, stall=1.0)
    first, second, third = (strict_app.test_client() for _ in range(3))
    opened = [await open_chat(c) for c in (first, second, third)]

    async def status(client: QuartClient, chat: tuple[str, str]) -> int:
        return (await send(client, *chat)).status_code

    running = asyncio.ensure_future(status(first, opened[0]))
    quota = strict_app.extensions["quota"]
    while quota.streaming < 1 or not all(slot.claimed for slot in quota.slots):  # its place claimed
        await asyncio.sleep(0.01)
    assert await status(first, opened[0]) == 429  # the same browser, while its answer streams
    running_too = asyncio.ensure_future(status(second, opened[1]))
    while strict_app.extensions["quota"].streaming < 2:
        await asyncio.sleep(0.01)
    busy = await send(third, *opened[2])
    assert busy.status_code == 503 and "busy" in busy.body
    assert await running == 200 and await running_too == 200
    assert strict_app.extensions["quota"].streaming == 0
    assert await status(first, opened[0]) == 200  # the slot came back


@pytest.mark.parametrize("scope", ["daily_tokens_per_session", "daily_tokens"])
async def test_a_spent_daily_budget_refuses_politely(make_app: MakeApp, fake_upstream: FakeOpenAI, scope: str) -> None:
    fake_upstream.default = Reply(tokens=["an answer"], usage=(40, 10))
    app = await make_app(**{scope: 50})
    client = app.test_client()
    action, csrf = await open_chat(client)
    assert (await send_form(client, action, csrf)).status_code == 200
    response = await send(client, action, csrf, "more")
    assert response.status_code == 429 and int(response.headers["Retry-After"]) <= 86_400
    assert "allowance" in soup(response.body).select_one("[data-role=error]").get_text()
    assert len(fake_upstream.requests) == 1


# --- the passphrase gate ------------------------------------------------------------------------

async def test_the_gate_keeps_everything_but_health_behind_the_passphrase(gated_app: Quart) -> None:
    client = gated_app.test_client()
    assert (await client.get("/healthz")).status_code == 200
    response = await client.get("/")
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    htmx = await client.post("/c/x/messages", form={"message": "hi"}, headers=HTMX)
    assert htmx.status_code == 401 and "sign in" in (await htmx.get_data()).decode()

    wrong = await sign_in(client, "open sesame!")
    assert wrong.status_code == 401 and "not right" in (await wrong.get_data()).decode()
    assert (await client.get("/")).status_code == 302

    before = {c.name: c.value for c in client.cookie_jar}
    right = await sign_in(client, "open sesame")
    assert right.status_code == 303
    assert {c.name: c.value for c in client.cookie_jar} != before  # a new session
    page = await client.get("/", follow_redirects=True)
    assert page.status_code == 200 and soup(await page.get_data()).select_one("form#composer")

    await sign_out(client)
    assert (await client.get("/")).status_code == 302


async def test_sign_in_rotates_the_identity(gated_app: Quart) -> None:
    client = gated_app.test_client()
    await client.get("/login")
    async with client.session_transaction() as session:
        session["owner"] = "planted-by-attacker"
    await sign_in(client, "open sesame")
    async with client.session_transaction() as session:
        assert session["owner"] != "planted-by-attacker"


async def test_login_attempts_are_rate_limited(gated_app: Quart) -> None:
    client = gated_app.test_client()
    statuses = [(await sign_in(client, "guess")).status_code for _ in range(3)]
    blocked = await sign_in(client, "open sesame")  # even the right one, once the limit is reached
    assert statuses == [401, 401, 401] and blocked.status_code == 429 and "Retry-After" in blocked.headers


async def test_changing_the_passphrase_signs_everyone_out(make_app: MakeApp) -> None:
    app = await make_app(password="first")
    client = app.test_client()
    await sign_in(client, "first")
    assert (await client.get("/", follow_redirects=True)).status_code == 200
    cookies = list(client.cookie_jar)
    app = await make_app(password="second")
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
        response = await send(client, action, csrf)
        bodies.append(response.body)
        assert response.final.select_one("[data-role=error]") is not None
    bodies.append((await (await client.get(conversation_url(action))).get_data()).decode())
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
