"""How the page feels with JavaScript (static/app.js), in Debian's Chromium: Copy, the theme switch,
Enter on a touch screen and on a desktop, the shortcuts, the tab title and title bar of a new chat,
the way back to the newest text, and the count near the length limit (issue 13)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tests.support.browser import NewPage, send
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live_server import LiveServer

if TYPE_CHECKING:  # Playwright itself is imported only when a browser starts (tests/support/browser.py)
    from playwright.sync_api import Page

BOX = "#composer textarea[name=message]"
ANSWER = "article[data-role=assistant]"
PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}


def _wait_until(condition, timeout: float = 10.0) -> None:
    """Poll from Python: the page's CSP forbids the eval that page.wait_for_function needs."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _long_answer(fake_upstream: FakeOpenAI, words: int = 400, delay: float = 0.02) -> None:
    fake_upstream.script(Reply(tokens=[f"word{i} " for i in range(words)], delay=delay))


def _streaming(page: Page) -> None:
    """Waits until the answer is visibly under way."""
    tail = page.locator(f"{ANSWER}[aria-busy=true] .tail")
    _wait_until(lambda: tail.count() == 1 and len(tail.text_content() or "") > 40)


def test_copy_puts_the_answer_as_markdown_and_a_code_block_as_code_on_the_clipboard(
        new_page: NewPage, live_server: LiveServer, fake_upstream: FakeOpenAI) -> None:
    markdown = ("Set `OPENAI_API_KEY` first.\n\n```python\nprint('hi')\nprint('there')\n```\n\n"
                "| a | b |\n|---|---|\n| **1** | 2 |\n\nThat is *all*.")
    fake_upstream.script(Reply(tokens=[markdown[i:i + 7] for i in range(0, len(markdown), 7)]))
    page = new_page(permissions=["clipboard-read", "clipboard-write"], **DESKTOP)
    page.goto(live_server.url + "/")
    send(page, "Explain")
    answer = page.locator(f"{ANSWER}[data-status=complete]")
    answer.wait_for()

    copy = answer.locator(".actions button.copy")
    copy.click()
    _wait_until(lambda: copy.text_content() == "Copied")
    assert page.evaluate("navigator.clipboard.readText()") == markdown  # the whole answer, as written

    code_copy = answer.locator("pre button.code-copy")
    assert code_copy.count() == 1
    code_copy.click()
    _wait_until(lambda: code_copy.text_content() == "Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "print('hi')\nprint('there')"
    _wait_until(lambda: copy.text_content() == "Copy" and code_copy.text_content() == "Copy")


def test_copy_says_so_when_it_could_not_copy(new_page: NewPage, live_server: LiveServer,
                                             fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["Some ", "text."]))
    page = new_page(permissions=["clipboard-read", "clipboard-write"], **DESKTOP)
    page.goto(live_server.url + "/")
    send(page, "Hello")
    page.evaluate("navigator.clipboard.writeText('before')")
    page.route("**/*.md", lambda route: route.fulfill(status=500, body="no"))  # the text cannot be had
    copy = page.locator(f"{ANSWER}[data-status=complete] .actions button.copy")
    copy.click()
    _wait_until(lambda: copy.text_content() == "Copy failed")
    assert page.evaluate("navigator.clipboard.readText()") == "before"
    page.unroute("**/*.md")
    _wait_until(lambda: copy.text_content() == "Copy")
    copy.click()  # a failure is not remembered: the next click tries again
    _wait_until(lambda: copy.text_content() == "Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "Some text."


def test_the_theme_applies_at_once_and_a_streaming_answer_goes_on(
        new_page: NewPage, live_server: LiveServer, fake_upstream: FakeOpenAI) -> None:
    _long_answer(fake_upstream, words=150)
    page = new_page(color_scheme="light", **DESKTOP)
    page.goto(live_server.url + "/")
    assert not page.locator(".theme-form button[type=submit]").is_visible()  # Set: for no-JS only
    send(page, "Write a lot")
    _streaming(page)
    url = page.url
    page.select_option("#theme", "dark")
    _wait_until(lambda: page.evaluate("document.documentElement.dataset.theme") == "dark")
    assert page.locator(f"{ANSWER}[aria-busy=true]").count() == 1  # the same page, still streaming
    answer = page.locator(ANSWER).last
    _wait_until(lambda: answer.get_attribute("aria-busy") == "false", timeout=20)
    assert answer.get_attribute("data-status") == "complete"
    assert "word149" in answer.text_content()
    assert page.url == url
    page.reload()  # and the choice was kept (the cookie)
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert page.locator("#theme").input_value() == "dark"
    page.select_option("#theme", "system")
    _wait_until(lambda: page.evaluate("document.documentElement.dataset.theme") is None)


def test_on_a_touch_screen_enter_adds_a_line_and_send_sends(new_page: NewPage, live_server: LiveServer,
                                                            fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["Fine."]), Reply(tokens=["Again."]))
    page = new_page(**PHONE)
    page.goto(live_server.url + "/")
    box = page.locator(BOX)
    assert "Enter" not in (box.get_attribute("placeholder") or "")
    box.click()
    page.keyboard.type("first line")
    page.keyboard.press("Enter")
    page.keyboard.type("second line")
    assert box.input_value() == "first line\nsecond line"
    time.sleep(0.3)
    assert page.locator("article").count() == 0 and fake_upstream.requests == []
    page.locator("#composer button[type=submit]").tap()
    page.locator(f"{ANSWER}[data-status=complete]").wait_for()
    assert page.locator("article[data-role=user] .content").text_content() == "first line\nsecond line"

    # Edit behaves the same: Enter adds a line.
    page.locator("article[data-role=user] details.edit summary").tap()
    edit = page.locator("article[data-role=user] details.edit textarea")
    edit.fill("edited")
    edit.press("Enter")
    assert edit.input_value() == "edited\n"
    time.sleep(0.3)
    assert len(fake_upstream.requests) == 1


def test_on_a_desktop_enter_sends_and_shift_enter_adds_a_line(new_page: NewPage, live_server: LiveServer,
                                                              fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["Fine."]), Reply(tokens=["Edited answer."]))
    page = new_page(**DESKTOP)
    page.goto(live_server.url + "/")
    box = page.locator(BOX)
    assert "Enter sends" in box.get_attribute("placeholder")
    box.click()
    page.keyboard.type("one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("two")
    page.keyboard.press("Enter")
    page.locator(f"{ANSWER}[data-status=complete]").wait_for()
    assert page.locator("article[data-role=user] .content").text_content() == "one\ntwo"
    assert box.input_value() == ""

    # Edit behaves like the composer: Enter sends the changed question.
    page.locator("article[data-role=user] details.edit summary").click()
    edit = page.locator("article[data-role=user] details.edit textarea")
    edit.fill("changed")
    edit.press("Enter")
    final = page.locator(f"{ANSWER}[data-status=complete]", has_text="Edited answer.")
    final.wait_for()
    assert page.locator("article[data-role=user] .content").text_content() == "changed"
    assert len(fake_upstream.requests) == 2


def test_escape_stops_the_answer(new_page: NewPage, live_server: LiveServer, fake_upstream: FakeOpenAI) -> None:
    _long_answer(fake_upstream)
    page = new_page(**DESKTOP)
    page.goto(live_server.url + "/")
    assert page.locator("#composer .stop").get_attribute("aria-keyshortcuts") == "Escape"
    send(page, "Write a lot")
    _streaming(page)
    page.keyboard.press("Escape")
    assert fake_upstream.wait_for_disconnect(timeout=2)
    page.wait_for_selector(f"{ANSWER}[data-status=stopped]", timeout=5000)
    assert "stopped before it was complete" in page.locator(ANSWER).last.text_content()


def test_a_shortcut_starts_a_new_chat(new_page: NewPage, live_server: LiveServer, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["Fine."]))
    page = new_page(**DESKTOP)
    page.goto(live_server.url + "/")
    send(page, "Hello")
    page.locator(f"{ANSWER}[data-status=complete]").wait_for()
    first = page.url
    assert "Control+Shift+O" in page.locator("a.new-chat").get_attribute("aria-keyshortcuts")
    with page.expect_navigation():
        page.keyboard.press("Control+Shift+O")
    assert page.url != first and page.locator("article").count() == 0


def test_a_new_chat_gets_its_title_and_title_bar_when_the_first_answer_starts(
        new_page: NewPage, live_server: LiveServer, fake_upstream: FakeOpenAI) -> None:
    _long_answer(fake_upstream, words=150)
    page = new_page(**DESKTOP)
    page.goto(live_server.url + "/new")
    assert page.title() == "New chat · chatapp"
    bar = page.locator("#conversation-bar")
    assert not bar.is_visible()  # nothing to rename before the chat exists
    send(page, "Plan a trip to Lisbon")
    _wait_until(lambda: page.title() == "Plan a trip to Lisbon · chatapp")
    assert bar.is_visible() and bar.locator(".title").text_content() == "Plan a trip to Lisbon"
    assert page.locator(f"{ANSWER}[aria-busy=true]").count() == 1  # while the answer still streams
    assert page.locator("main h1").text_content() == "Plan a trip to Lisbon"
    page.locator(f"{ANSWER}[data-status=complete]").wait_for(timeout=20_000)


def test_a_button_leads_back_to_the_newest_text_when_scrolled_up(
        new_page: NewPage, live_server: LiveServer, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=[f"Line {i}.\n\n" for i in range(150)], delay=0.03))
    page = new_page(**DESKTOP)
    page.goto(live_server.url + "/")
    newest = page.locator("button.scroll-newest")
    send(page, "Write many lines")
    answer = page.locator(f"{ANSWER}[aria-busy=true]")
    _wait_until(lambda: answer.count() == 1 and answer.bounding_box()["height"] > 1200)
    assert not newest.is_visible()  # following the answer: at the bottom already
    page.mouse.wheel(0, -5000)
    _wait_until(lambda: newest.is_visible())
    newest.click()
    _wait_until(lambda: not newest.is_visible())
    at_bottom = "innerHeight + scrollY >= document.body.scrollHeight - 2"
    assert page.evaluate(at_bottom)
    page.locator(f"{ANSWER}[data-status=complete]").wait_for(timeout=20_000)
    assert page.evaluate(at_bottom)  # and it followed the answer to its end
    page.mouse.wheel(0, -5000)  # after the answer too
    _wait_until(lambda: newest.is_visible())


def test_a_live_count_near_the_length_limit(new_page: NewPage, make_live_server) -> None:
    live = make_live_server(CHATAPP_MAX_MESSAGE_CHARS="100")
    page = new_page(**DESKTOP)
    page.goto(live.url + "/")
    count = page.locator("#char-count")
    page.fill(BOX, "x" * 50)
    assert not count.is_visible()
    page.fill(BOX, "é" * 85)
    assert count.is_visible() and count.text_content() == "85 / 100 characters"
    page.fill(BOX, "😀" * 120)  # characters, as the server counts them, not UTF-16 units
    assert count.text_content() == "120 / 100 characters: 20 too many"
    assert "char-count" in page.locator(BOX).get_attribute("aria-describedby")
    page.keyboard.press("Enter")
    page.locator("#composer-error [data-role=error]").wait_for()
    assert "120 characters long" in page.locator("#composer-error").text_content()
    assert page.locator(BOX).input_value() == "😀" * 120  # kept in the box


# A code block's header: the bar's own text ("Code", or blank), and the language label on its <code>
# (the class, shown with "language-" clipped off): its text, and what of it the clipping hides.
HEADER = """block => {
  const bar = getComputedStyle(block, "::before").content;
  const code = block.querySelector("code");
  const label = getComputedStyle(code, "::before");
  if (label.content === "none") return [bar, null, 0];
  const probe = document.createElement("span");
  probe.style.font = label.font;
  probe.textContent = "language-";
  document.body.append(probe);
  const hidden = -parseFloat(label.textIndent) - probe.getBoundingClientRect().width;
  probe.remove();
  return [bar, label.content, Math.round(hidden * 10) / 10];
}"""


def test_a_code_blocks_header_names_its_language_while_it_streams_and_after(
        new_page: NewPage, live_server: LiveServer, fake_upstream: FakeOpenAI) -> None:
    code = [f"print({i})\n" for i in range(60)]
    fake_upstream.script(Reply(tokens=["Here:\n\n", "```python\n", *code, "```\n\n", "```\n", "plain\n", "```\n"],
                               delay=0.05))
    page = new_page(**DESKTOP)
    page.goto(live_server.url + "/")
    send(page, "Some code")
    live = page.locator(f"{ANSWER}[aria-busy=true] .tail div.highlight")
    _wait_until(lambda: live.count() == 1 and "print(3)" in (live.text_content() or ""))
    python = ['"\xa0"', '"language-python"', 0]  # "Code" gives way; exactly "language-" is clipped off
    assert live.evaluate(HEADER) == python  # the open block, before its fence closes
    blocks = page.locator(f"{ANSWER}[data-status=complete] div.highlight")
    blocks.first.wait_for(timeout=20_000)
    assert [b.evaluate(HEADER) for b in blocks.all()] == [python, ['"Code"', None, 0]]  # none given: "Code"
