"""The whole app in Debian's Chromium through Playwright: streaming with JavaScript, and without it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tests.conftest import CANARY_KEY
from tests.support.browser import NewPage, save_settings, send
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live_server import LiveServer

if TYPE_CHECKING:  # Playwright itself is imported only when a browser starts (tests/support/browser.py)
    from playwright.sync_api import Page

# Collects CSP violations in the page; installed by the browser, not by the page, so CSP does not apply.
WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', e => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


def _wait_until(condition, timeout: float = 10.0) -> None:
    """Poll from Python: the page's CSP forbids the eval that page.wait_for_function needs."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _watch(page: Page, origin: str) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {"console_csp": [], "foreign": [], "dialogs": []}
    page.on("console", lambda m: "Content Security Policy" in m.text and seen["console_csp"].append(m.text))
    page.on("request", lambda r: not r.url.startswith(origin) and seen["foreign"].append(r.url))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.add_init_script(WATCH_CSP)
    return seen


def test_answer_streams_in_steps_and_the_indicator_stops(new_page: NewPage, live_server: LiveServer, fake_upstream: FakeOpenAI) -> None:
    tokens = ["The ", "answer ", "has ", "**several** ", "words", ".\n\n", "- one\n", "- two\n\n", "Done", "."] * 3
    fake_upstream.script(Reply(tokens=tokens, delay=0.05))
    page = new_page()
    seen = _watch(page, live_server.url)
    page.goto(live_server.url + "/")
    send(page, "Tell me something")

    answer = page.locator("article[data-role=assistant]").last
    answer.wait_for()
    lengths, busy_states = [], set()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        state = answer.evaluate("el => [el.getAttribute('aria-busy'), el.textContent.length]")
        busy_states.add(state[0])
        lengths.append(state[1])
        if state[0] == "false":
            break
        time.sleep(0.02)
    assert busy_states == {"true", "false"}
    growth = sorted(set(lengths))
    assert len(growth) >= 5, f"the answer should grow in several steps, saw lengths {growth}"

    final = page.locator("article[data-role=assistant]").last
    assert final.get_attribute("aria-busy") == "false"
    assert final.locator("strong").first.text_content() == "several"
    assert final.locator("li").count() == 6
    assert page.locator("#composer textarea[name=message]").input_value() == ""
    assert not page.locator("form.htmx-request").count()  # the indicator is off
    assert page.evaluate("window.__cspViolations") == [] and seen["console_csp"] == []
    assert seen["foreign"] == [] and seen["dialogs"] == []
    # The user's message is in the page once, and the reload shows the same conversation.
    page.reload()
    assert page.locator("article[data-role=user]").count() == 1
    assert page.locator("article[data-role=assistant] strong").first.text_content() == "several"
    assert len(fake_upstream.requests) == 1


def test_without_javascript_the_form_round_trip_shows_the_answer(new_page: NewPage, live_server: LiveServer, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["Plain ", "*HTML* ", "works."]))
    page = new_page(java_script_enabled=False)
    page.goto(live_server.url + "/")
    send(page, "No scripts please", javascript=False)
    answer = page.locator("article[data-role=assistant]").last
    assert answer.get_attribute("aria-busy") == "false"
    assert answer.locator("em").text_content() == "HTML"
    page.reload()
    assert len(fake_upstream.requests) == 1  # a reload never sends the message again


def test_upstream_error_shows_a_friendly_message(new_page: NewPage, live_server: LiveServer, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(status=429, headers={"retry-after": "0"}))
    page = new_page()
    page.goto(live_server.url + "/")
    page.fill("#composer textarea[name=message]", "hello")
    page.click("#composer button[type=submit]")
    error = page.locator("article[data-role=assistant] [data-role=error]")
    error.wait_for(timeout=10_000)
    assert "request id" in error.text_content()
    assert page.locator("article[data-role=assistant]").last.get_attribute("aria-busy") == "false"
    assert CANARY_KEY not in page.content()


def test_stop_ends_the_answer_and_closes_the_upstream_request(new_page: NewPage, live_server: LiveServer,
                                                              fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=[f"word{i} " for i in range(400)], delay=0.02))
    page = new_page()
    page.goto(live_server.url + "/")
    assert not page.locator("#composer .stop").is_visible()  # only while an answer streams
    send(page, "Write a lot")
    answer = page.locator("article[data-role=assistant]").last
    _wait_until(lambda: len(answer.locator(".tail").text_content() or "") > 40)
    stop = page.locator("#composer .stop")
    assert stop.is_visible()
    stopped_at = time.monotonic()
    stop.click()
    assert fake_upstream.wait_for_disconnect(timeout=2)
    assert fake_upstream.disconnects[-1] - stopped_at < 1.0
    page.wait_for_selector("article[data-role=assistant][data-status=stopped]", timeout=5000)
    assert answer.get_attribute("aria-busy") == "false"
    assert "stopped before it was complete" in answer.text_content()
    assert answer.locator("button[form=regenerate-form]").count() == 1  # cut off: offered again
    assert not stop.is_visible()


def test_regenerate_replaces_the_answer_in_place(new_page: NewPage, live_server: LiveServer, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["First ", "try."]), Reply(tokens=["Second ", "try."], delay=0.05))
    page = new_page()
    page.goto(live_server.url + "/")
    send(page, "Question")
    page.wait_for_selector("article[data-role=assistant][data-status=complete]")
    page.click("article[data-role=assistant] button[form=regenerate-form]")
    final = page.locator("article[data-role=assistant][data-status=complete]")
    _wait_until(lambda: final.count() == 1 and "Second try." in final.text_content())
    assert page.locator("article[data-role=assistant]").count() == 1
    assert page.locator("article[data-role=user]").count() == 1
    assert page.locator("article[data-role=user] details.edit").count() == 1

    # Both answers are kept: "2 / 2", and a switch back swaps the old one in, the focus staying on
    # the switch so that a keyboard user can go on pressing it.
    assert final.locator(".version").text_content().startswith("2 / 2")
    page.focus("form.versions button[value=previous]")
    page.keyboard.press("Enter")
    _wait_until(lambda: "First try." in page.locator("article[data-role=assistant]").text_content())
    answer = page.locator("article[data-role=assistant]")
    assert answer.count() == 1 and answer.locator(".version").text_content().startswith("1 / 2")
    assert page.evaluate("document.activeElement.value") == "previous"
    assert answer.locator("button[value=previous]").get_attribute("aria-disabled") == "true"
    answer.locator("button[value=next]").click()
    _wait_until(lambda: "Second try." in page.locator("article[data-role=assistant]").text_content())


def test_without_javascript_a_conversation_can_be_renamed_and_deleted(new_page: NewPage, live_server: LiveServer) -> None:
    page = new_page(java_script_enabled=False)
    page.goto(live_server.url + "/")
    send(page, "Keep this short", javascript=False)
    save_settings(page, "#title", "Renamed without scripts")
    assert page.locator("nav.sidebar a[aria-current=page]").text_content() == "Renamed without scripts"
    assert not page.locator("#composer .stop").is_visible() and not page.locator("button.copy").first.is_visible()
    page.click("details.conversation-settings summary")
    with page.expect_navigation():
        page.click("text=Delete…")
    with page.expect_navigation():
        page.click("button.danger")
    assert page.locator("nav.sidebar a").count() == 0


def test_stop_from_another_tab_ends_the_answer_in_both(new_page: NewPage, live_server: LiveServer,
                                                       fake_upstream: FakeOpenAI) -> None:
    """A second tab (or the phone) finds the answer being written, with a Stop of its own that
    reaches the process writing it; the first tab's stream is cut, and it shows the saved answer."""
    fake_upstream.script(Reply(tokens=[f"word{i} " for i in range(600)], delay=0.02))
    first = new_page()
    first.goto(live_server.url + "/")
    send(first, "Write a lot")
    answer = first.locator("article[data-role=assistant]").last
    _wait_until(lambda: len(answer.locator(".tail").text_content() or "") > 40)
    second = first.context.new_page()
    second.goto(first.url.split("#")[0].removesuffix("/messages"))
    busy = second.locator("article[data-role=assistant][aria-busy=true]")
    _wait_until(lambda: "word1" in (busy.text_content() or ""))  # saved each second, and followed
    stopped_at = time.monotonic()
    busy.locator("form.stop-form button").click()
    assert fake_upstream.wait_for_disconnect(timeout=2)
    assert fake_upstream.disconnects[-1] - stopped_at < 1.0
    second.wait_for_selector("article[data-role=assistant][data-status=stopped]", timeout=5000)
    first.wait_for_selector("article[data-role=assistant][data-status=stopped]", timeout=5000)
    assert "word1" in first.locator("article[data-role=assistant]").last.text_content()
    assert first.locator("article[data-role=assistant][aria-busy=true]").count() == 0


def test_a_reload_mid_answer_shows_the_text_so_far_and_how_it_ended(new_page: NewPage, live_server: LiveServer,
                                                                  fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=[f"part{i} " for i in range(300)], delay=0.02))
    page = new_page()
    page.goto(live_server.url + "/")
    send(page, "A long one")
    tail = page.locator("article[data-role=assistant] .tail")
    _wait_until(lambda: (tail.count() and len(tail.text_content() or "") > 100))
    page.reload()
    answer = page.locator("article[data-role=assistant]").last
    _wait_until(lambda: answer.get_attribute("aria-busy") == "false")
    assert answer.get_attribute("data-status") == "stopped"
    assert answer.text_content().count("part") > 10  # the text so far, not an empty bubble
    assert "stopped before it was complete" in answer.text_content()
    assert answer.locator("button[form=regenerate-form]").count() == 1


def test_reasoning_shows_while_the_model_thinks_and_folds_when_the_answer_comes(
        new_page: NewPage, live_server: LiveServer, fake_upstream: FakeOpenAI) -> None:
    for javascript in (True, False):
        fake_upstream.script(Reply(reasoning=["Weighing ", "the **options**.\n\n"] + [" More thought."] * 15,
                                   reasoning_delay=0.1, tokens=["The ", "answer."], delay=0.05))
        page = new_page(java_script_enabled=javascript)
        seen = _watch(page, live_server.url)
        page.goto(live_server.url + "/new")
        page.fill("#composer textarea[name=message]", "Think first")
        page.click("#composer button[type=submit]", no_wait_after=True)
        # Seen while the answer is still busy, before any of its text: live, not at the end.
        page.locator("[aria-busy=true] details.thinking.live[open]", has_text="Weighing the").wait_for(timeout=5000)
        assert page.locator("article[data-role=assistant][aria-busy=false]").count() == 0
        answer = page.locator("article[data-role=assistant][aria-busy=false]").last
        answer.wait_for(timeout=15_000)
        thinking = answer.locator("details.thinking")
        assert thinking.get_attribute("open") is None and thinking.locator("summary").inner_text().startswith("Thought for")
        assert answer.locator(".content").inner_text().strip() == "The answer."
        assert not answer.locator(".thinking-text").is_visible()  # folded until the reader opens it
        thinking.locator("summary").click()
        assert answer.locator(".thinking-text strong").inner_text() == "options"
        assert seen == {"console_csp": [], "foreign": [], "dialogs": []}


def test_a_code_block_shows_as_code_while_it_streams_and_the_page_never_shrinks(
        new_page: NewPage, live_server: LiveServer, fake_upstream: FakeOpenAI) -> None:
    code = [f"    value_{i} = compute({i}, *args)  # step {i}\n" for i in range(30)]
    tokens = ["## Set", "up\n\n", "Run **this", "** first:\n\n", "```python\n", "def main():\n", *code, "```\n\n",
              "| Setting | Default |\n", "|---|---|\n", "| workers | 4 |\n\n", "Done."]
    fake_upstream.script(Reply(tokens=tokens, delay=0.06))
    page = new_page(viewport={"width": 390, "height": 844})  # a phone's width, where the page once got shorter
    page.goto(live_server.url + "/")
    send(page, "Show me code")
    answer = page.locator("article[data-role=assistant]").last
    answer.wait_for()
    samples = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        busy, height, code_text, text = answer.evaluate(
            "el => [el.getAttribute('aria-busy'), document.documentElement.scrollHeight,"
            " el.querySelector('.tail pre code')?.textContent ?? null, el.textContent]")
        if busy == "false":
            break
        samples.append((height, code_text, text))
        time.sleep(0.02)
    assert samples and busy == "false"
    # Mid-block: the code already in a code block, its fence not shown, before the block closed.
    mid_code = [c for _, c, _ in samples if c and "value_3 = compute" in c]
    assert mid_code and all("```" not in c for c in mid_code)
    assert not any(marker in text for _, _, text in samples for marker in ("```", "## ", "**", "|---"))
    heights = [h for h, _, _ in samples]
    assert all(b >= a for a, b in zip(heights, heights[1:])), f"the page got shorter while streaming: {heights}"
    assert heights[-1] > heights[0]
    final = page.locator("article[data-role=assistant]").last
    assert final.locator("div.highlight pre code").count() == 1 and final.locator("td").count() == 2
