"""Does a big export hold up everyone else? The app under Hypercorn (one worker) with a 400-message
conversation (its size as JSON is printed); /healthz timed on its own, then while another client
downloads the conversation's JSON export over and over.

    python bench/loop_latency.py [PROBES]          (default 300)

The conversation's first turn is posted through the app's own form (the demo model answers); the
rest is written into the database file with sqlite3, as the app would store it. The exporting
client runs in its own process, so that its reading does not slow the timing client here.
Bounded (PROBES requests each way), loopback only; everything it starts, it stops.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lib.processes import worker_pid  # noqa: E402
from bench.lib.procfs import cpu_seconds  # noqa: E402
from tests.support.live_server import LiveServer  # noqa: E402

MESSAGES = 400
PAUSE = 0.005  # between probes, so that they fall at every point of an export
ANSWER = ("A paragraph of the answer, with **bold** text, `code` and a [link](https://example.com); "
          "long enough to be a real answer's line.\n\n") * 120 + "```python\nprint('done')\n```\n"


def conversation(client: httpx2.Client, database: Path) -> str:
    """A conversation of MESSAGES messages, owned by `client`'s session; returns its id."""
    start = client.get("/", follow_redirects=True)
    action = re.search(r'<form id="composer"[^>]*action="([^"]+)"', start.text)[1]
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', start.text)[1]
    client.post(action, data={"message": "Tell me a story", "csrf_token": csrf}).raise_for_status()
    conversation_id = action.split("/")[2]
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    rows = []
    for i in range((MESSAGES - 2) // 2):
        rows.append((conversation_id, "user", f"Question {i}: and then?", None, "complete", None, now, now))
        rows.append((conversation_id, "assistant", ANSWER, f"<p>{ANSWER}</p>", "complete", "demo", now, now))
    db = sqlite3.connect(database, timeout=10)
    with db:  # one transaction
        db.executemany("INSERT INTO messages (conversation_id, role, content, html, status, model, created_at, "
                       "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.close()
    return conversation_id


def export_loop(base_url: str, cookies: dict[str, str], path: str, stop: Event, done: Synchronized) -> None:
    """Downloads the export until told to stop (in its own process)."""
    with httpx2.Client(base_url=base_url, cookies=cookies, trust_env=False, timeout=60) as client:
        while not stop.is_set():
            with client.stream("GET", path) as response:
                for _ in response.iter_raw():
                    pass
            done.value += 1


def probe(client: httpx2.Client, probes: int) -> list[float]:
    """Milliseconds each of `probes` /healthz requests took, one after another."""
    times = []
    for _ in range(probes):
        started = time.perf_counter()
        client.get("/healthz").raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(PAUSE)
    return times


def main(probes: int) -> None:
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="chatapp-loop-") as tmp:
        database = Path(tmp) / "bench.db"
        server = LiveServer({"CHATAPP_DATABASE": str(database), "CHATAPP_DEMO_DELAY": "0"}, Path(tmp) / "server.log")
        try:
            worker = worker_pid(server._process.pid)
            with httpx2.Client(base_url=server.url, trust_env=False, timeout=60) as client:
                conversation_id = conversation(client, database)
                path = f"/c/{conversation_id}/export.json"
                exported = client.get(path).content
                count, size = len(json.loads(exported)["messages"]), len(exported)
                probe(client, 20)  # warm up
                alone = probe(client, probes)
                stop, done = spawn.Event(), spawn.Value("i", 0)
                exporter = spawn.Process(target=export_loop, args=(server.url, dict(client.cookies), path, stop, done))
                exporter.start()
                try:
                    while done.value == 0:  # timed from its second export on: connected, going
                        if not exporter.is_alive():
                            raise RuntimeError("the exporting client stopped before its first export")
                        time.sleep(0.01)
                    started, cpu, exports = time.monotonic(), cpu_seconds(worker), done.value
                    busy = probe(client, probes)
                    elapsed, cpu, exports = time.monotonic() - started, cpu_seconds(worker) - cpu, done.value - exports
                finally:
                    stop.set()
                    exporter.join(timeout=30)
                    if exporter.is_alive():
                        exporter.kill()
        finally:
            server.stop()
    print(f"/healthz, {probes} requests one after another ({PAUSE * 1000:.0f} ms apart), one Hypercorn worker")
    for label, times in [("alone", alone), ("while another client loops the JSON export", busy)]:
        p99 = statistics.quantiles(times, n=100)[98]
        print(f"  {label:<44} median {statistics.median(times):5.1f} ms, p99 {p99:6.1f} ms, max {max(times):6.1f} ms")
    print(f"  the export: {count} messages, {size / 1e6:.1f} MB of JSON; {exports / elapsed:.1f} a second "
          f"during the probes, {cpu / max(exports, 1) * 1000:.0f} ms of the worker's CPU each (with the probes')")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
