"""What strangers can make the server keep: 10,000 static URLs with made-up versions
(`/static/app.css?v=<random>`, one in ten with a 12,000-character value), gzip accepted, sent to the
app under Hypercorn (one worker); the worker's RSS growth. The bar: under 16 MB.

    python bench/static_memory.py [REQUESTS]          (default 10000)

Bounded (a fixed number of requests, 20 at a time), loopback only; the server it starts, it stops.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lib.processes import worker_pid  # noqa: E402
from bench.lib.procfs import status_kb  # noqa: E402
from tests.support.live_server import LiveServer  # noqa: E402

BAR_MB = 16
AT_ONCE = 20
LONG = 12_000  # characters in one made-up version out of ten


def made_up_url(i: int) -> str:
    v = secrets.token_urlsafe(LONG * 3 // 4) if i % 10 == 0 else secrets.token_hex(6)
    return f"/static/app.css?v={v}"


async def send(base_url: str, requests: int) -> int:
    """Sends `requests` made-up URLs, AT_ONCE at a time; returns how many were not answered 200."""
    queue = iter(range(requests))
    failed = 0

    async def one_client() -> None:
        nonlocal failed
        async with httpx2.AsyncClient(base_url=base_url, trust_env=False, timeout=30,
                                      headers={"Accept-Encoding": "gzip"}) as client:
            for i in queue:
                response = await client.get(made_up_url(i))
                failed += response.status_code != 200

    await asyncio.gather(*(one_client() for _ in range(AT_ONCE)))
    return failed


def main(requests: int) -> int:
    with tempfile.TemporaryDirectory(prefix="chatapp-static-") as tmp:
        server = LiveServer({"CHATAPP_DATABASE": str(Path(tmp) / "bench.db")}, Path(tmp) / "server.log")
        try:
            pid = worker_pid(server._process.pid)
            asyncio.run(send(server.url, 500))  # warm up: connections, buffers, the allocator's arenas
            before = status_kb(pid, "VmRSS")
            started = time.monotonic()
            failed = asyncio.run(send(server.url, requests))
            elapsed = time.monotonic() - started
            after = status_kb(pid, "VmRSS")
        finally:
            server.stop()
    growth_mb = (after - before) / 1024
    print(f"{requests:,} static URLs with made-up versions (1 in 10 of {LONG:,} characters), "
          f"{AT_ONCE} at a time, in {elapsed:.1f} s; {failed} not answered 200")
    print(f"  worker RSS  before {before / 1024:.1f} MB, after {after / 1024:.1f} MB, "
          f"growth {growth_mb:+.1f} MB (bar: < {BAR_MB} MB) — {'met' if growth_mb < BAR_MB else 'NOT MET'}")
    return 0 if growth_mb < BAR_MB and not failed else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
