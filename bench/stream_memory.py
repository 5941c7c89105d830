"""What the app holds per open stream, by who allocated it: tracemalloc in the app's own process.

    python bench/stream_memory.py [LOW HIGH] [--frames 6] [--top 20] [--delay 0.2] [--no-trace]
                                  (default 100 500)

The app (chatapp:create_app(), fresh SQLite, the settings bench/load.py gives it) runs under
Hypercorn in THIS process, one worker's worth, with tracemalloc on (FRAMES frames a trace). The
fake model server runs in a process of its own (bench/fake_server.py), answering slowly (a token
every DELAY s) so that every stream stays open while it is looked at. The clients run in another
process (this file with --client): they set up HIGH sessions, open LOW streams and wait until each
has its first token, say so; open HIGH - LOW more, say so; then leave. At each of the two moments
this process takes a tracemalloc snapshot, counts the objects the garbage collector tracks by type,
and reads its RSS. What grew between the two, divided by HIGH - LOW, is what one more open stream
costs (the allocations made for the app's start-up and warm-up are in both and cancel out):

  - the top traceback groups (compare_to, 'traceback'), KiB per stream, innermost frame first;
  - the same growth summed by the innermost frame of chatapp's own code (who asked for it) and by
    the package that allocated it;
  - objects per stream by type (gc), and RSS per stream (with tracemalloc's own overhead in it:
    --no-trace for RSS and gc alone).

Bounded: a watchdog ends everything 240 s after the start; the clients exit when the pipe closes.
Loopback only. The figures are of a process that is also being traced: KiB per stream from
tracemalloc is the Python heap only (not the C libraries' own buffers, not the kernel's sockets).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lib.page import composer_form  # noqa: E402

DEADLINE = 240.0
TOKEN = re.compile(rb"word\d+")


# --- the clients (a process of their own) ----------------------------------------------------

async def clients(base_url: str, low: int, high: int, settle: float) -> None:
    """HIGH sessions; LOW streams opened, then the rest, each step said on stdout and waited on stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    limits = httpx2.Limits(max_connections=1)
    sessions: list[tuple[httpx2.AsyncClient, str, str]] = []
    setup = asyncio.Semaphore(50)

    async def session() -> None:
        client = httpx2.AsyncClient(base_url=base_url, follow_redirects=True, trust_env=False, limits=limits,
                                    timeout=httpx2.Timeout(120.0, connect=30.0, pool=30.0))
        async with setup:
            page = await client.get("/")
        action, csrf = composer_form(page.text)
        sessions.append((client, action, csrf))

    await asyncio.gather(*(session() for _ in range(high)))
    first_tokens = [0]

    async def stream(client: httpx2.AsyncClient, action: str, csrf: str) -> None:
        headers = {"HX-Request": "true", "X-CSRF-Token": csrf}
        async with client.stream("POST", action, data={"message": "hello"}, headers=headers) as response:
            counted = False
            async for data in response.aiter_bytes():
                if not counted and TOKEN.search(data):
                    counted = True
                    first_tokens[0] += 1

    tasks = []
    for count in (low, high):
        tasks += [asyncio.ensure_future(stream(*s)) for s in sessions[len(tasks):count]]
        give_up = time.monotonic() + DEADLINE
        while first_tokens[0] < count:
            ended = [t for t in tasks if t.done()]
            if ended or time.monotonic() > give_up:  # a stream ended before its answer: no figure
                print(f"failed: {len(ended)} streams ended, {first_tokens[0]} of {count} have a token", flush=True)
                return
            await asyncio.sleep(0.05)
        await asyncio.sleep(settle)  # the app caught up: idle between tokens
        print(f"open {count}", flush=True)
        if not await reader.readline():
            break
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# --- the app (this process) ------------------------------------------------------------------

def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def by_type() -> Counter[str]:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


def package(filename: str) -> str:
    """The package a file belongs to: chatapp, a site-packages distribution, or the stdlib module."""
    if "/chatapp/" in filename:
        return "chatapp/" + filename.split("/chatapp/", 1)[1]
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    return "stdlib " + Path(filename).stem if filename.startswith(sys.base_prefix) else Path(filename).name


def short(frame: tracemalloc.Frame) -> str:
    name = frame.filename
    for cut in ("site-packages/", "/chatapp/", "/lib/python3"):
        if cut in name:
            name = ("chatapp/" if cut == "/chatapp/" else "") + name.split(cut, 1)[1]
            if cut == "/lib/python3":
                name = name.split("/", 1)[1]
            break
    return f"{name}:{frame.lineno}"


def report(before: tracemalloc.Snapshot | None, after: tracemalloc.Snapshot | None, counts: tuple[Counter, Counter],
           rss: tuple[int, int], added: int, top: int) -> None:
    print(f"per open stream: what grew from the first snapshot to the second, / {added} streams")
    print(f"  RSS of this process: {(rss[1] - rss[0]) / added:6.1f} KiB per stream"
          + (" (tracemalloc's own bookkeeping included)" if after else ""))
    if before is not None and after is not None:
        stats = after.compare_to(before, "traceback")
        total = sum(s.size_diff for s in stats)
        print(f"  Python heap (tracemalloc): {total / 1024 / added:6.1f} KiB per stream, "
              f"{sum(s.count_diff for s in stats) / added:.0f} blocks per stream")
        owners: Counter[str] = Counter()
        packages: Counter[str] = Counter()
        for stat in stats:
            frames = list(stat.traceback)  # innermost last
            mine = [f for f in frames if "/chatapp/" in f.filename]
            owners[short(mine[-1]) if mine else "(no chatapp frame: the server, the SDK, the loop)"] += stat.size_diff
            packages[package(frames[-1].filename)] += stat.size_diff
        print("\n  by the package that allocated it (innermost frame), KiB per stream:")
        for name, size in packages.most_common(12):
            print(f"    {size / 1024 / added:7.2f}  {name}")
        print("\n  by the innermost frame in chatapp's code (who asked for it), KiB per stream:")
        for name, size in owners.most_common(12):
            print(f"    {size / 1024 / added:7.2f}  {name}")
        print(f"\n  the top {top} traceback groups, KiB per stream (blocks per stream), innermost frame first:")
        for stat in sorted(stats, key=lambda s: -s.size_diff)[:top]:
            chain = " < ".join(short(f) for f in reversed(list(stat.traceback)))
            print(f"    {stat.size_diff / 1024 / added:7.2f} ({stat.count_diff / added:5.1f})  {chain}")
    grown = counts[1] - counts[0]
    print("\n  objects tracked by the garbage collector, per stream, by type (top 20):")
    for name, count in grown.most_common(20):
        print(f"    {count / added:6.2f}  {name}")


async def serve(args: argparse.Namespace) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config as HypercornConfig

    from bench.lib.fakes import FakeProcess
    from bench.lib.processes import raise_fd_limit
    from tests.support.live_server import app_environment, free_port

    raise_fd_limit()
    fake = FakeProcess(args.tokens, args.delay, 4096)
    stop = asyncio.Event()
    try:
        with tempfile.TemporaryDirectory(prefix="chatapp-stream-memory-") as tmp:
            os.environ.update(app_environment(fake.base_url, Path(tmp) / "chat.db",
                                              CHATAPP_MAX_STREAMS=str(max(5000, args.high)),
                                              CHATAPP_MAX_STREAMS_PER_SESSION="100",
                                              # a traced process is slow, and a snapshot stops it for
                                              # seconds: no stream may fail on a timer meanwhile
                                              CHATAPP_CONNECT_TIMEOUT="300", CHATAPP_FIRST_TOKEN_TIMEOUT="600",
                                              CHATAPP_IDLE_TIMEOUT="600"))
            from chatapp import create_app

            app = create_app()
            port = free_port()
            config = HypercornConfig()
            config.bind, config.backlog, config.accesslog, config.errorlog = [f"127.0.0.1:{port}"], 4096, None, None
            server = asyncio.ensure_future(hypercorn_serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
            base = f"http://127.0.0.1:{port}"
            async with httpx2.AsyncClient(base_url=base, trust_env=False, follow_redirects=True) as client:
                for _ in range(200):
                    try:
                        page = await client.get("/")
                        break
                    except httpx2.TransportError:
                        await asyncio.sleep(0.05)
                action, csrf = composer_form(page.text)  # warm up: one answer to its first token
                async with client.stream("POST", action, data={"message": "warm"}, timeout=60,
                                         headers={"HX-Request": "true", "X-CSRF-Token": csrf}) as response:
                    async for data in response.aiter_bytes():
                        if TOKEN.search(data):
                            break
            if args.trace:
                tracemalloc.start(args.frames)
            child = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--client", base, str(args.low), str(args.high), "--settle", str(args.settle),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT)
            snapshots: list[tracemalloc.Snapshot | None] = []
            counts: list[Counter] = []
            rss: list[int] = []
            for _ in range(2):
                line = await child.stdout.readline()  # type: ignore[union-attr]
                if not line.startswith(b"open"):
                    raise RuntimeError(f"the clients stopped: {line!r}")
                gc.collect()
                rss.append(rss_kib())
                counts.append(by_type())
                snapshots.append(tracemalloc.take_snapshot() if args.trace else None)
                print(f"{line.decode().strip()} streams: RSS {rss[-1] / 1024:.1f} MiB", file=sys.stderr, flush=True)
                child.stdin.write(b"next\n")  # type: ignore[union-attr]
            await child.wait()
            tracemalloc.stop()
            print(f"the app in one process (Hypercorn, SQLite), streams idle between tokens ({args.delay:g} s apart); "
                  f"snapshots at {args.low} and {args.high} open streams")
            report(snapshots[0], snapshots[1], (counts[0], counts[1]), (rss[0], rss[1]), args.high - args.low,
                   args.top)
            stop.set()
            await asyncio.wait_for(server, 30)
    finally:
        fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="What the app holds per open stream, by who allocated it.")
    parser.add_argument("low", type=int, nargs="?", default=100)
    parser.add_argument("high", type=int, nargs="?", default=500)
    parser.add_argument("--frames", type=int, default=6, help="frames kept per trace (6)")
    parser.add_argument("--top", type=int, default=20, help="traceback groups shown (20)")
    parser.add_argument("--delay", type=float, default=0.2, help="seconds between the fake's tokens (0.2)")
    parser.add_argument("--tokens", type=int, default=300, help="tokens per answer (300: a minute at 0.2 s)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds from the last stream's first token to the snapshot (3)")
    parser.add_argument("--no-trace", dest="trace", action="store_false", help="RSS and gc counts only")
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(clients(args.client, args.low, args.high, args.settle))
        return
    started = time.monotonic()
    from bench.lib.processes import start_watchdog

    timer = start_watchdog("stream_memory.py", DEADLINE, {})
    try:
        asyncio.run(serve(args))
    finally:
        timer.cancel()
    print(f"\n{time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
