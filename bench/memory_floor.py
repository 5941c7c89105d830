"""What an open stream costs in memory before the app does anything: the two halves of the relay
measured alone, to set the app's own figure (bench/load.py, "memory per open stream") against.

  (a) serving: a bare Quart app under Hypercorn (one worker) whose endpoint streams a small SSE
      frame every 50 ms, with N clients reading at once; RSS of the worker per open stream;
  (b) reading: N streams from the fake model server at once through the app's own provider
      (chatapp.llm.OpenAIProvider: the openai SDK on its aiohttp transport), in this process;
      RSS per open stream.

    python bench/memory_floor.py [N] [--app] [--repeat 5]     (default N = 500)

With --app, the app's own figure beside it: bench/load.py N --disconnect-share 0 (one Hypercorn
worker, SQLite, all N streams at once, every one to the end), its memory per open stream, the
difference from the floor (a) + (b) in KiB, and the bar: at most the floor + 16 KiB. The app's
figure is the median of --repeat runs (default 5): its RSS per stream varies by a few KiB either
way from run to run (how the allocator's arenas fill), where the floor's halves are steady.

Bounded (each half streams for a few seconds, the app's run has its deadline and a timeout),
loopback only; everything it starts, it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lib.fakes import FakeProcess  # noqa: E402
from bench.lib.processes import worker_pid  # noqa: E402
from bench.lib.procfs import status_kb  # noqa: E402
from bench.lib.runs import run_json  # noqa: E402
from chatapp.llm import OpenAIProvider  # noqa: E402
from tests.support.live_server import free_port  # noqa: E402

BARE_APP = '''
import asyncio
from quart import Quart, Response

app = Quart(__name__)


@app.post("/stream")
async def stream():
    async def frames():
        for _ in range(100):
            await asyncio.sleep(0.05)
            yield b"data: x\\n\\n"
    response = Response(frames(), mimetype="text/event-stream")
    response.timeout = None
    return response
'''


async def serving(streams: int) -> float:
    """KiB of worker RSS per open stream, for a bare Quart + Hypercorn SSE endpoint."""
    with tempfile.TemporaryDirectory(prefix="chatapp-floor-") as tmp:
        (Path(tmp) / "bare.py").write_text(BARE_APP)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}", "--backlog",
                                   "4096", "bare:app"], cwd=tmp, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            async with httpx2.AsyncClient(base_url=base, trust_env=False) as client:
                for _ in range(100):  # up within 10 s
                    try:
                        await client.post("/stream", timeout=10)
                        break
                    except httpx2.TransportError:
                        await asyncio.sleep(0.1)
            pid = worker_pid(server.pid)
            before, at_peak, opened = status_kb(pid, "VmRSS"), [0], [0]

            async def read() -> None:
                async with httpx2.AsyncClient(base_url=base, trust_env=False, timeout=60) as client:
                    async with client.stream("POST", "/stream") as response:
                        opened[0] += 1
                        frames = 0
                        async for _ in response.aiter_bytes():
                            frames += 1
                            if frames == 20 and opened[0] == streams:  # ~1 s in, all open
                                at_peak[0] = max(at_peak[0], status_kb(pid, "VmRSS"))

            await asyncio.gather(*(read() for _ in range(streams)))
            return (at_peak[0] - before) / streams
        finally:
            server.terminate()
            server.wait(timeout=10)


async def reading(streams: int, base_url: str) -> float:
    """KiB of this process's RSS per open stream read through the app's provider."""
    provider = OpenAIProvider(api_key="sk-bench", base_url=base_url, model="m", connect_timeout=10,
                              first_token_timeout=30, idle_timeout=30, max_retries=0)
    at_peak, reached = [0], [0]

    async def read(count: bool) -> None:
        pieces = 0
        async for piece in provider.stream([{"role": "user", "content": "hi"}]):
            pieces += isinstance(piece, str)
            if count and pieces == 10:
                reached[0] += 1
                if reached[0] == streams:
                    at_peak[0] = status_kb("self", "VmRSS")

    await asyncio.gather(*(read(False) for _ in range(3)))  # warm up
    before = status_kb("self", "VmRSS")
    await asyncio.gather(*(read(True) for _ in range(streams)))
    await provider.aclose()
    return (at_peak[0] - before) / streams


BAR_KIB = 16  # the app may add this much to the floor, per open stream


def main() -> None:
    parser = argparse.ArgumentParser(description="Memory per open stream before the app does anything.")
    parser.add_argument("streams", type=int, nargs="?", default=500)
    parser.add_argument("--app", action="store_true", help="and the app's own figure beside it (bench/load.py N)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of the app, the median is its figure (5)")
    args = parser.parse_args()
    streams = args.streams
    fake = FakeProcess(60, 0.1, 4096)
    try:
        read_kib = asyncio.run(reading(streams, fake.base_url))
    finally:
        fake.stop()
    serve_kib = asyncio.run(serving(streams))
    floor = serve_kib + read_kib
    print(f"memory per open stream, {streams} streams at once (RSS growth / streams)")
    print(f"  (a) serving: bare Quart + Hypercorn SSE endpoint       {serve_kib:6.1f} KiB")
    print(f"  (b) reading: the openai SDK (aiohttp) via the provider {read_kib:6.1f} KiB")
    print(f"  (a) + (b): a relay doing nothing else                  {floor:6.1f} KiB")
    if not args.app:
        return
    runs = []
    for number in range(1, args.repeat + 1):
        figures = run_json(["bench/load.py", str(streams), "--disconnect-share", "0", "--deadline", "120", "--json"],
                           200, "memory_floor")
        kib = figures.get("mem_per_stream_kib") if figures else None
        done = (f"{figures['completed']} of {streams} streams completed, {figures['errors']} errors" if figures
                else "no figure (see stderr)")
        print(f"  {f'the app, run {number}: bench/load.py {streams}, one worker, SQLite':<55}"
              f"{'   n/a' if kib is None else f'{kib:6.1f}'} KiB   ({done})")
        if kib is not None and figures["errors"] == 0:
            runs.append(kib)
    if not runs:
        print(f"n/a: the app's memory per open stream (bar: ≤ the floor + {BAR_KIB} KiB)")
        return
    app = statistics.median(runs)
    print(f"  {f'the app, the median of {len(runs)} runs':<55}{app:6.1f} KiB")
    print(f"  {'the app minus the floor':<55}{app - floor:+6.1f} KiB")
    verdict = "PASS" if app <= floor + BAR_KIB else "FAIL"
    print(f"{verdict}: the app's memory per open stream: {app:.1f} KiB, the floor's {floor:.1f} + {app - floor:.1f} KiB "
          f"(bar: ≤ the floor + {BAR_KIB} KiB)")


if __name__ == "__main__":
    main()
