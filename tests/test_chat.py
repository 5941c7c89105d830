"""The chat routes (chatapp/web/chat.py), through Quart's test client, against the fake model server and a
real SQLite file."""

from __future__ import annotations

import asyncio
import time

from quart import Quart
from quart.testing import QuartClient

from chatapp.storage import Store
from tests.conftest import CANARY_KEY, open_chat, parse_sse, shown_id, soup, stored_id
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support import HTMX
from tests.support.client import send



def _store(app: Quart) -> Store:
    return app.extensions["store"]


async def test_healthz(client: QuartClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert await response.get_data() == b"ok\n"


async def test_start_page_is_a_real_form_with_csrf_and_no_inline_code(client: QuartClient) -> None:
    response = await client.get("/", follow_redirects=True)
    page = soup(await response.get_data())
    form = page.select_one("form#composer")
    assert form["method"] == "post" and form["action"] == form["hx-post"]
    assert form.select_one("#composer textarea[name=message]") is not None
    assert len(form.select_one("input[type=hidden][name=csrf_token]")["value"]) >= 20
    assert "X-CSRF-Token" in form["hx-headers"]
    # No inline script or style: every script has a src, and there are no style elements or attributes.
    assert all(script.get("src") for script in page.find_all("script"))
    assert not page.find_all("style") and not page.select("[style]")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert response.headers["Vary"] and "HX-Request" in response.headers["Vary"]


async def test_htmx_send_streams_tokens_then_final_html(client: QuartClient, app: Quart, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["# Ti", "tle\n\n", "Some ", "**bold**", " text"]))
    action, csrf = await open_chat(client)
    answer = await send(client, action, csrf, "Hello there")
    assert answer.status_code == 200
    frames = answer.frames

    first = soup(frames[0][1])
    user, assistant = first.select("article")
    assert user["data-role"] == "user" and user.get_text(strip=True).endswith("Hello there")
    assert assistant["data-role"] == "assistant" and assistant["aria-busy"] == "true"
    message_id = assistant["id"]

    # Token frames: finished blocks are appended as HTML, the unfinished tail as escaped text.
    middle = frames[1:-2]
    assert len(middle) == 5
    assert any(f'hx-target="#{message_id}-blocks"' in data for _, data in middle)
    assert "<h1>Title</h1>" in "".join(data for _, data in middle)

    final_partial = soup(frames[-2][1]).find("hx-partial")
    assert final_partial["hx-target"] == f"#{message_id}" and final_partial["hx-swap"] == "outerHTML"
    final = final_partial.find("article")
    assert final["aria-busy"] == "false" and final["data-status"] == "complete"
    assert final.select_one("h1").get_text() == "Title"
    assert final.select_one("strong").get_text() == "bold"
    assert frames[-1][0] == "done"

    stored = await _store(app).message(stored_id(app, message_id))
    assert stored.status == "complete" and stored.content == "# Title\n\nSome **bold** text"
    assert "<h1>Title</h1>" in stored.html


async def test_history_goes_upstream_as_raw_markdown(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["*first* ", "answer"]), Reply(tokens=["second"]))
    action, csrf = await open_chat(client)
    await send(client, action, csrf, "question **one**")
    await send(client, action, csrf, "question two")

    sent = fake_upstream.requests[-1].body
    assert sent["stream"] is True and sent["model"] == "fake-model"
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert [m["content"] for m in sent["messages"][1:]] == ["question **one**", "*first* answer", "question two"]
    assert fake_upstream.requests[-1].headers["authorization"] == f"Bearer {CANARY_KEY}"


async def test_plain_form_post_streams_the_page_and_a_resend_is_not_sent_again(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["A ", "`code`", " answer.\n\n", "Second ", "block"]))
    action, csrf = await open_chat(client)
    page = soup(await (await client.get(action.removesuffix("/messages"))).get_data())
    send_token = page.select_one("input[name=send_token]")["value"]
    form = {"message": "no js here", "csrf_token": csrf, "send_token": send_token}
    response = await client.post(action, form=form)
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = soup(await response.get_data())

    # The draft streamed renders of the unfinished tail and rendered blocks; the finished message follows it.
    draft = page.select_one(".draft[data-role=draft]")
    assert draft.select(".live")[0].get_text() == "A "
    assert draft.select(".live")[1].select_one("code").get_text() == "code"  # before its block ended
    assert draft.select_one(".block code").get_text() == "code"
    final = draft.find_next_sibling("article")
    assert final["data-role"] == "assistant" and final["aria-busy"] == "false"
    assert final.select_one("code").get_text() == "code" and "Second block" in final.get_text()
    assert page.select_one("form#composer textarea[name=message]") is not None
    assert page.select_one("input[name=send_token]")["value"] != send_token

    # A reload re-posts the same form: it is recognised and shows the conversation instead.
    again = await client.post(action, form=form)
    assert again.status_code == 303 and again.headers["Location"] == action.removesuffix("/messages")
    assert len(fake_upstream.requests) == 1


async def test_htmx_resend_of_the_same_form_is_refused(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    action, csrf = await open_chat(client)
    page = soup(await (await client.get(action.removesuffix("/messages"))).get_data())
    form = {"message": "once", "send_token": page.select_one("input[name=send_token]")["value"]}
    headers = {**HTMX, "X-CSRF-Token": csrf}
    first = await client.post(action, form=form, headers=headers)
    frames = parse_sse((await first.get_data()).decode())
    new_token = soup(frames[0][1]).find("hx-partial", attrs={"hx-target": "#send-token"}).find("input")["value"]
    assert new_token != form["send_token"]
    second = await client.post(action, form=form, headers=headers)
    assert second.status_code == 409
    assert "already sent" in soup(await second.get_data()).select_one("[data-role=error]").get_text()
    assert len(fake_upstream.requests) == 1


async def test_empty_message_is_refused_and_nothing_is_stored(client: QuartClient, app: Quart, fake_upstream: FakeOpenAI) -> None:
    action, csrf = await open_chat(client)
    refused = await send(client, action, csrf, "  \n\x00 ")
    assert refused.status_code == 400
    error = soup(refused.body).select_one("[data-role=error]")
    assert "type a message" in error.get_text() and "request id" in error.get_text()
    assert fake_upstream.requests == []


async def test_too_long_message_keeps_the_text_in_the_box(client: QuartClient, app: Quart, fake_upstream: FakeOpenAI) -> None:
    action, csrf = await open_chat(client)
    long_text = "word " * 2000  # 10,000 characters; the limit is 8,000
    response = await client.post(action, form={"message": long_text, "csrf_token": csrf})
    assert response.status_code == 400
    page = soup(await response.get_data())
    assert "limit is 8,000" in page.select_one("#composer-error [data-role=error]").get_text()
    assert page.select_one("#composer textarea[name=message]").get_text() == long_text
    assert fake_upstream.requests == []


async def test_control_characters_are_removed_before_storing_and_sending(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    action, csrf = await open_chat(client)
    await send(client, action, csrf, "a\x00b\x07c\r\nd\te")
    assert fake_upstream.requests[0].body["messages"][-1]["content"] == "abc\nd\te"


async def test_missing_or_wrong_csrf_token_is_refused(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    action, _ = await open_chat(client)
    for form in ({"message": "hi"}, {"message": "hi", "csrf_token": "wrong"}):
        response = await client.post(action, form=form)
        assert response.status_code == 403
        assert "Reload the page" in (await response.get_data()).decode()
    assert fake_upstream.requests == []


async def test_another_browser_gets_404_for_a_conversation(app: Quart, fake_upstream: FakeOpenAI) -> None:
    alice, mallory = app.test_client(), app.test_client()
    action, csrf = await open_chat(alice)
    await send(alice, action, csrf, "my secret plans")
    page_url = action.removesuffix("/messages")

    response = await mallory.get(page_url)
    assert response.status_code == 404
    assert "my secret plans" not in (await response.get_data()).decode()
    _, mallory_csrf = await open_chat(mallory)
    assert (await send(mallory, action, mallory_csrf, "let me in")).status_code == 404
    assert (await mallory.get("/c/not-a-real-id")).status_code == 404


async def test_upstream_error_is_shown_saved_and_the_next_message_works(client: QuartClient, app: Quart, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(status=500), Reply(tokens=["fine ", "now"]))
    action, csrf = await open_chat(client)
    first = await send(client, action, csrf, "first")
    final, frames = first.final, first.frames
    assert final["aria-busy"] == "false" and final["data-status"] == "error"
    error = final.select_one("[data-role=error]").get_text()
    assert "request id" in error and "Fake upstream error" not in error and CANARY_KEY not in error
    assert frames[-1][0] == "done"

    assert (await send(client, action, csrf, "second")).final["data-status"] == "complete"


async def test_partial_answer_is_kept_when_the_stream_breaks(client: QuartClient, app: Quart, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["kept ", "text ", "lost"], drop_after=2))
    action, csrf = await open_chat(client)
    frames = (await send(client, action, csrf, "go")).frames
    final = soup(frames[-2][1]).find("article")
    assert final["data-status"] == "error" and "kept text" in final.get_text()
    message = await _store(app).message(stored_id(app, final["id"]))
    assert message.content == "kept text " and message.status == "error"


async def test_client_disconnect_saves_partial_and_closes_upstream(client: QuartClient, app: Quart, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["one ", "two ", "three ", "four"], delay=0.0, stall_after=2, stall=10))
    action, csrf = await open_chat(client)
    body = f"message=slow&csrf_token={csrf}".encode()
    headers = {**HTMX, "Content-Type": "application/x-www-form-urlencoded"}
    async with client.request(action, method="POST", headers=headers) as connection:
        await connection.send(body)
        await connection.send_complete()
        received = b""
        while b"two " not in received:
            received += await asyncio.wait_for(connection.receive(), 5)
        left_at = time.monotonic()
        await connection.disconnect()
    assert fake_upstream.wait_for_disconnect(timeout=2)
    assert fake_upstream.disconnects[-1] - left_at < 1.0

    messages = await _store(app).messages(action.split("/")[2])
    assistant = messages[-1]
    assert assistant.status == "stopped" and assistant.content == "one two "


async def test_demo_model_answers_without_a_key(demo_app: Quart) -> None:
    client = demo_app.test_client()
    page = soup(await (await client.get("/", follow_redirects=True)).get_data())
    assert "Demo mode" in page.select_one(".demo-banner").get_text()
    action, csrf = await open_chat(client)
    await client.post(action, form={"message": "What can you do?", "csrf_token": csrf})
    page = soup(await (await client.get(action.removesuffix("/messages"))).get_data())
    answer = page.select_one("article[data-role=assistant]")
    assert answer.select_one("h1, h2, h3") is not None and answer.select_one("table") is not None
    assert "What can you do?" in answer.select_one("blockquote").get_text()


async def test_the_api_key_never_reaches_a_page(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(status=401))
    action, csrf = await open_chat(client)
    frames = (await send(client, action, csrf, "hi")).frames
    bodies = [data for _, data in frames]
    bodies.append((await (await client.get(action.removesuffix("/messages"))).get_data()).decode())
    assert all(CANARY_KEY not in body and CANARY_KEY[:12] not in body for body in bodies)
    assert "API key" in soup(frames[-2][1]).select_one("[data-role=error]").get_text()


async def test_oversized_body_wrong_method_and_unknown_page_get_friendly_errors(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    action, csrf = await open_chat(client)
    huge = await client.post(action, form={"message": "x" * 200_000, "csrf_token": csrf})
    assert huge.status_code == 413
    assert "too large" in soup(await huge.get_data()).select_one("[data-role=error]").get_text()
    wrong_method = await client.get(action)
    assert wrong_method.status_code == 405
    missing = await client.get("/no/such/page")
    assert missing.status_code == 404
    for response in (huge, wrong_method, missing):
        text = (await response.get_data()).decode()
        assert "Traceback" not in text and "request id" in text
    assert fake_upstream.requests == []


async def test_an_abandoned_answer_is_shown_as_stopped_not_busy(client: QuartClient, app: Quart) -> None:
    action, csrf = await open_chat(client)
    await send(client, action, csrf, "first")
    conversation_id = action.split("/")[2]
    store = _store(app)
    abandoned = await store.add_message(conversation_id, "assistant", "half an ans", status="streaming")
    page = soup(await (await client.get(f"/c/{conversation_id}")).get_data())
    busy = page.select_one(f"#msg-{shown_id(app, abandoned.id)}")
    assert busy["aria-busy"] == "true"  # fresh: it may still be live, so it keeps asking how it is doing
    assert busy["hx-get"] == f"/c/{conversation_id}/messages/{shown_id(app, abandoned.id)}" and busy["hx-trigger"] == "load delay:1s"

    await store.db.rows("UPDATE messages SET updated_at = '2000-01-01T00:00:00.000+00:00' WHERE id = ?",
                            (abandoned.id,))
    page = soup(await (await client.get(f"/c/{conversation_id}")).get_data())
    article = page.select_one(f"#msg-{shown_id(app, abandoned.id)}")
    assert article["aria-busy"] == "false" and article["data-status"] == "stopped"
    assert "half an ans" in article.get_text() and "stopped before it was complete" in article.get_text()
    assert (await store.message(abandoned.id)).status == "stopped"


async def test_an_answer_still_streaming_elsewhere_is_not_sent_as_history(client: QuartClient, app: Quart,
                                                                          fake_upstream: FakeOpenAI) -> None:
    action, csrf = await open_chat(client)
    await send(client, action, csrf, "first")
    await _store(app).add_message(action.split("/")[2], "assistant", "half written", status="streaming")
    await send(client, action, csrf, "second")
    contents = [m["content"] for m in fake_upstream.requests[-1].body["messages"]]
    assert "half written" not in contents and contents[-1] == "second"


async def test_a_refused_resend_gives_the_form_a_new_token(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    action, csrf = await open_chat(client)
    form = {"message": "once", "send_token": "token-1"}
    headers = {**HTMX, "X-CSRF-Token": csrf}
    await client.post(action, form=form, headers=headers)
    refused = await client.post(action, form=form, headers=headers)
    body = soup(await refused.get_data())
    assert refused.status_code == 409
    fresh = body.find("hx-partial", attrs={"hx-target": "#send-token"}).find("input")["value"]
    assert fresh != "token-1"
    assert (await client.post(action, form={**form, "send_token": fresh}, headers=headers)).status_code == 200


async def test_new_chats_in_two_tabs_both_work(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    _, csrf = await open_chat(client)
    first_tab = (await client.get("/new")).headers["Location"]
    second_tab = (await client.get("/new")).headers["Location"]
    assert first_tab != second_tab
    for tab in (first_tab, second_tab):
        assert (await client.get(tab)).status_code == 200
        status = (await send(client, f"{tab}/messages", csrf, "hello")).status_code
        assert status == 200
    assert len(fake_upstream.requests) == 2


async def test_if_even_saving_fails_the_stream_still_ends_with_an_error(client: QuartClient, app: Quart,
                                                                        fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["a ", "b"], delay=0.2))
    action, csrf = await open_chat(client)
    store = _store(app)
    real_finish = store.finish_message

    async def broken_finish(message_id: int, **final: object):
        raise RuntimeError("disk gone")

    store.finish_message = broken_finish  # the database failing at the worst moment
    try:
        frames = (await send(client, action, csrf, "hi")).frames
    finally:
        store.finish_message = real_finish
    final = soup(frames[-2][1]).find("article")
    assert final["aria-busy"] == "false" and final["data-status"] == "error"
    assert "request id" in final.select_one("[data-role=error]").get_text()
    assert frames[-1][0] == "done"


async def test_an_answer_as_markdown_for_its_copy_button_and_its_owner_only(app: Quart,
                                                                          fake_upstream: FakeOpenAI) -> None:
    text = "Set `OPENAI_API_KEY`.\n\n```python\nprint('hi')\n```\n\n<b>not HTML</b> & *more*"
    fake_upstream.script(Reply(tokens=[text[:20], text[20:]]), Reply(tokens=["Another ", "try."]))
    alice, mallory = app.test_client(), app.test_client()
    action, csrf = await open_chat(alice)
    first = (await send(alice, action, csrf, "hi")).final
    url = f"{action}/{first['id'].removeprefix('msg-')}.md"

    response = await alice.get(url)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    assert await response.get_data(as_text=True) == text  # as the model wrote it, not HTML
    await open_chat(mallory)
    assert (await mallory.get(url)).status_code == 404  # another browser's: as if it never was
    assert (await alice.get(f"{action}/{'0' * 16}.md")).status_code == 404
    # A regenerated answer's old text is kept hidden: it is not copied either.
    await send(alice, action.removesuffix("/messages") + "/regenerate", csrf, "")
    assert (await alice.get(url)).status_code == 404


async def test_without_javascript_the_box_says_nothing_of_enter_and_carries_the_limit(app: Quart,
                                                                                     client: QuartClient) -> None:
    page = soup(await (await client.get("/", follow_redirects=True)).get_data())
    box = page.select_one("#composer textarea[name=message]")
    assert "Enter" not in box["placeholder"]  # Enter adds a line there: the script says what it does
    assert box["data-max-chars"] == str(app.config["CHATAPP"].max_message_chars)
    assert page.select_one(".theme-form button[type=submit]") is not None  # the no-JS theme switch


async def test_a_regenerated_answer_keeps_the_old_one_a_switch_away(app: Quart, fake_upstream: FakeOpenAI) -> None:
    """"1 / 2": both answers kept, switched with JavaScript (the answer swaps in place) or without
    (a post, then the page at the answer); the one shown is the one the model sees next."""
    fake_upstream.script(Reply(tokens=["Old answer."]), Reply(tokens=["New answer."]), Reply(tokens=["Next."]))
    alice, mallory = app.test_client(), app.test_client()
    action, csrf = await open_chat(alice)
    conversation = action.removesuffix("/messages")
    await send(alice, action, csrf, "question")
    new = (await send(alice, conversation + "/regenerate", csrf, "")).final
    pager = new.select_one("form.versions")
    assert pager.select_one(".version").get_text(" ", strip=True).startswith("2 / 2")
    assert pager.select_one("button[value=next]")["aria-disabled"] == "true"
    assert pager.select_one("button[value=previous]").get("aria-disabled") is None

    switched = await alice.post(pager["action"], form={"to": "previous"}, headers={**HTMX, "X-CSRF-Token": csrf})
    assert switched.status_code == 200
    old = soup(await switched.get_data()).find("article")
    assert "Old answer." in old.get_text() and old.select_one(".version").get_text(strip=True).startswith("1 / 2")
    assert old.select_one("button[form=regenerate-form]") is not None  # still the newest answer

    page = soup(await (await alice.get(conversation)).get_data())
    assert "Old answer." in page.get_text() and "New answer." not in page.get_text()
    await send(alice, action, csrf, "and then?")
    assert [m["content"] for m in fake_upstream.requests[-1].body["messages"] if m["role"] == "assistant"] == [
        "Old answer."]

    # Without JavaScript: a plain post, then the conversation at the answer now shown.
    no_js = await alice.post(old.select_one("form.versions")["action"], form={"to": "next", "csrf_token": csrf})
    assert no_js.status_code == 303 and no_js.headers["Location"].endswith(f"#{new['id']}")
    # Another browser, a forged form, a wrong choice: refused, nothing switched.
    _, mallory_csrf = await open_chat(mallory)
    assert (await mallory.post(pager["action"], form={"to": "previous"},
                               headers={**HTMX, "X-CSRF-Token": mallory_csrf})).status_code == 404
    assert (await alice.post(pager["action"], form={"to": "previous"})).status_code == 403
    wrong = await alice.post(pager["action"], form={"to": "sideways"}, headers={**HTMX, "X-CSRF-Token": csrf})
    assert wrong.status_code == 400 and "previous or the next" in (await wrong.get_data(as_text=True))
    assert "New answer." in (await (await alice.get(conversation)).get_data(as_text=True))


async def test_nul_characters_never_reach_the_database(app: Quart, client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    """PostgreSQL cannot store NUL in text: from the model it becomes U+FFFD, from a form nothing."""
    fake_upstream.script(Reply(tokens=["before\x00", "after"], reasoning=["thinking\x00"]))
    action, csrf = await open_chat(client)
    answer = await send(client, action, csrf, "hello\x00 there")
    assert answer.status_code == 200 and answer.final["data-status"] == "complete"
    messages = await _store(app).messages(action.split("/")[2])
    assert [m.content for m in messages] == ["hello there", "before\ufffdafter"]
    assert messages[1].reasoning == "thinking\ufffd"
    settings = await client.post(action.removesuffix("/messages") + "/settings",
                                 form={"csrf_token": csrf, "title": "A\x00B", "system_prompt": "Be\x00 brief"})
    assert settings.status_code == 303
    [row] = await _store(app).db.rows("SELECT title, system_prompt FROM conversations WHERE id = ?",
                                      (messages[0].conversation_id,))
    assert (row["title"], row["system_prompt"]) == ("AB", "Be brief")
