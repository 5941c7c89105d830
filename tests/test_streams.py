"""web/streams.py: how one reply is written out, as SSE frames for htmx and as a chunked page
without JavaScript, through the app's test client against the fake model server. (The token frames
and the draft's basic shape are in test_chat.py; this is the rest of the frames' contract.)"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from markupsafe import Markup
from quart import Quart, render_template
from quart.testing import QuartClient

from chatapp import create_app
from chatapp.rendering import Shown, StreamingMarkdown, StreamStep
from chatapp.storage import Message
from chatapp.turns import Turn
from chatapp.web import streams
from chatapp.web.frames import render as render_frame
from chatapp.web.http import SECURITY_HEADERS
from tests.conftest import app_settings, open_chat, parse_sse, soup
from tests.support import HTMX
from tests.support.faults import fail_writes
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support import hostile_checks
from tests.support.hostile_checks import fragment_violations, partials, tail_violations
from tests.support.hostile_corpus import VECTORS


@asynccontextmanager
async def _app(tmp_path: Path, fake: FakeOpenAI, **settings: object) -> AsyncIterator[Quart]:
    app = create_app(app_settings(tmp_path, fake, **settings))
    async with app.test_app():
        yield app


async def _sse(client: QuartClient, url: str, csrf: str, **form: str) -> list[tuple[str | None, str]]:
    response = await client.post(url, form=form, headers={**HTMX, "X-CSRF-Token": csrf})
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    return parse_sse((await response.get_data()).decode())


def _partials(html: str) -> list[tuple[str, str]]:
    return [(p["hx-target"], p["hx-swap"]) for p in soup(html).find_all("hx-partial", recursive=False)]


# --- the frames for htmx ----------------------------------------------------------------------------

async def test_a_frames_templates_render_alone_as_they_would_with_the_pages_context(app: Quart) -> None:
    """render_frame (web/frames.py) leaves out the context processors and renders in an environment
    of its own (synchronous, fewer globals): the frames must come out as render_template makes them."""
    def message(**fields: object) -> Message:
        return Message(**{"id": 7, "conversation_id": "c1", "role": "assistant", "content": "a *b*",
                          "html": Markup("<p>a <em>b</em></p>"), "status": "complete", "error": None, "model": "m",
                          "prompt_tokens": 3, "completion_tokens": 2, "created_at": "", "updated_at": "", **fields})

    question = message(id=6, role="user", content="q <b>", html=None, model=None)
    answers = [message(), message(status="streaming", content=""), message(status="error", error="It broke."),
               message(status="stopped", reasoning="hm", reasoning_html=Markup("<p>hm</p>"), thinking_seconds=2.0,
                       finish_reason="length", version_of=5, version=2, versions=2)]
    cases = [("_turn.html", {"turn": Turn([], question, answers[1], [])}),
             ("_conversation_entry.html", {"conversation_id": "c1", "title": "A <title>"}),
             ("_thinking.html", {"message_id": 7, "html": Markup("<p>x</p>"), "seconds": 3.0}),
             ("_thinking.html", {"message_id": 7, "live": True, "blocks": "", "text": Markup("y")})]
    cases += [("_message.html", {"message": shown, "last": True}) for shown in [question, *answers]]
    async with app.test_request_context("/c/c1/messages", method="POST"):
        for name, context in cases:
            assert render_frame(name, **context) == await render_template(name, **context), name


async def test_both_kinds_of_stream_are_never_cached_or_buffered(client: QuartClient) -> None:
    action, csrf = await open_chat(client)
    for headers, form, kind in [({**HTMX, "X-CSRF-Token": csrf}, {"message": "hi"}, "text/event-stream"),
                                ({}, {"message": "hi", "csrf_token": csrf}, "text/html")]:
        response = await client.post(action, form=form, headers=headers)
        assert response.mimetype == kind
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Accel-Buffering"] == "no"  # a proxy passes each piece on at once
        await response.get_data()


async def test_an_event_stream_carries_only_the_security_headers_a_stream_needs(client: QuartClient) -> None:
    """The document-only ones (CSP, framing, referrer, permissions, opener) are for the no-JS page."""
    action, csrf = await open_chat(client)
    stream = await client.post(action, form={"message": "hi"}, headers={**HTMX, "X-CSRF-Token": csrf})
    page = await client.post(action, form={"message": "hi", "csrf_token": csrf})
    assert stream.mimetype == "text/event-stream" and page.mimetype == "text/html"
    assert stream.headers["X-Content-Type-Options"] == "nosniff" and stream.headers["X-Request-ID"]
    assert (set(SECURITY_HEADERS) - {"X-Content-Type-Options"}) & set(stream.headers.keys()) == set()
    assert all(page.headers[name] == value for name, value in SECURITY_HEADERS.items())
    await stream.get_data()
    await page.get_data()


async def test_the_first_frame_of_a_later_answer_clears_the_old_controls_and_renews_the_send_token(
        client: QuartClient) -> None:
    action, csrf = await open_chat(client)
    await _sse(client, action, csrf, message="first")
    frames = await _sse(client, action, csrf, message="second", send_token="token-2")
    opening = frames[0][1]
    targets = _partials(opening)
    assert ("#messages .redo", "delete") in targets  # no regenerate or edit while an answer streams
    assert ("#send-token", "outerHTML") in targets and ("#context-note", "innerHTML") in targets
    assert ("#conversation-list", "afterbegin") not in targets  # it is listed already
    token = soup(opening).find("hx-partial", attrs={"hx-target": "#send-token"}).find("input")
    assert token["name"] == "send_token" and token["value"] not in ("", "token-2")
    user, answer = soup(opening).find_all("article", recursive=False)
    assert user.get_text(strip=True).endswith("second") and answer["aria-busy"] == "true"
    assert soup(opening).find("hx-partial", attrs={"hx-target": "#context-note"}).get_text() == ""


async def test_the_first_frame_says_when_older_messages_are_left_out(tmp_path: Path,
                                                                     fake_upstream: FakeOpenAI) -> None:
    async with _app(tmp_path, fake_upstream, context_tokens=60) as app:
        client = app.test_client()
        action, csrf = await open_chat(client)
        fake_upstream.script(Reply(tokens=["a long answer " * 20]))
        await _sse(client, action, csrf, message="a long question " * 20)
        frames = await _sse(client, action, csrf, message="short")
        note = soup(frames[0][1]).find("hx-partial", attrs={"hx-target": "#context-note"})
        assert note.get_text() == "The 2 oldest messages are no longer sent to the model, to fit its context."


async def test_editing_the_first_question_replaces_its_bubbles_without_listing_the_conversation_again(
        client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    action, csrf = await open_chat(client)
    first = await _sse(client, action, csrf, message="typo")
    old_question, old_answer = (a["id"] for a in soup(first[0][1]).find_all("article", recursive=False))
    url = action.removesuffix("/messages")
    frames = await _sse(client, f"{url}/edit", csrf, message="fixed")
    targets = _partials(frames[0][1])
    assert (f"#{old_question}", "delete") in targets and (f"#{old_answer}", "delete") in targets
    assert ("#conversation-list", "afterbegin") not in targets and ("#no-conversations", "delete") not in targets
    assert [a["data-role"] for a in soup(frames[0][1]).find_all("article", recursive=False)] == ["user", "assistant"]


async def test_the_last_frame_replaces_the_answer_and_gives_the_question_its_edit_control(
        client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["An ", "answer."], usage=(7, 3)))
    action, csrf = await open_chat(client)
    frames = await _sse(client, action, csrf, message="a question")
    user, answer = (a["id"] for a in soup(frames[0][1]).find_all("article", recursive=False))
    closing = soup(frames[-2][1])
    assert _partials(frames[-2][1]) == [(f"#{answer}", "outerHTML"), (f"#{user}-actions", "innerHTML")]
    final_answer, edit_control = closing.find_all("hx-partial")
    final_answer = final_answer.find("article")
    assert final_answer["data-status"] == "complete" and "10 tokens" in final_answer.get_text()
    assert final_answer.select_one("button[form=regenerate-form]") is not None
    assert edit_control.select_one("details.edit textarea").get_text() == "a question"
    # The question's actions then hold what a page load shows in them.
    page = soup(await (await client.get(action.removesuffix("/messages"))).get_data())
    assert page.select_one(f"#{user}-actions").decode_contents().strip() == edit_control.decode_contents().strip()
    assert frames[-1] == ("done", "")


async def test_a_retry_is_told_on_the_answers_notice_line(tmp_path: Path, fake_upstream: FakeOpenAI) -> None:
    async with _app(tmp_path, fake_upstream, max_retries=1) as app:
        fake_upstream.script(Reply(status=503, headers={"retry-after-ms": "10"}), Reply(tokens=["ok"]))
        client = app.test_client()
        action, csrf = await open_chat(client)
        frames = await _sse(client, action, csrf, message="hi")
        answer = soup(frames[0][1]).find_all("article", recursive=False)[1]["id"]
        notice = soup(frames[1][1]).find("hx-partial")
        assert (notice["hx-target"], notice["hx-swap"]) == (f"#{answer}-notice", "innerHTML")
        assert notice.get_text() == "The model server did not answer; trying again in 0 s (try 2 of 2)…"
        assert soup(frames[-2][1]).find("article")["data-status"] == "complete"


def test_a_step_appends_finished_blocks_and_shows_the_tail_rendered_with_its_text_escaped() -> None:
    step = StreamStep(Markup("<p>done</p>"), "<b>**next", True, Shown("<b>", Markup("<p><strong>next"),
                                                                         Markup("</strong></p>")))
    assert streams._step_partials("msg-x", step) == (
        '<hx-partial hx-target="#msg-x-blocks" hx-swap="beforeend"><p>done</p></hx-partial>'
        '<hx-partial hx-target="#msg-x-tail" hx-swap="innerHTML"><p><strong>next'
        '<span id="msg-x-tail-end" class="end">&lt;b&gt;</span></strong></p></hx-partial>')
    # Text that follows goes in where the tail's text goes on, escaped.
    step = StreamStep(None, "<i>", False, Shown("<i>"))
    assert streams._step_partials("msg-x", step) == (
        '<hx-partial hx-target="#msg-x-tail-end" hx-swap="beforeend">&lt;i&gt;</hx-partial>')
    # A block that ends the text: the old tail is emptied, not left beside the block.
    step = StreamStep(Markup("<p>end</p>"), "", True, Shown("", Markup(""), Markup("")))
    assert _partials(streams._step_partials("msg-x", step)) == [("#msg-x-blocks", "beforeend"),
                                                                ("#msg-x-tail", "innerHTML")]
    assert streams._step_partials("msg-x", StreamStep(None, "", False, Shown(""))) == ""


def test_each_streamed_tail_partial_of_hostile_text_is_as_safe_as_a_block() -> None:
    for name, text in VECTORS:
        for size in (1, 5):
            stream = StreamingMarkdown()
            for i in range(0, len(text), size):
                found, problems = partials(streams._step_partials("msg-0123456789abcdef",
                                                                  stream.feed(text[i:i + size])))
                for m in found:
                    if m["target"].endswith("-blocks"):
                        problems += fragment_violations(m["body"])
                    else:
                        problems += tail_violations(m.group(0))
                assert problems == [], name


def test_the_check_of_a_rendered_tail_is_as_strict_as_the_check_of_a_block() -> None:
    def partial(body: str, target: str = "#msg-1-tail") -> str:
        return f'<hx-partial hx-target="{target}" hx-swap="innerHTML">{body}</hx-partial>'

    end = '<span id="msg-1-tail-end" class="end">'
    assert tail_violations(partial(f"<p><strong>a{end}&lt;b&gt;</span></strong></p>")) == []
    assert tail_violations(partial("plain &lt;text&gt;")) == []
    for body in ["<p>no end span</p>", f"<p><b>x</b>{end}</span></p>", f'<p onclick="x">{end}</span></p>',
                 f'<p id="composer">{end}x</span></p>', f"<p>{end}<i>x</i></span></p>",
                 f'<p>{end}x</span><span id="msg-1-tail-end" class="end">y</span></p>',
                 '<p><span id="msg-1-tail-end" class="end" onclick="x">x</span></p>',
                 f'<a href="javascript:x">{end}x</span></a>', f"<p>{end}x</span><script>x</script></p>",
                 f'<p title="{end}">{end}x</span></p>']:
        assert tail_violations(partial(body)), body
    assert tail_violations(partial("<b>x</b>", "#msg-1-tail-end"))  # text added to a tail: escaped only


# --- the page without JavaScript --------------------------------------------------------------------

def test_a_draft_render_of_the_tail_stays_open_for_its_text_until_the_next_piece_closes_it() -> None:
    draft = streams._Draft()
    assert draft.chunk(StreamStep(None, "**a<", True, Shown("<", Markup("<p><strong>a"),
                                                            Markup("</strong></p>")))) == (
        '<div class="live"><p><strong>a<span class="end">&lt;')
    assert draft.chunk(StreamStep(None, "b", False, Shown("b"))) == "b"
    assert draft.chunk(StreamStep(Markup("<p>x</p>"), "", True, Shown("", Markup(""), Markup("")))) == (
        '</span></strong></p></div><div class="block"><p>x</p></div><div class="live"><span class="end">')
    assert draft.close() == "</span></div>" and draft.close() == ""


async def test_the_draft_shows_the_tail_rendered_and_css_keeps_only_its_last_render(
        client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["## Ti", "tle\n\n", "```python\n", "import os\n", "print(1)\n",
                                       "```\n\nDone **now", "**."]))
    action, csrf = await open_chat(client)
    body = (await (await client.post(action, form={"message": "hi", "csrf_token": csrf})).get_data()).decode()
    draft = soup(body).select_one(".draft > .content")
    pieces = draft.find_all(True, recursive=False)
    assert {p.name + "." + p["class"][0] for p in pieces} == {"div.live", "div.block"}
    assert pieces[0].select_one("h2").get_text() == "Ti"  # the heading, before its line ended
    code = [p for p in pieces if p["class"] == ["live"] and p.select_one("pre code")]
    assert code and "import os" in code[-1].select_one("pre code").get_text()
    assert "```" not in code[-1].get_text() and "##" not in draft.get_text()
    assert hostile_checks._draft_piece_violations(pieces, reasoning_allowed=True) == []
async def test_the_page_tells_of_a_retry_and_ends_with_the_answer_and_the_form(tmp_path: Path,
                                                                               fake_upstream: FakeOpenAI) -> None:
    async with _app(tmp_path, fake_upstream, max_retries=1) as app:
        fake_upstream.script(Reply(status=429, headers={"retry-after-ms": "10"}), Reply(tokens=["fine"]))
        client = app.test_client()
        action, csrf = await open_chat(client)
        response = await client.post(action, form={"message": "hi", "csrf_token": csrf})
        body = (await response.get_data()).decode()
        page = soup(body)
        assert page.select_one(".draft p.notice").get_text().startswith("The model server is busy; trying again")
        final = page.select_one(".draft").find_next_sibling("article")
        assert final["data-status"] == "complete" and final.select_one(".content").get_text() == "fine"
        assert body.count("<html") == 1 and body.rstrip().endswith("</html>")
        assert page.select_one("form#composer textarea[name=message]") is not None


async def test_the_page_still_ends_with_an_error_when_the_answer_cannot_be_saved(
        client: QuartClient, app: Quart, caplog: pytest.LogCaptureFixture) -> None:
    action, csrf = await open_chat(client)
    # The disk fails just as the answer is saved (a real failure of the database, not a stand-in).
    await fail_writes(app.extensions["store"], "BEFORE UPDATE OF status ON messages", when="NEW.status != 'streaming'")
    response = await client.post(action, form={"message": "hi", "csrf_token": csrf})
    assert response.status_code == 200
    body = (await response.get_data()).decode()
    final = soup(body).select_one(".draft").find_next_sibling("article")
    assert final["data-status"] == "error" and final["aria-busy"] == "false"
    assert "Something went wrong on our side" in final.select_one("[data-role=error]").get_text()
    assert body.rstrip().endswith("</html>")
    assert any(r.levelno == logging.ERROR and "could not be saved" in r.getMessage() for r in caplog.records)
    assert app.extensions["quota"].streaming == 0  # its slot came back all the same
