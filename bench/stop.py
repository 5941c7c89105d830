"""From a click on Stop to the model server seeing its connection close, in Chromium.

    python bench/stop.py [RUNS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.fake_openai import FakeOpenAI, Reply  # noqa: E402
from tests.support.live_server import LiveServer, app_environment  # noqa: E402


def main(runs: int) -> None:
    delays = []
    with FakeOpenAI(default=Reply(tokens=[f"w{i} " for i in range(2000)], delay=0.01)) as fake, \
            tempfile.TemporaryDirectory() as tmp:
        server = LiveServer(app_environment(fake.base_url, Path(tmp) / "stop.db",
                                            CHATAPP_MAX_STREAMS_PER_SESSION="10"), Path(tmp) / "server.log")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
                page = browser.new_page()
                for _ in range(runs):
                    page.goto(server.url + "/new")
                    page.fill("#composer textarea[name=message]", "go on")
                    page.keyboard.press("Enter")
                    tail = page.locator("article[data-role=assistant] .tail").last
                    while len(tail.text_content() or "") < 50:
                        time.sleep(0.01)
                    seen = len(fake.disconnects)
                    clicked = time.monotonic()
                    page.click("#composer .stop")
                    fake.wait_for_disconnect(timeout=5, count=seen + 1)
                    delays.append(fake.disconnects[seen] - clicked)
                    page.locator("article[data-role=assistant][data-status=stopped]").wait_for()
                browser.close()
        finally:
            server.stop()
    print(f"stop click → upstream connection closed, {runs} runs in Chromium: "
          f"median {statistics.median(delays) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
