"""Regenerate the README's screenshots: the real app in demo mode, in Debian's Chromium.

    python scripts/screenshots.py        (or: make screenshots)

Writes docs/screenshot.png (desktop, light), docs/screenshot-dark.png, docs/screenshot-phone.png
(360 px wide) and docs/screenshot-nojs.png (JavaScript off); then, with the fake model server of
the tests, two phone shots (390 px): docs/screenshot-phone-table.png (a wide table, scrolling
sideways in its bubble) and docs/screenshot-phone-streaming.png (an answer caught mid-code-block).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Browser

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.browser import chromium, send  # noqa: E402
from tests.support.fake_openai import FakeOpenAI, Reply  # noqa: E402
from tests.support.live_server import LiveServer, app_environment  # noqa: E402

QUESTION = "How do I read a CSV file in Python?"
SHOTS = {  # file → (viewport, color scheme, JavaScript on)
    "screenshot.png": ({"width": 1100, "height": 1000}, "light", True),
    "screenshot-dark.png": ({"width": 1100, "height": 1000}, "dark", True),
    "screenshot-phone.png": ({"width": 360, "height": 760}, "light", True),
    "screenshot-nojs.png": ({"width": 1100, "height": 1000}, "light", False),
}


def shoot(browser: Browser, url: str, name: str, viewport: dict, scheme: str, javascript: bool) -> None:
    context = browser.new_context(viewport=viewport, color_scheme=scheme, java_script_enabled=javascript)
    page = context.new_page()
    page.goto(url + "/new")
    send(page, QUESTION, javascript=javascript)
    page.locator("article[data-role=assistant][aria-busy=false]").last.wait_for()
    page.mouse.move(0, 0)
    page.evaluate("window.scrollTo(0, 0)") if javascript else None
    page.screenshot(path=ROOT / "docs" / name)
    context.close()


PHONE = {"width": 390, "height": 844}
TABLE = ("Here is how the three endpoints did last week:\n\n"
         "| Status | Requests | Latency (ms) | Region | Endpoint |\n|---|---:|---:|---|---|\n"
         "| 200 | 18,204 | 35.7 | eu-west-1 | /api/conversations |\n"
         "| 404 | 1,093 | 12.1 | us-east-2 | /api/conversations/unknown |\n"
         "| 503 | 57 | 2,004.9 | ap-south-1 | /api/messages/stream |\n\n"
         "The 503s all came from one upstream overload on Tuesday.\n")
CODE = ["To read a CSV file, use the standard library's `csv` module:\n\n", "```python\n", "import csv\n\n",
        "with open(\"people.csv\", newline=\"\") as f:\n", "    for row in csv.DictReader(f):\n",
        "        print(row[\"name\"], row[\"email\"])  # each row is a dict keyed by the header\n"]


def tap_send(page, message: str) -> None:  # on a touch phone Enter adds a line: Send is the button
    page.fill("#message", message)
    page.click("#composer button[type=submit]")


def shoot_phone(browser: Browser, url: str, fake: FakeOpenAI) -> None:
    """The two phone shots from the fake model server: a finished wide table, and an answer whose
    code block is still open (the model goes quiet mid-block while the shot is taken)."""
    context = browser.new_context(viewport=PHONE, has_touch=True, color_scheme="light")
    page = context.new_page()
    page.goto(url + "/new")
    fake.script(Reply(tokens=[TABLE]))
    tap_send(page, "How did the endpoints do last week?")
    page.locator("article[data-role=assistant][aria-busy=false]").last.wait_for()
    page.locator("article[data-role=assistant] table").evaluate("t => { t.scrollLeft = 60; }")
    page.screenshot(path=ROOT / "docs" / "screenshot-phone-table.png")
    print("wrote docs/screenshot-phone-table.png")
    page.goto(url + "/new")
    fake.script(Reply(tokens=CODE, delay=0.05, stall_after=len(CODE), stall=30))
    tap_send(page, QUESTION)
    page.locator("article[data-role=assistant][aria-busy=true]").wait_for()
    page.get_by_text("print(row").wait_for()
    page.wait_for_timeout(300)
    page.screenshot(path=ROOT / "docs" / "screenshot-phone-streaming.png")
    print("wrote docs/screenshot-phone-streaming.png")
    context.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = LiveServer(
            {"CHATAPP_DATABASE": f"{tmp}/shots.db", "SECRET_KEY": "screenshots", "CHATAPP_DEMO_DELAY": "0"},
            Path(tmp) / "server.log",
        )
        fake = FakeOpenAI()
        try:
            with chromium() as browser:
                for name, (viewport, scheme, javascript) in SHOTS.items():
                    shoot(browser, server.url, name, viewport, scheme, javascript)
                    print(f"wrote docs/{name}")
                with fake:
                    env = app_environment(fake.base_url, Path(tmp) / "phone.db")
                    phone = LiveServer(env, Path(tmp) / "phone.log")
                    try:
                        shoot_phone(browser, phone.url, fake)
                    finally:
                        phone.stop()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
