"""Hostile input, everywhere it can enter: the renderer, the views, and a real browser.

Every vector of tests/support/hostile_corpus.py goes through
1. `render_markdown` and `StreamingMarkdown` (random piece sizes: each step's blocks, the escaped
   tail partial, and `finish()`);
2. the views, as model output and as user input, on the htmx SSE path, the no-JS chunked page and
   the page reloaded from storage;
3. Chromium, with JavaScript on (htmx streaming) and off, watching for dialogs, `window.__pwned`,
   CSP violations, script errors and requests to any other host;
then hypothesis looks for what the corpus missed. The checks (tests/support/hostile_checks.py) only
look at what came from the model or the user (the page's own markup is trusted), and each path
(tests/support/hostile_paths.py, hostile_browser.py) reports how many vectors it tried and which
got through (`test_*_paths_report`, and bench/hostile_report.py prints the figures).
"""

from __future__ import annotations

import random
import re
import time
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quart import Quart

from chatapp.rendering import StreamingMarkdown, render_markdown
from chatapp.web import sse
from tests.conftest import MakeApp
from tests.support.client import conversation_url, parse_sse
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.hostile_browser import answers, browser_js_off, browser_js_on
from tests.support.hostile_checks import (
    MAX_CHARS, fragment_violations, page_violations, refused_violations, soup, sse_violations, tail_violations,
    valid_message,
)
from tests.support.hostile_corpus import VECTORS
from tests.support.hostile_paths import Tally, new_chat, pieces, renderer_paths, send, views_paths
from tests.support.live_server import LiveServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser


# --- path 1: the renderer ------------------------------------------------------------------------
def test_corpus_is_big_and_named() -> None:
    assert len(VECTORS) >= 100
    assert all(isinstance(name, str) and isinstance(text, str) and text for name, text in VECTORS)


def test_renderer_paths_report() -> None:
    tally = renderer_paths()
    assert tally.tried == {"render_markdown": len(VECTORS), "StreamingMarkdown": len(VECTORS)}
    assert tally.failures() == []


def test_streaming_finish_equals_one_shot_render_for_every_vector() -> None:
    for name, text in VECTORS:
        stream = StreamingMarkdown()
        for piece in pieces(text, random.Random(name)):
            stream.feed(piece)
        assert stream.finish() == render_markdown(text), name


def test_the_checks_catch_what_they_are_meant_to_catch() -> None:
    """The assertions can fail: each of these would be a hole."""
    bad = [
        '<p><img src="x" onerror="alert(1)"></p>',
        '<p><a href="javascript:alert(1)" rel="nofollow noopener noreferrer">x</a></p>',
        '<p><a href="jav&#x09;ascript:alert(1)" rel="nofollow noopener noreferrer">x</a></p>',
        '<p onclick="x">x</p>', '<div style="x">x</div>', '<div data-hx-get="/">x</div>',
        '<span id="composer">x</span>', "<p>&lt;ok&gt; <hx-partial hx-target=body></p>",
        "<p><!--chatapp:answer--></p>", "</template>", "<script>x</script>", '<div class="evil">x</div>',
        '<a href="https://ok.example">x</a>',  # no rel
    ]
    for html in bad:
        assert fragment_violations(html), html
    assert tail_violations(sse.text_partial("t", "innerHTML", "<x>")) == []
    assert tail_violations('<hx-partial hx-target="#t" hx-swap="innerHTML"><b>x</b></hx-partial>')
    ok = str(render_markdown("# T\n\n*a* [l](https://ok.example) `c`\n\n```python\nx = 1\n```\n\n| a |\n|:-|\n| b |"))
    assert fragment_violations(ok) == []


# --- path 2: the views ---------------------------------------------------------------------------
@pytest.fixture
async def hostile_app(make_app: MakeApp) -> Quart:
    return await make_app(max_message_chars=MAX_CHARS)


async def test_views_paths_report(hostile_app: Quart, fake_upstream: FakeOpenAI) -> None:
    tally = await views_paths(hostile_app, fake_upstream)
    refused = sum(not valid_message(text) for _, text in VECTORS)
    assert tally.tried == {
        "model+user (htmx SSE)": len(VECTORS), "model+user (no-JS page)": len(VECTORS),
        "reasoning+answer (htmx SSE)": len(VECTORS), "reasoning+answer (no-JS page)": len(VECTORS),
        "stored page": len(VECTORS),
        **({"user input refused (htmx SSE)": refused, "user input refused (no-JS page)": refused} if refused else {}),
    }
    assert tally.failures() == []


async def test_the_view_checks_catch_a_hole(hostile_app: Quart, fake_upstream: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the sanitizer switched off, the same checks report the vectors that get through."""
    import bleach

    import chatapp.sanitize as sanitize
    loose = bleach.Cleaner(tags={"p", "a", "img", "script"}, attributes={"*": ["href", "src", "onerror"]},
                           protocols={"http", "https", "javascript"}, strip_comments=True)
    monkeypatch.setattr(sanitize, "_cleaner", loose)
    tally = await views_paths(hostile_app, fake_upstream, [
        ("md-link-javascript", "[x](javascript:alert(1))"),
        ("safe", "plain *text*"),
    ])
    assert [f.split(":")[0] for f in tally.failures()] == [
        "[model+user (no-JS page)] md-link-javascript", "[reasoning+answer (no-JS page)] md-link-javascript",
        "[model+user (htmx SSE)] md-link-javascript", "[reasoning+answer (htmx SSE)] md-link-javascript",
        "[stored page] md-link-javascript",
    ]


THOUGHTS = ["Let me **see**.\n\n", "More", " *thought*.\n\n", "End"]  # blocks in the opening and a later piece
# What a model could slip into a reasoning block if the sanitizer let it: each must be caught.
PLANTED = ["<script>window.__pwned=1</script>", '<img src="x" onerror="alert(1)">',
           '<a href="javascript:alert(1)" rel="nofollow noopener noreferrer">x</a>']


# What the element checks say of each (the page checks would catch some of them on their own: the
# reasoning's own checks must).
FOUND = ("<script>: forbidden element", "onerror='alert(1)'>: forbidden attribute", "not an http(s)/mailto link")


def _caught(problems: list[str]) -> bool:
    return any(found in problem for problem in problems for found in FOUND)


def _planted(text: str, old: str, new: str, index: int) -> str:
    """`text` with the `index`th occurrence of `old` replaced by `new`."""
    parts = text.split(old)
    assert len(parts) > index + 1, (old, index)
    return old.join(parts[:index + 1]) + new + old.join(parts[index + 1:])


async def test_the_reasoning_checks_catch_a_hole(hostile_app: Quart, fake_upstream: FakeOpenAI) -> None:
    """The app's own reasoning passes every check, and the same output with a hole planted in its
    reasoning (where no answer text is) fails them: in each place the reasoning shows, as each
    kind of hole, and as partials the app never sends."""
    chat = await new_chat(hostile_app)
    fake_upstream.script(Reply(reasoning=THOUGHTS, tokens=["The answer."]), Reply(reasoning=THOUGHTS, tokens=["Fine."]))
    stream = (await send(chat, "Why?", htmx=True)).body
    page = (await send(chat, "Why not?", htmx=False)).body
    stored = (await (await chat.client.get(conversation_url(chat.action))).get_data()).decode()
    users = ["Why?", "Why not?"]
    assert sse_violations(stream, "Why?") == []
    assert page_violations(page, users, live=True) == []
    assert page_violations(stored, users) == []
    answer = soup(parse_sse(stream)[0][1]).find_all("article")[-1]["id"]

    # Every place a reasoning block is in the stream (the block opened with its first piece, the tail,
    # a later piece, the block closed once the answer begins, the finished message), in the no-JS page
    # (the earlier message's, the draft's pieces, the finished message's) and in the stored page.
    for html, least, violations in ((stream, 3, lambda html: sse_violations(html, "Why?")),
                                    (page, 3, lambda html: page_violations(html, users, live=True)),
                                    (stored, 2, lambda html: page_violations(html, users))):
        for old in ("<strong>see</strong>", "<em>thought</em>"):
            assert html.count(old) >= least, old
            for index in range(html.count(old)):
                for hole in PLANTED:
                    assert _caught(violations(_planted(html, old, hole, index))), (old, index, hole, html[:100])
    # A reasoning tail, rendered or as text, holds no hole either.
    tail = re.search(rf'hx-target="#{answer}-thinking-tail(?:-end)?" hx-swap="(?:innerHTML|beforeend)">', stream)
    assert tail is not None
    problems = sse_violations(stream.replace(tail[0], tail[0] + PLANTED[1], 1), "Why?")
    assert _caught(problems) or any("unescaped markup in a tail" in problem for problem in problems), problems
    # Partials the app never sends: another element's target, another swap, a second opening, a status
    # said again, the answer's text while the model thinks, a piece of reasoning after its block
    # closed, a block or a summary that is not the template's.
    blocks = f'<hx-partial hx-target="#{answer}-thinking-blocks" hx-swap="beforeend">'
    answer_blocks, answer_tail = blocks.replace("-thinking-blocks", "-blocks"), f'<hx-partial hx-target="#{answer}-tail"'
    assert "data: " + blocks in stream and "data: " + answer_tail in stream
    opening = next(data for _, data in parse_sse(stream) if 'class="thinking live"' in data)
    for bad in (
        stream.replace(blocks, blocks.replace(f"#{answer}-thinking-blocks", "#msg-0000000000000000-thinking-blocks")),
        stream.replace(blocks, blocks.replace(f"#{answer}-thinking-blocks", "#conversation-list")),
        stream.replace(blocks, blocks.replace(f"#{answer}-thinking-blocks", f"#{answer}-status")),
        stream.replace(blocks, blocks.replace("beforeend", "outerHTML")),
        stream.replace("data: " + answer_tail, sse.frame(opening).decode() + "data: " + answer_tail, 1),
        stream.replace(blocks, f'<hx-partial hx-target="#{answer}-status" hx-swap="innerHTML">Thinking…</hx-partial>'
                               + blocks),
        stream.replace("data: " + blocks, f"data: {answer_blocks}<p>x</p></hx-partial>\n\ndata: {blocks}", 1),
        stream.replace("data: " + answer_tail, f"data: {blocks}<p>x</p></hx-partial>\n\ndata: {answer_tail}", 1),
        stream.replace('class="thinking live" open>', 'class="thinking live" open hx-get="/new">'),
        stream.replace('class="thinking-inner">', 'class="thinking-inner"><div id="composer"></div>'),
        stream.replace("<summary>Thought", "<summary><b>x</b>Thought"),
    ):
        assert bad != stream and sse_violations(bad, "Why?"), bad
    # A reasoning block where the app puts none, or one too many.
    user = '<div class="content plain">Why?</div>'
    assert page_violations(stored.replace(user, user + '<details class="thinking"><summary>x</summary></details>'),
                           users)
    assert page_violations(page.replace("<details class=\"thinking live\" open>",
                                        '<details class="thinking live" open></details><details class="thinking live" open>', 1),
                           users, live=True)


# --- path 3: a real browser ----------------------------------------------------------------------
def test_browser_paths_report(browser: Browser, live_server: LiveServer, fake_upstream: FakeOpenAI) -> None:
    started = time.monotonic()
    tally = Tally()
    browser_js_on(browser, live_server, fake_upstream, tally)
    browser_js_off(browser, live_server, fake_upstream, tally)
    refused = sum(len(b) for b in answers() if not valid_message("\n\n".join(t for _, t in b)))
    assert tally.tried == {
        "browser, JS on (streamed)": len(VECTORS), "browser, JS on (reasoning, streamed)": len(VECTORS),
        "browser, JS on (reloaded)": len(VECTORS),
        "browser, JS off (streamed page)": len(VECTORS), "browser, JS off (reasoning, streamed page)": len(VECTORS),
        **({"browser, JS off (refused input)": refused} if refused else {}),
    }
    assert tally.failures() == []
    assert time.monotonic() - started < 90


# --- path 4: what the corpus missed (hypothesis) -------------------------------------------------
MARKDOWNISH = st.lists(
    st.sampled_from([
        "[", "]", "(", ")", "![", "](", "]: ", "<", ">", "</", "\"", "'", "`", "```", "~~~", "\n", "\n\n", " ",
        "    ", "> ", "- ", "1. ", "| ", "|---|", "*", "_", "\\", "&", "&#", "&#x", ";", "&colon;", "&#106;",
        "javascript:", "JaVaScRiPt:", "vbscript:", "data:text/html,", "java\tscript:", "https://", "mailto:",
        "//", "attacker.example", "alert(1)", "hx-", "<hx-partial", "</hx-partial>", "hx-get=", "data-hx-",
        "on", "onerror=", "onclick=", "style=", "id=", "class=", "img", "script", "svg", "iframe", "template",
        "<!--", "-->", "chatapp:answer", "{", "}", ".", "#", "=", "title", "\x00", "\x02", "\x03", "\r",
        "\u202e", "\u200b", "＜", "@",
    ]) | st.text(max_size=8),
    max_size=40,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=st.text() | MARKDOWNISH, data=st.data())
def test_property_renderer_never_lets_markup_through(text: str, data: st.DataObject) -> None:
    assert fragment_violations(str(render_markdown(text))) == []
    stream = StreamingMarkdown()
    for piece in pieces(text, random.Random(data.draw(st.integers(0, 2**32)))):
        step = stream.feed(piece)
        if step.blocks is not None:
            assert fragment_violations(str(step.blocks)) == []
        assert tail_violations(sse.text_partial("msg-1-tail", "innerHTML", step.tail)) == []
    assert stream.finish() == render_markdown(text)


MESSAGES = (
    st.text(st.characters(exclude_categories=["Cs"]), max_size=300)
    | MARKDOWNISH
    # huge: a short unit repeated past (or up to) the limit, in 1- to 4-byte characters
    | st.builds(lambda unit, n: (unit * n)[:12_000], st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=4),
                st.integers(1, 12_000))
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=MESSAGES, htmx=st.booleans())
async def test_property_any_message_gets_an_answer_or_a_reason(
        hostile_app: Quart, fake_upstream: FakeOpenAI, message: str, htmx: bool) -> None:
    chat = await new_chat(hostile_app)
    answer = await send(chat, message, htmx=htmx)
    status, body = answer.status_code, answer.body
    assert status < 500
    if valid_message(message) and _form_bytes(message) > MAX_BODY:
        # A valid message whose url-encoded form is over MAX_CONTENT_LENGTH.
        assert status == 413
    elif valid_message(message):
        assert status == 200, (status, body[:300])
        if htmx:
            assert sse_violations(body, message) == []
        else:
            assert page_violations(body, [message], live=True) == []
    else:
        assert 400 <= status < 500
        assert refused_violations(message, status, body, htmx) == []


MAX_BODY = MAX_CHARS * 12 + 16_384  # chatapp/web/app.py: MAX_CONTENT_LENGTH


def _form_bytes(message: str) -> int:
    from urllib.parse import urlencode

    return len(urlencode({"message": message, "csrf_token": "x" * 32, "send_token": "x" * 16}))


@pytest.mark.parametrize("message", ["😀" * 8000, "漢" * 6000, "𐀀" * 4100], ids=["emoji-8000", "cjk-6000", "astral-4100"])
async def test_a_message_within_the_character_limit_is_never_too_large(hostile_app: Quart, message: str) -> None:
    chat = await new_chat(hostile_app)
    assert (await send(chat, message, htmx=True)).status_code == 200


def test_an_image_alt_text_is_shown_as_written() -> None:
    for target in ("https://x.example/i.png", "javascript:x"):
        assert soup(str(render_markdown(f"![a<b & c]({target})"))).get_text() == "a<b & c"
