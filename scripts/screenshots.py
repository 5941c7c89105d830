"""Regenerate the README's screenshots: the real app in demo mode, in Debian's Chromium.

    python scripts/screenshots.py        (or: make screenshots)

Writes docs/screenshot.png (desktop, light), docs/screenshot-dark.png, docs/screenshot-phone.png
(360 px wide) and docs/screenshot-nojs.png (JavaScript off).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Browser

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.browser import chromium, send  # noqa: E402
from tests.support.live_server import LiveServer  # noqa: E402

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


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = LiveServer(
            {"CHATAPP_DATABASE": f"{tmp}/shots.db", "SECRET_KEY": "screenshots", "CHATAPP_DEMO_DELAY": "0"},
            Path(tmp) / "server.log",
        )
        try:
            with chromium() as browser:
                for name, (viewport, scheme, javascript) in SHOTS.items():
                    shoot(browser, server.url, name, viewport, scheme, javascript)
                    print(f"wrote docs/{name}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
