"""Limits that must hold against a hostile user: budgets that deleting cannot give back, a stream
cap that concurrency cannot slip, sessions that signing out ends and that never expire while in
use, a passphrase back-off that a guesser cannot turn against the team, and numbers that are not
500s."""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from itsdangerous import TimestampSigner
from quart import Quart
from quart.testing import QuartClient

from chatapp.quota import OverLimit
from tests.conftest import MakeApp
from tests.support.client import Answer, conversation_url, open_chat, send, send_form, sign_in, sign_out, soup
from tests.support.fake_openai import FakeOpenAI, Reply



async def _status(sending: Awaitable[Answer]) -> int:
    """A send's status, for sends started at once (asyncio.gather)."""
    return (await sending).status_code


async def _delete(client: QuartClient, chat: tuple[str, str]) -> int:
    return (await client.post(f"{conversation_url(chat[0])}/delete", form={"csrf_token": chat[1]})).status_code


async def _until_streaming(app: Quart, answers: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while app.extensions["quota"].streaming != answers:
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


# --- budgets: a ledger that deleting does not touch ---------------------------------------------

@pytest.mark.parametrize("scope", ["daily_tokens_per_session", "daily_tokens"])
async def test_deleting_everything_does_not_give_a_spent_budget_back(make_app: MakeApp, fake_upstream: FakeOpenAI,
                                                                      scope: str) -> None:
    fake_upstream.default = Reply(tokens=["an answer"], usage=(40, 10))
    app = await make_app(**{scope: 100})
    browsers = [app.test_client(), app.test_client()]
    chats = [await open_chat(browser) for browser in browsers]
    # Both spend at once (50 tokens each: the budget is used up in either scope).
    statuses = await asyncio.gather(*(_status(send(b, *c)) for b, c in zip(browsers, chats)),
                                    *(_status(send(b, *c)) for b, c in zip(browsers, chats)))
    assert sorted(statuses)[:2] == [200, 200]
    assert await asyncio.gather(*(_delete(b, c) for b, c in zip(browsers, chats))) == [303, 303]
    asked = len(fake_upstream.requests)
    fresh = [await open_chat(browser, "/new") for browser in browsers]
    again = await asyncio.gather(*(_status(send(b, *c)) for b, c in zip(browsers, fresh)))
    assert again == [429, 429]
    assert len(fake_upstream.requests) == asked


async def test_deleting_a_conversation_stops_its_answer_and_counts_its_tokens(make_app: MakeApp,
                                                                              fake_upstream: FakeOpenAI) -> None:
    fake_upstream.default = Reply(tokens=["thinking hard", " about it"], stall_after=1, stall=30)
    app = await make_app(max_streams_per_session=1)
    client = app.test_client()
    chat = await open_chat(client)
    answering = asyncio.ensure_future(_status(send(client, *chat)))
    await _until_streaming(app, 1)
    while not fake_upstream.requests:  # the model has been asked
        await asyncio.sleep(0.01)
    assert await _delete(client, chat) == 303
    assert await asyncio.wait_for(answering, 5) == 200  # the answer ended, not after 30 s
    assert fake_upstream.wait_for_disconnect(2.0)  # and the model stopped being paid for
    assert app.extensions["quota"].streaming == 0
    today = datetime.now(UTC).date()
    assert await app.extensions["store"].tokens_used_on(today) > 0  # counted, though deleted
    fake_upstream.default = Reply()
    assert (await send(client, *await open_chat(client, "/new"))).status_code == 200  # its place came back


# --- the stream cap: the check and the claim are one step ----------------------------------------

@pytest.mark.parametrize(("sends", "drafts"), [(20, False), (6, True)],
                         ids=["20 to one conversation", "6 to 6 new drafts"])
async def test_sends_at_once_open_exactly_the_capped_number_of_model_streams(
        make_app: MakeApp, fake_upstream: FakeOpenAI, sends: int, drafts: bool) -> None:
    fake_upstream.default = Reply(tokens=["slow"], stall_after=0, stall=1.0)
    app = await make_app(max_streams_per_session=2)
    client = app.test_client()
    first = await open_chat(client)
    chats = [await open_chat(client, "/new") if drafts else first for _ in range(sends)]
    statuses = await asyncio.gather(*(_status(send(client, *chat, f"question {i}")) for i, chat in enumerate(chats)))
    assert sorted(statuses) == [200] * 2 + [429] * (sends - 2)
    assert len(fake_upstream.requests) == 2


# --- sessions: signing out ends them, use keeps them ---------------------------------------------

async def test_a_cookie_copied_before_sign_out_gets_nothing_after(make_app: MakeApp) -> None:
    app = await make_app(password="open sesame")
    person = app.test_client()
    assert (await sign_in(person, "open sesame")).status_code == 303
    chat = await open_chat(person)
    assert (await send(person, *chat)).status_code == 200
    thief = app.test_client()
    for cookie in person.cookie_jar:
        thief.cookie_jar.set_cookie(cookie)
    assert (await thief.get("/")).status_code == 302  # the copy works while signed in…
    assert (await thief.get(conversation_url(chat[0]))).status_code == 200

    await sign_out(person)
    for path in ("/", conversation_url(chat[0])):  # …and not after
        response = await thief.get(path)
        assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert (await send(thief, *chat)).status_code == 401


def _session_cookie(app: Quart, data: dict, *, days_ago: float) -> str:
    """The app's own session cookie for `data`, as if signed `days_ago` days ago."""

    class Then(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time() - days_ago * 86400)

    serializer = app.session_interface.get_signing_serializer(app)
    serializer.signer = Then
    return serializer.dumps(data)


async def test_a_session_used_within_its_lifetime_never_expires(app: Quart) -> None:
    client = app.test_client()
    chat = await open_chat(client)
    assert (await send(client, *chat)).status_code == 200
    async with client.session_transaction() as session:
        data = dict(session)
    # The cookie lasts well past a month, and is signed anew on the first visit of each day.
    set_cookie = (await client.get(conversation_url(chat[0]))).headers.get("Set-Cookie", "")
    assert set_cookie == ""  # already signed today: not sent again
    used = app.test_client()
    used.set_cookie("localhost", "chatapp_session", _session_cookie(app, {**data, "day": "2026-01-01"}, days_ago=45))
    response = await used.get("/")
    assert response.headers["Location"] == conversation_url(chat[0])  # still this browser's
    renewed = response.headers["Set-Cookie"]
    assert "chatapp_session=" in renewed and "Expires=" in renewed
    expires = datetime.strptime(renewed.split("Expires=")[1].split(";")[0], "%a, %d %b %Y %H:%M:%S GMT")
    assert (expires - datetime.now()).days >= 399


async def test_the_page_says_where_anonymous_conversations_live(client: QuartClient) -> None:
    page = soup(await (await client.get("/", follow_redirects=True)).get_data())
    assert "kept for this browser" in page.select_one("nav.sidebar").get_text()


# --- the passphrase: a back-off that does not lock the team out ---------------------------------

async def test_a_guesser_at_the_same_address_does_not_lock_out_a_known_browser(make_app: MakeApp,
                                                                             fake_upstream: FakeOpenAI) -> None:
    app = await make_app(password="open sesame", login_rate_limit="3/minute")
    colleague = app.test_client()
    assert (await sign_in(colleague, "open sesame")).status_code == 303
    await sign_out(colleague)
    guesser = app.test_client()  # the same address (an office, a NAT)
    statuses = [(await sign_in(guesser, f"guess {i}")).status_code for i in range(4)]
    assert statuses == [401, 401, 401, 429]
    assert (await sign_in(guesser, "open sesame")).status_code == 429  # guessers wait, right or wrong
    assert (await sign_in(colleague, "open sesame")).status_code == 303  # the colleague does not


async def test_each_failure_past_the_free_ones_doubles_the_wait(app: Quart) -> None:
    quota, store = app.extensions["quota"], app.extensions["store"]  # login_rate_limit: 5/minute
    for _ in range(5):
        await quota.take_sign_in_attempt("address:203.0.113.9", store)  # the free ones
    waits = []
    for _ in range(4):
        with pytest.raises(OverLimit) as refused:
            await quota.take_sign_in_attempt("address:203.0.113.9", store)
        waits.append(refused.value.retry_after)
        # The wait is over (as if that long had passed): one more attempt, one more failure.
        await store.db.rows("UPDATE sign_in_failures SET last_at = last_at - ?", (refused.value.retry_after,))
        await quota.take_sign_in_attempt("address:203.0.113.9", store)
    assert [round(w / 60) for w in waits] == [1, 2, 4, 8]
    await quota.take_sign_in_attempt("address:198.51.100.7", store)  # another address is not affected


async def test_guesses_sent_at_once_all_count(make_app: MakeApp) -> None:
    app = await make_app(password="open sesame", login_rate_limit="3/minute")
    guessers = [app.test_client() for _ in range(40)]
    forms = []
    for guesser in guessers:
        page = soup(await (await guesser.get("/login")).get_data())
        forms.append({"password": "guess", "csrf_token": page.select_one("input[name=csrf_token]")["value"]})
    responses = await asyncio.gather(*(g.post("/login", form=f) for g, f in zip(guessers, forms)))
    assert sorted(r.status_code for r in responses) == [401] * 3 + [429] * 37


# --- numbers, redirects, files -------------------------------------------------------------------

@pytest.mark.parametrize(("path", "status"), [
    ("?before=9223372036854775808", 400), ("?before=-1", 400), ("?before=abc", 400),
    ("/messages/99999999999999999999999", 404), ("/messages/9223372036854775808", 404),
])
async def test_numbers_out_of_range_are_4xx_not_500(client: QuartClient, path: str, status: int) -> None:
    chat = await open_chat(client)
    assert (await send(client, *chat)).status_code == 200
    response = await client.get(conversation_url(chat[0]) + path)
    assert response.status_code == status


@pytest.mark.parametrize("back", ["/\\evil.example", "//evil.example", "/\t/evil.example", "https://evil.example",
                                  "/\\/evil.example/x"])
async def test_the_theme_switch_goes_back_to_this_site_only(client: QuartClient, back: str) -> None:
    _, csrf = await open_chat(client)
    response = await client.post("/theme", form={"theme": "dark", "back": back, "csrf_token": csrf})
    assert response.status_code == 303 and response.headers["Location"] == "/"


@pytest.mark.sqlite_only
async def test_a_new_database_file_is_readable_by_its_owner_only(app: Quart, tmp_path: Path) -> None:
    for name in ("chat.db", "chat.db-wal", "chat.db-shm"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


async def test_in_production_readiness_keeps_its_reasons_for_the_token_holder(make_app: MakeApp,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    app = await make_app(fake_model=False, production=True, secret_key="x" * 32,
                         openai_base_url="http://127.0.0.1:9/v1")  # nothing listens there
    body = await (await app.test_client().get("/readyz")).get_json()
    kind = app.extensions["store"].db.dialect
    assert body == {"ready": False, "database": "ok", "database_kind": kind, "model": "error"}
    assert any("CHATAPP_METRICS_TOKEN is not set" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("first", "second", "one_address"), [
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2:ffff:1:2:3", True),  # one subscriber's /64
    ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
    ("203.0.113.9", "::ffff:203.0.113.9", True),
    ("203.0.113.9", "203.0.113.10", False),
])
async def test_an_ipv6_subscriber_is_one_address_to_the_limits(make_app: MakeApp,
                                                               first: str, second: str, one_address: bool) -> None:
    app = await make_app(rate_limit_per_address="1/minute")
    statuses = []
    for peer in (first, second):
        browser = app.test_client()
        action, csrf = await open_chat(browser)
        response = await send_form(browser, action, csrf, scope_base={"client": (peer, 1234)})
        statuses.append(response.status_code)
    assert statuses == ([200, 429] if one_address else [200, 200])
