"""The page's layout in Debian's Chromium: tables, the composer's controls, the phone's menu, the
empty chat's examples, and where a reader lands without JavaScript (issue 13)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from tests.support.browser import NewPage, save_settings, send
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live_server import LiveServer

if TYPE_CHECKING:
    from playwright.sync_api import Page

PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
NO_JS = {"java_script_enabled": False}

WIDE_TABLE = (
    "| Status | Requests | Latency (ms) | Region | Endpoint | Notes |\n"
    "|---|---:|---:|---|---|---|\n"
    "| 200 | 18,204 | 35.7 | eu-west-1 | /api/conversations | Served from the cache |\n"
    "| 404 | 1,093 | 12.1 | us-east-2 | /api/conversations/unknown | Missing conversation ids |\n"
    "| 503 | 57 | 2,004.9 | ap-south-1 | /api/messages/stream | Upstream model overloaded |\n"
)

# For each cell: its text's number of line boxes, and of words (split at spaces, and after a hyphen
# or a slash as "eu-west-1" or a path may be): no word, and no number, ever breaks across lines.
CELL_LINES = """() => [...document.querySelectorAll("article[data-role=assistant] td, article[data-role=assistant] th")]
  .map((cell) => {
    const range = document.createRange();
    range.selectNodeContents(cell);
    const tops = new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top)));
    const text = cell.textContent.trim();
    return [text, tops.size, text.split(/\\s+|(?<=[-\\/])/).filter(Boolean).length];
  })"""


def submit(page: Page, message: str) -> None:
    """Send with the button (on a touch phone Enter may add a line instead)."""
    page.fill("#message", message)
    page.click("#composer button[type=submit]")


def finished(page: Page) -> None:
    page.locator("article[data-role=assistant][aria-busy=false]").last.wait_for(timeout=20_000)


@pytest.mark.parametrize("device", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_a_wide_table_scrolls_sideways_and_its_cells_keep_words_and_numbers_whole(
        new_page: NewPage, live_server: LiveServer, fake_upstream: FakeOpenAI, device: dict) -> None:
    fake_upstream.script(Reply(tokens=["Here it is:\n\n", WIDE_TABLE]))
    page = new_page(**device)
    page.goto(live_server.url + "/")
    submit(page, "A wide table, please")
    finished(page)
    cells = page.evaluate(CELL_LINES)
    assert len(cells) == 24
    broken = [(text, lines) for text, lines, words in cells if lines > words]
    assert broken == [], "cells broken inside a word or number"
    numbers = [(text, lines) for text, lines, _ in cells if text.replace(",", "").replace(".", "").isdigit()]
    assert len(numbers) == 9 and all(lines == 1 for _, lines in numbers)
    table = page.locator("article[data-role=assistant] table")
    sizes = table.evaluate("t => [t.scrollWidth, t.clientWidth, getComputedStyle(t).overflowX,"
                           " t.closest('.message').getBoundingClientRect().right - t.getBoundingClientRect().right]")
    scroll_width, client_width, overflow, room_on_the_right = sizes
    assert overflow == "auto" and room_on_the_right >= 0, "the table stays inside the bubble"
    if device is PHONE:
        assert scroll_width > client_width, "on a phone the wide table scrolls sideways"
        table.evaluate("t => { t.scrollLeft = 10000; }")
        assert table.evaluate("t => t.scrollLeft") > 0
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "the page itself never scrolls sideways"


@pytest.mark.parametrize("device", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_send_keeps_its_place_while_an_answer_streams_and_stop_takes_it(
        new_page: NewPage, make_live_server: Callable[..., LiveServer], fake_upstream: FakeOpenAI, device: dict) -> None:
    server = make_live_server(CHATAPP_MODELS="fake-model,another-model-with-a-long-name")
    page = new_page(**device)
    page.goto(server.url + "/")
    assert page.locator("#model").is_visible()
    send_button = page.locator("#composer button[type=submit]")
    page.fill("#message", "First")
    before = send_button.bounding_box()
    fake_upstream.script(Reply(tokens=[f"word{i} " for i in range(200)], delay=0.02))
    page.click("#composer button[type=submit]")
    page.locator("body.streaming").wait_for()
    page.locator("article[data-role=assistant][aria-busy=true]").wait_for()
    during = send_button.bounding_box()
    stop = page.locator("#composer .stop")
    assert stop.is_visible()
    stop_box = stop.bounding_box()
    assert during == before, "Send did not move"
    assert abs(stop_box["x"] + stop_box["width"] - (before["x"] + before["width"])) <= 1
    assert abs(stop_box["y"] - before["y"]) <= 1, "Stop is where Send was"
    finished(page)

    # An error gets a row of its own: as wide as the box, and Send stays at the right.
    submit(page, "x" * 9000)
    error = page.locator("#composer-error [data-role=error]")
    error.wait_for()
    box = page.locator("#message").bounding_box()
    assert error.bounding_box()["width"] >= box["width"] * 0.9
    after = send_button.bounding_box()
    assert abs(after["x"] + after["width"] - (before["x"] + before["width"])) <= 1


def test_without_javascript_the_reader_lands_at_the_new_answer(new_page: NewPage, live_server: LiveServer,
                                                               fake_upstream: FakeOpenAI) -> None:
    long_answer = [f"Paragraph {i}: " + "some words to read " * 12 + "\n\n" for i in range(30)]
    fake_upstream.default = Reply(tokens=long_answer)
    page = new_page(**DESKTOP, **NO_JS)
    page.goto(live_server.url + "/")
    send(page, "The first long question", javascript=False)
    send(page, "The second long question", javascript=False)
    finished(page)
    assert page.evaluate("document.documentElement.scrollHeight") > 3 * 800
    answer = page.locator("article[data-role=assistant][aria-busy=false]").last
    top = answer.bounding_box()["y"]
    assert 0 <= top < 800 * 0.7, f"the new answer starts at {top}px, outside the window"
    assert page.evaluate("window.scrollY") > 800


def test_on_a_phone_the_menu_button_opens_the_conversation_list_without_javascript(
        new_page: NewPage, live_server: LiveServer) -> None:
    page = new_page(**PHONE, **NO_JS)
    page.goto(live_server.url + "/")
    send(page, "A first conversation", javascript=False)
    page.goto(page.url.removesuffix("/messages"))
    entry = page.locator("#conversation-list > li > a").first
    assert not entry.is_visible()
    page.click("details.conversations-menu > summary")
    assert entry.is_visible() and entry.text_content() == "A first conversation"
    # Each conversation has its own menu: rename, export, delete.
    page.click("#conversation-list details.entry-menu > summary")
    assert page.locator("#conversation-list .entry-menu a", has_text="Delete").is_visible()

    desktop = new_page(**DESKTOP, **NO_JS)
    desktop.goto(live_server.url + "/")
    assert desktop.locator("#conversation-list").is_visible()
    assert not desktop.locator("details.conversations-menu > summary").is_visible()


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_on_a_phone_the_menu_button_shares_the_top_bar_and_the_title_bar_follows_it(
        new_page: NewPage, live_server: LiveServer, fake_upstream: FakeOpenAI, javascript: bool) -> None:
    page = new_page(**PHONE, java_script_enabled=javascript)
    page.goto(live_server.url + "/")
    if javascript:
        submit(page, "A first conversation")
        finished(page)
    else:
        send(page, "A first conversation", javascript=False)
        page.goto(page.url.removesuffix("/messages"))
    menu = page.locator("details.conversations-menu > summary").bounding_box()
    top = page.locator("header.topbar").bounding_box()
    brand = page.locator("header.topbar .brand").bounding_box()
    title = page.locator("#conversation-bar .title").bounding_box()
    assert top["y"] <= menu["y"] and menu["y"] + menu["height"] <= top["y"] + top["height"], "in the top bar's row"
    assert menu["x"] + menu["width"] <= brand["x"] and brand["y"] < menu["y"] + menu["height"]
    assert top["y"] + top["height"] <= title["y"] < top["y"] + top["height"] + 24, "no row between the bars"
    page.click("details.conversations-menu > summary")
    entry = page.locator("#conversation-list > li > a").first
    assert entry.is_visible() and entry.text_content() == "A first conversation"
    page.click("details.conversations-menu > summary")
    assert not entry.is_visible()


def test_the_example_questions_post_without_javascript(new_page: NewPage, live_server: LiveServer,
                                                       fake_upstream: FakeOpenAI) -> None:
    page = new_page(**PHONE, **NO_JS)
    page.goto(live_server.url + "/")
    example = page.locator(".examples button").first
    prompt = example.text_content()
    with page.expect_navigation():
        example.click()
    finished(page)
    assert page.locator("article[data-role=user] .content").last.text_content() == prompt
    assert not page.locator(".examples").is_visible()
    assert page.locator("#conversation-bar .title").is_visible()


def test_the_title_bar_shows_with_the_first_message_and_skip_links_show_on_focus(
        new_page: NewPage, live_server: LiveServer) -> None:
    page = new_page(**DESKTOP)
    page.goto(live_server.url + "/")
    assert not page.locator("#conversation-bar").is_visible()
    skip = page.locator(".skip-link", has_text="Message box")
    assert skip.bounding_box()["y"] + skip.bounding_box()["height"] <= 0, "off screen until focused"
    skip.focus()
    assert skip.bounding_box()["y"] >= 0
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "message"
    submit(page, "Hello there")
    finished(page)
    assert page.locator("#conversation-bar details.conversation-settings > summary").is_visible()


def test_the_language_shows_for_translate_only_and_custom_instructions_say_so(
        new_page: NewPage, live_server: LiveServer) -> None:
    page = new_page(**DESKTOP, **NO_JS)
    page.goto(live_server.url + "/")
    assert not page.locator("#language").is_visible()
    page.select_option("#preset", "translate")
    assert page.locator("#language").is_visible() and page.locator("label[for=language]").is_visible()
    send(page, "Bonjour", javascript=False)
    save_settings(page, "#system-prompt", "Answer in haiku.")
    assert "custom instructions" in page.locator("#override-note").text_content()
    assert page.locator("#conversation-bar .title").text_content() == "Bonjour", "a blank title was not kept"


def test_a_code_blocks_copy_stays_put_when_the_block_scrolls(new_page: NewPage, live_server: LiveServer,
                                                           fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["```python\nprint('" + "x" * 300 + "')\n```\n"]))
    page = new_page(**PHONE)
    page.goto(live_server.url + "/")
    submit(page, "Long code")
    finished(page)
    copy = page.locator("article[data-role=assistant] .code-copy")
    before = copy.bounding_box()
    page.locator("article[data-role=assistant] pre").evaluate("pre => { pre.scrollLeft = 500; }")
    assert page.locator("article[data-role=assistant] pre").evaluate("pre => pre.scrollLeft") > 0
    assert copy.bounding_box() == before
