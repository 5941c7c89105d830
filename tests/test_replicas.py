"""Several processes on one database, as replicas behind a load balancer are (or workers on one
SQLite file): any request may land on any of them. Two apps in this process, each with its own
store on the same database, stand for two replicas; each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import time

from quart import Quart
from quart.testing import QuartClient

from tests.conftest import MakeApp, open_chat, soup
from tests.support import HTMX
from tests.support.client import conversation_url, send_form
from tests.support.fake_openai import FakeOpenAI, Reply


async def _streaming(client: QuartClient, action: str, csrf: str, until: bytes):
    """Send a message the htmx way and read its stream until `until` arrives; the open request."""
    request = client.request(action, method="POST",
                             headers={**HTMX, "Content-Type": "application/x-www-form-urlencoded"})
    connection = await request.__aenter__()
    await connection.send(f"message=slow&csrf_token={csrf}".encode())
    await connection.send_complete()
    received = b""
    while until not in received:
        received += await asyncio.wait_for(connection.receive(), 5)
    return request, connection, received


async def _read_to_end(connection) -> bytes:
    received = b""
    try:
        while True:
            received += await asyncio.wait_for(connection.receive(), 5)
    except Exception:  # the stream ended (Quart's test connection raises at its end)
        return received


def _same_browser(app: Quart, client: QuartClient) -> QuartClient:
    """A client of `app` carrying `client`'s cookies: the same browser, its next request landing
    on another replica."""
    other = app.test_client()
    for cookie in client.cookie_jar:
        other.cookie_jar.set_cookie(cookie)
    return other


async def _two_replicas(make_app: MakeApp, **settings: object) -> tuple[Quart, Quart]:
    # One signing key for both, as a deployment sets SECRET_KEY (or both read the stored one).
    return await make_app(**settings), await make_app(**settings)


async def test_stop_asked_on_another_replica_stops_the_answer_within_a_second(
        make_app: MakeApp, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["one ", "two ", "three "], stall_after=2, stall=20))
    streaming_replica, other_replica = await _two_replicas(make_app)
    browser = streaming_replica.test_client()
    action, csrf = await open_chat(browser)
    request, connection, received = await _streaming(browser, action, csrf, b"two ")
    answer_id = soup(received.decode()).select("article[data-role=assistant]")[-1]["id"].removeprefix("msg-")

    elsewhere = _same_browser(other_replica, browser)
    asked_at = time.monotonic()
    stopped = await elsewhere.post(f"{action}/{answer_id}/stop", form={"csrf_token": csrf}, headers=HTMX)
    assert stopped.status_code == 200
    article = soup(await stopped.get_data()).find("article")
    assert article["data-status"] == "stopped" and "one two" in article.get_text()
    assert fake_upstream.wait_for_disconnect(timeout=2)
    assert fake_upstream.disconnects[-1] - asked_at < 1.0  # the model's request closed within a second
    await _read_to_end(connection)
    await request.__aexit__(None, None, None)
    # Without JavaScript: the same stop is a plain form, then the conversation at the answer.
    no_js = await elsewhere.post(f"{action}/{answer_id}/stop", form={"csrf_token": csrf})
    assert no_js.status_code == 303 and no_js.headers["Location"].endswith(f"#msg-{answer_id}")


async def test_a_reload_on_another_replica_shows_the_text_so_far_and_a_stop_that_reaches_it(
        make_app: MakeApp, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["Half ", "an ", "answer"], stall_after=2, stall=20))
    streaming_replica, other_replica = await _two_replicas(make_app, stream_interval=0)
    browser = streaming_replica.test_client()
    action, csrf = await open_chat(browser)
    request, connection, _ = await _streaming(browser, action, csrf, b"an ")
    elsewhere = _same_browser(other_replica, browser)
    deadline = time.monotonic() + 5
    while True:  # the text is saved as it streams (a moment behind the stream)
        page = soup(await (await elsewhere.get(conversation_url(action))).get_data())
        busy = page.select_one("article[data-role=assistant][aria-busy=true]")
        if busy is not None and "Half an" in busy.get_text() or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert busy is not None and "Half an" in busy.get_text()
    assert busy["hx-get"].endswith(busy["id"].removeprefix("msg-"))  # and it follows the answer
    stop = busy.select_one("form.stop-form")
    stopped = await elsewhere.post(stop["action"], form={"csrf_token": csrf})
    assert stopped.status_code == 303
    await _read_to_end(connection)
    await request.__aexit__(None, None, None)
    page = soup(await (await elsewhere.get(conversation_url(action))).get_data())
    assert page.select("article[data-role=assistant]")[-1]["data-status"] == "stopped"


async def test_limits_hold_across_replicas(make_app: MakeApp, fake_upstream: FakeOpenAI) -> None:
    """5 sends a minute is 5 whichever replicas they land on, not 5 each."""
    replicas = await _two_replicas(make_app, rate_limit_per_session="5/minute")
    browser = replicas[0].test_client()
    action, csrf = await open_chat(browser)
    clients = [browser, _same_browser(replicas[1], browser)]
    statuses = [(await send_form(clients[i % 2], action, csrf, f"message {i}")).status_code for i in range(6)]
    assert statuses == [200] * 5 + [429]
