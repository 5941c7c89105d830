"""How many hostile inputs went through each path, and how many got through (the answer must be 0).

Run: .venv/bin/python bench/hostile_report.py [--browser]   (prints figures; not a test)

The corpus is tests/hostile_corpus.py; the checks are the ones tests/test_hostile.py asserts.
--browser adds Chromium (JS on and off), which needs /usr/bin/chromium and takes ~20 s more.
"""

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatapp import create_app  # noqa: E402
from tests import test_hostile as hostile  # noqa: E402
from tests.conftest import CANARY_KEY, app_settings  # noqa: E402
from tests.support.fake_openai import FakeOpenAI  # noqa: E402
from tests.hostile_corpus import VECTORS  # noqa: E402


async def _views(fake: FakeOpenAI, tmp: Path) -> hostile.Tally:
    app = create_app(app_settings(tmp, fake, max_message_chars=hostile.MAX_CHARS))
    async with app.test_app():
        return await hostile.views_paths(app, fake)


def _browser(fake: FakeOpenAI, tmp: Path) -> hostile.Tally:
    from playwright.sync_api import sync_playwright

    from tests.support.live_server import LiveServer

    tally = hostile.Tally()
    live = LiveServer({"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": CANARY_KEY, "OPENAI_MODEL": "fake-model",
                       "CHATAPP_DATABASE": str(tmp / "browser.db"), "SECRET_KEY": "hostile-report-secret-0123456789abc",
                       "CHATAPP_MAX_RETRIES": "0", "CHATAPP_RATE_LIMIT_PER_SESSION": "off",
                       "CHATAPP_RATE_LIMIT_PER_ADDRESS": "off"}, tmp / "server.log")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=hostile.CHROMIUM, args=hostile.CHROMIUM_ARGS)
            hostile.browser_js_on(browser, live, fake, tally)
            hostile.browser_js_off(browser, live, fake, tally)
            browser.close()
    finally:
        live.stop()
    return tally


def main() -> int:
    started = time.monotonic()
    tallies = [hostile.renderer_paths()]
    with FakeOpenAI() as fake, tempfile.TemporaryDirectory() as tmp:
        tallies.append(asyncio.run(_views(fake, Path(tmp))))
        if "--browser" in sys.argv:
            fake.reset()
            tallies.append(_browser(fake, Path(tmp)))
    print(f"{len(VECTORS)} hostile inputs (tests/hostile_corpus.py)\n")
    print(f"{'path':<36} {'tried':>6} {'got through':>12}")
    tried = through = 0
    for tally in tallies:
        for path, count in tally.tried.items():
            print(f"{path:<36} {count:>6} {len(tally.through[path]):>12}")
            tried, through = tried + count, through + len(tally.through[path])
    print(f"{'total':<36} {tried:>6} {through:>12}   ({time.monotonic() - started:.1f} s)")
    for tally in tallies:
        for failure in tally.failures():
            print("GOT THROUGH:", failure[:500])
    return 1 if through else 0


if __name__ == "__main__":
    raise SystemExit(main())
