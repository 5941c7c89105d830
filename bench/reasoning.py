"""A reasoning model that thinks for SECONDS (40 by default) before it answers, through the real app
with its default timeouts, in Debian's Chromium, with JavaScript on and off.

The fake model server streams a reasoning piece every 0.2 s, then a short answer. For each mode this
reports: how long after the model sent its first reasoning piece the browser showed it (as
Playwright saw it, in the reasoning block), whether the answer completed,
whether the reasoning ended collapsed ("Thought for N s"), and the errors the page showed.

    python bench/reasoning.py [SECONDS]

Bounded (one answer per mode), loopback only; the servers and the browser it starts, it stops.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.browser import chromium, send  # noqa: E402
from tests.support.fake_openai import FakeOpenAI, Reply  # noqa: E402
from tests.support.live_server import LiveServer, app_environment  # noqa: E402

PIECE_EVERY = 0.2
FIRST = "First, the question."


def one_answer(browser, server: LiveServer, fake: FakeOpenAI, seconds: float, javascript: bool) -> dict[str, object]:
    pieces = [FIRST] + [f" Step {i}." for i in range(1, int(seconds / PIECE_EVERY))]
    fake.script(Reply(reasoning=pieces, reasoning_delay=PIECE_EVERY, tokens=["The answer", " is 42."]))
    context = browser.new_context(java_script_enabled=javascript)
    page = context.new_page()
    try:
        page.goto(server.url + "/new")
        asked = len(fake.requests)
        if javascript:
            send(page, "Think hard, then answer")
        else:  # the answer page streams in; the click returns as soon as it starts to load
            page.fill("#composer textarea[name=message]", "Think hard, then answer")
            page.click("#composer button[type=submit]", no_wait_after=True)
        page.locator("details.thinking", has_text=FIRST).first.wait_for(timeout=15_000)
        seen = time.monotonic()
        first_sent = fake.requests[asked].at + PIECE_EVERY  # the first piece goes out one delay in
        answer = page.locator("article[data-role=assistant][aria-busy=false]").last
        answer.wait_for(timeout=(seconds + 30) * 1000)
        thinking = answer.locator("details.thinking")
        return {
            "visible": seen - first_sent,
            "status": answer.get_attribute("data-status"),
            "answer": answer.locator(".content").inner_text().strip(),
            "collapsed": thinking.count() == 1 and thinking.get_attribute("open") is None,
            "summary": thinking.locator("summary").inner_text() if thinking.count() else "",
            "errors": page.locator("[data-role=error]").count(),
        }
    finally:
        context.close()


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 40.0
    with FakeOpenAI() as fake, tempfile.TemporaryDirectory() as tmp:
        server = LiveServer(app_environment(fake.base_url, Path(tmp) / "bench.db"), Path(tmp) / "server.log")
        try:
            with chromium() as browser:
                print(f"reasoning for {seconds:.0f} s (a piece every {PIECE_EVERY} s), default timeouts")
                print(f"{'mode':<16}{'shown after':>12}  {'status':<10}{'collapsed':<10}{'errors':>6}  summary / answer")
                for javascript in (True, False):
                    result = one_answer(browser, server, fake, seconds, javascript)
                    mode = "JavaScript on" if javascript else "JavaScript off"
                    print(f"{mode:<16}{result['visible'] * 1000:>9.0f} ms  {result['status']:<10}"
                          f"{'yes' if result['collapsed'] else 'NO':<10}{result['errors']:>6}  "
                          f"{result['summary']} / {result['answer']}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
