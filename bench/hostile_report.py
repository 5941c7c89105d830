"""How many hostile inputs went through each path, and how many got through (the answer must be 0).

Run: .venv/bin/python bench/hostile_report.py [--browser]   (prints figures; not a test)

The corpus is tests/support/hostile_corpus.py, each input also scripted as a reasoning model's
thinking (tests/support/hostile_paths.py: reasoning_reply); the paths and the checks are the ones
tests/test_hostile.py asserts (tests/support/hostile_paths.py, hostile_checks.py, hostile_browser.py).
--browser adds Chromium (JS on and off), which needs /usr/bin/chromium.
"""

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatapp import create_app  # noqa: E402
from tests.support.app import app_settings  # noqa: E402
from tests.support.browser import chromium  # noqa: E402
from tests.support.fake_openai import FakeOpenAI  # noqa: E402
from tests.support.hostile_browser import browser_js_off, browser_js_on  # noqa: E402
from tests.support.hostile_checks import MAX_CHARS  # noqa: E402
from tests.support.hostile_corpus import VECTORS  # noqa: E402
from tests.support.hostile_paths import Tally, renderer_paths, views_paths  # noqa: E402
from tests.support.live_server import LiveServer, app_environment  # noqa: E402


async def _views(fake: FakeOpenAI, tmp: Path) -> Tally:
    app = create_app(app_settings(tmp, fake, max_message_chars=MAX_CHARS))
    async with app.test_app():
        return await views_paths(app, fake)


def _browser(fake: FakeOpenAI, tmp: Path) -> Tally:
    tally = Tally()
    live = LiveServer(app_environment(fake.base_url, tmp / "browser.db"), tmp / "server.log")
    try:
        with chromium() as browser:
            browser_js_on(browser, live, fake, tally)
            browser_js_off(browser, live, fake, tally)
    finally:
        live.stop()
    return tally


def main() -> int:
    started = time.monotonic()
    tallies = [renderer_paths()]
    with FakeOpenAI() as fake, tempfile.TemporaryDirectory() as tmp:
        tallies.append(asyncio.run(_views(fake, Path(tmp))))
        if "--browser" in sys.argv:
            fake.reset()
            tallies.append(_browser(fake, Path(tmp)))
    print(f"{len(VECTORS)} hostile inputs (tests/support/hostile_corpus.py): each as the model's answer and the")
    print("user's message, then as the model's reasoning (the paths named so; the stored and reloaded pages hold both)\n")
    rows = [(path, count, len(tally.through[path])) for tally in tallies for path, count in tally.tried.items()]
    width = max(len(path) for path, _, _ in rows) + 2
    print(f"{'path':<{width}} {'tried':>6} {'got through':>12}")
    for path, count, through in rows:
        print(f"{path:<{width}} {count:>6} {through:>12}")
    reasoning = [(count, through) for path, count, through in rows if "reasoning" in path]
    tried, through = sum(count for _, count, _ in rows), sum(through for _, _, through in rows)
    print(f"{'total':<{width}} {tried:>6} {through:>12}   ({time.monotonic() - started:.1f} s)")
    print(f"{'  of which reasoning':<{width}} {sum(c for c, _ in reasoning):>6} {sum(t for _, t in reasoning):>12}")
    for tally in tallies:
        for failure in tally.failures():
            print("GOT THROUGH:", failure[:500])
    return 1 if through else 0


if __name__ == "__main__":
    raise SystemExit(main())
