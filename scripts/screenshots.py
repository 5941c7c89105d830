"""Regenerate the README's screenshots: the real app in demo mode, in Debian's Chromium.

    python scripts/screenshots.py        (or: make screenshots)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.live_server import LiveServer  # noqa: E402

QUESTION = "How do I read a CSV file in Python?"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = LiveServer(
            {"CHATAPP_DATABASE": f"{tmp}/shots.db", "SECRET_KEY": "screenshots", "CHATAPP_DEMO_DELAY": "0"},
            Path(tmp) / "server.log",
        )
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium",
                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
                )
                page = browser.new_page(viewport={"width": 1000, "height": 1100})
                page.goto(server.url + "/")
                page.fill("#composer textarea[name=message]", QUESTION)
                page.keyboard.press("Enter")
                page.locator("article[data-role=assistant][aria-busy=false]").wait_for()
                page.mouse.move(0, 0)
                page.screenshot(path=ROOT / "docs" / "screenshot.png")
                browser.close()
        finally:
            server.stop()
    print("wrote docs/screenshot.png")


if __name__ == "__main__":
    main()
