"""Opening a 1,000-message conversation: time to serve the page and its size, and proof that no
markdown is rendered on a page load (stored HTML is served), on SQLite (a fresh file, the default)
or on PostgreSQL (a throwaway server started for the run and a fresh database on it, stopped after).

    python bench/long_conversation.py [RUNS] [--database sqlite|postgresql]

The app runs in this process (its test client, no network), so the CPU per page load is this
process's; on PostgreSQL the server's own CPU per page load (its postmaster and backends) is given
apart, as it is not the app's.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lib.database import BenchDatabase, add_database_option, bench_database  # noqa: E402
from chatapp import create_app, rendering  # noqa: E402
from tests.support.app import app_settings  # noqa: E402
from tests.support.client import open_chat  # noqa: E402

ANSWER = """## A heading

Some **bold** text and a [link](https://example.com), then a list:

- one
- two

```python
def f(x):
    return x * 2
```
"""


async def main(runs: int, db: BenchDatabase, tmp: Path) -> None:
    app = create_app(app_settings(tmp, None, database=db.location))
    async with app.test_app():
        client = app.test_client()
        action, csrf = await open_chat(client)
        await client.post(action, form={"message": "start", "csrf_token": csrf})
        conversation_id = action.split("/")[2]
        store = app.extensions["store"]
        html = str(rendering.render_markdown(ANSWER))
        for i in range(499):
            await store.add_message(conversation_id, "user", f"Question number {i}?", status="complete")
            await store.add_message(conversation_id, "assistant", ANSWER, status="complete", html=html)
        count = len(await store.messages(conversation_id))

        # Count calls of the renderer's core (every markdown render goes through it).
        renders = 0
        original = rendering._render

        def counting(*args: object) -> str:
            nonlocal renders
            renders += 1
            return original(*args)

        rendering._render = counting
        times, size = [], 0
        cpu, server_cpu = time.process_time(), db.server_cpu()
        for _ in range(runs):
            started = time.perf_counter()
            response = await client.get(f"/c/{conversation_id}")
            body = await response.get_data()
            times.append(time.perf_counter() - started)
            size = len(body)
        cpu = time.process_time() - cpu
        server_cpu = None if server_cpu is None else (db.server_cpu() or 0.0) - server_cpu
        rendering._render = original
        earlier = BeautifulSoup(body, "html.parser").select_one(".earlier a")["href"]
        older = await client.get(earlier, headers={"HX-Request": "true"})
    print(f"conversation of {count} messages on {db.name}, {runs} page loads (in-process test client, no network)")
    print(f"  time to serve the page   median {statistics.median(times) * 1000:.1f} ms, "
          f"p90 {sorted(times)[int(runs * 0.9)] * 1000:.1f} ms")
    print(f"  app CPU per page load    {cpu / runs * 1000:.1f} ms (this process)")
    if server_cpu is not None:
        print(f"  {db.name + ' server CPU':<24} {server_cpu / runs * 1000:.1f} ms per page load (not the app's)")
    print(f"  HTML                     {size:,} bytes, {len(gzip.compress(body)):,} gzipped (newest 50 messages)")
    print(f"  markdown renders         {renders} during {runs} page loads")
    print(f"  'load earlier' fragment  {older.status_code}, {len(await older.get_data()):,} bytes")


def run() -> None:
    parser = argparse.ArgumentParser(description="Opening a 1,000-message conversation.")
    parser.add_argument("runs", type=int, nargs="?", default=50)
    add_database_option(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, bench_database(args.database, Path(tmp)) as db:
        asyncio.run(main(args.runs, db, Path(tmp)))


if __name__ == "__main__":
    run()
