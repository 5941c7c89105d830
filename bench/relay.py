"""What the app adds on the way from the model to the browser, and what the first page load weighs.

Starts the fake OpenAI-compatible server (tests/support/fake_openai.py) and the real app under Hypercorn on
127.0.0.1, then, for RUNS sequential requests each:
  - direct: the official SDK streams from the fake server; time to the first content token;
  - via app: an htmx-style POST to the app; time to the first token event of its SSE stream.
The difference of the medians is the time-to-first-token the app adds (storage, rendering, framing).
Everything is bounded: RUNS requests each way, loopback only, and the servers stop at the end.

    python bench/relay.py [RUNS]
"""

from __future__ import annotations

import asyncio
import gzip
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx2
from openai import AsyncOpenAI

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.fake_openai import FakeOpenAI, Reply  # noqa: E402
from tests.support.live_server import LiveServer  # noqa: E402

KEY = "sk-bench-not-a-real-key"
TOKENS = ["tok "] * 20


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def direct_ttft(fake: FakeOpenAI, runs: int) -> list[float]:
    client = AsyncOpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        stream = await client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    times.append(time.perf_counter() - started)
                    break
    await client.close()
    return times


async def app_ttft(base_url: str, runs: int) -> list[float]:
    async with httpx2.AsyncClient(base_url=base_url, follow_redirects=True) as client:
        times = []
        for _ in range(runs):
            # A new conversation each time, so the history sent upstream is one message, as in `direct`.
            page = (await client.get("/new")).text
            action = re.search(r'<form id="composer"[^>]*action="([^"]+)"', page).group(1)
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
            headers = {"HX-Request": "true", "X-CSRF-Token": csrf}
            started = time.perf_counter()
            async with client.stream("POST", action, data={"message": "hi"}, headers=headers) as response:
                frames = 0
                buffer = ""
                async for text in response.aiter_text():
                    buffer += text
                    # The first frame is the two bubbles; the second carries the first token.
                    frames = buffer.count("\n\n")
                    if frames >= 2:
                        times.append(time.perf_counter() - started)
                        break
        return times


async def page_weight(base_url: str) -> list[tuple[str, int, int]]:
    async with httpx2.AsyncClient(base_url=base_url, follow_redirects=True) as client:
        html = (await client.get("/")).text
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
        rows = [("HTML", len(html.encode()), len(gzip.compress(html.encode())))]
        for path in assets:
            body = (await client.get(path)).content
            rows.append((path.split("/")[-1], len(body), len(gzip.compress(body))))
        return rows


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    with FakeOpenAI(default=Reply(tokens=TOKENS)) as fake, tempfile.TemporaryDirectory() as tmp:
        server = LiveServer(
            {"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": KEY, "CHATAPP_DATABASE": f"{tmp}/bench.db",
             "SECRET_KEY": "bench", "CHATAPP_MAX_RETRIES": "0",
             # Limits on, as deployed, but high enough for a benchmark's many requests per minute.
             "CHATAPP_RATE_LIMIT_PER_SESSION": "100000/minute", "CHATAPP_RATE_LIMIT_PER_ADDRESS": "100000/minute"},
            Path(tmp) / "server.log",
        )
        try:
            asyncio.run(direct_ttft(fake, 5))  # warm up both paths
            asyncio.run(app_ttft(server.url, 5))
            direct = asyncio.run(direct_ttft(fake, runs))
            via_app = asyncio.run(app_ttft(server.url, runs))
            weight = asyncio.run(page_weight(server.url))
        finally:
            server.stop()

    ms = 1000
    print(f"time to first token, {runs} sequential requests, {len(TOKENS)}-token answers, loopback")
    print(f"  SDK direct to fake server   p50 {statistics.median(direct) * ms:6.2f} ms   p99 {percentile(direct, .99) * ms:6.2f} ms")
    print(f"  through the app (SSE)       p50 {statistics.median(via_app) * ms:6.2f} ms   p99 {percentile(via_app, .99) * ms:6.2f} ms")
    print(f"  added by the app            p50 {(statistics.median(via_app) - statistics.median(direct)) * ms:6.2f} ms")
    print()
    print("first load (HTML + CSS + JS)     bytes   gzipped")
    for name, raw, packed in weight:
        print(f"  {name:28} {raw:8,} {packed:9,}")
    print(f"  {'total':28} {sum(r for _, r, _ in weight):8,} {sum(p for _, _, p in weight):9,}")


if __name__ == "__main__":
    main()
