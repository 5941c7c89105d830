"""The physical limit for bench/load.py: N streams at once from the official SDK, straight to the fake server.

    python bench/direct.py 200
    python bench/direct.py 1000 [--tokens 200] [--delay 0.01] [--deadline 120] [--json]

bench/load.py measures the app as a relay between the model server and N browsers. This measures
the same streams with no app at all: one process reading them through the official `openai` SDK,
as an app that only relayed them would have to, at the least. A table can put the two side by side.

What it does, in order, and every step is bounded:
 1. Raises this process's open-file limit (RLIMIT_NOFILE) to the hard limit, before starting the
    fake server, so both can hold N connections.
 2. Starts the fake OpenAI-compatible server in a subprocess (bench/fake_server.py, listen backlog
    4096), as load.py does by default: TOKENS word tokens, DELAY seconds apart.
 3. Makes ONE openai.AsyncOpenAI client for all the streams, as an app would (max_retries=0), on an
    httpx2 pool with no connection limit (the SDK's default stops at 1,000).
 4. Warms up with 3 streams (imports, the SDK's models), not counted.
 5. Load phase: all N call chat.completions.create(stream=True, stream_options include_usage), as
    the app does, at once, and read the chunks to the end. Time to first token runs from just
    before create() to the first chunk with content; the gaps are between content chunks. A stream
    is completed when it got all TOKENS content tokens, finish_reason "stop", and ended normally.
    Meanwhile a thread samples this process's RSS every 0.1 s (see watch_memory).
 6. Prints a table (and, with --json, one last line `JSON {...}`), then stops the fake server.
    Exit status 0 only with 0 errors.

A global deadline (--deadline, default 120 s) bounds the run: when it passes, the streams still
open are cancelled and counted as errors, and the report is printed for what finished. A watchdog
kills the fake server and exits 30 s after the deadline, if anything hangs.

Measured on this process (the SDK streams and this script's bookkeeping share its event loop):
CPU seconds (getrusage RUSAGE_SELF, utime+stime, all threads) over the load phase, per 1,000
tokens delivered; RSS (VmRSS) at peak concurrency minus RSS before the load phase, per open stream.
The fake server's CPU, in its own process, is reported apart.

Nothing here leaves 127.0.0.1: the client ignores proxy settings (trust_env=False).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import resource
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import FakeProcess, Samples, kill_quietly, percentile, raise_fd_limit, status_kb  # noqa: E402

KEY = "sk-bench-not-a-real-key"


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Result:
    index: int
    outcome: str = "error"             # complete | error
    reason: str = "not started"
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0                    # content chunks received
    finish: str | None = None


class Direct:
    """The streams, on one shared client, and how many of them are open."""

    def __init__(self, base_url: str, tokens: int) -> None:
        self.tokens = tokens
        self.open_streams = 0
        self.client = openai.AsyncOpenAI(
            base_url=base_url, api_key=KEY, max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(
                limits=httpx2.Limits(max_connections=None, max_keepalive_connections=None),
                timeout=httpx2.Timeout(60.0, connect=30.0, pool=30.0), trust_env=False),
        )

    async def stream(self, result: Result, start: asyncio.Event) -> None:
        await start.wait()
        result.reason = "no response"
        opened = False
        started = time.perf_counter()
        try:
            stream = await self.client.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": f"direct stream {result.index}"}],
                stream=True, stream_options={"include_usage": True},
            )
            async with stream:
                self.open_streams += 1
                opened = True
                last = None
                async for chunk in stream:
                    if not chunk.choices:
                        continue  # the usage chunk
                    choice = chunk.choices[0]
                    if choice.delta.content:
                        now = time.perf_counter()
                        result.tokens += 1
                        if last is None:
                            result.ttft = now - started
                        else:
                            result.gaps.append(now - last)
                        last = now
                    result.finish = choice.finish_reason or result.finish
            if result.tokens == self.tokens and result.finish == "stop":
                result.outcome, result.reason = "complete", ""
            else:
                result.reason = f"ended after {result.tokens} tokens, finish_reason {result.finish}"
        except asyncio.CancelledError:
            result.reason = f"cancelled at the deadline after {result.tokens} tokens"
            raise
        except Exception as error:  # noqa: BLE001 - every failure is a figure
            result.reason = f"{type(error).__name__}: {error or ''}".strip()
        finally:
            if opened:
                self.open_streams -= 1


def watch_memory(direct: Direct, samples: Samples, stop: threading.Event) -> None:
    """load.py's sample(), in a thread: the SDK parses every chunk already buffered before it gives
    the event loop back, so once this process is the bottleneck one turn of the loop takes seconds
    (5 ticks of an asyncio sampler in a 6 s run of 200 streams) and a sampler on the loop misses the peak."""
    while not stop.wait(0.1):
        rss, open_streams = status_kb(os.getpid(), "VmRSS"), direct.open_streams
        samples.peak_rss_kb = max(samples.peak_rss_kb, rss)
        if open_streams > samples.peak_open:
            samples.peak_open, samples.rss_at_peak_open_kb = open_streams, rss
        elif open_streams == samples.peak_open and open_streams:
            samples.rss_at_peak_open_kb = max(samples.rss_at_peak_open_kb, rss)


async def run(fake: FakeProcess, args: argparse.Namespace, deadline: float) -> dict:
    direct = Direct(fake.base_url, args.tokens)
    figures: dict = {}
    try:
        go = asyncio.Event()
        go.set()
        warm = [Result(i) for i in range(3)]
        async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
            await asyncio.gather(*(direct.stream(r, go) for r in warm))
        if failed := [r.reason for r in warm if r.outcome != "complete"]:
            raise RuntimeError(f"warm-up failed: {failed}")

        start, samples = asyncio.Event(), Samples()
        results = [Result(i) for i in range(args.streams)]
        tasks = [asyncio.create_task(direct.stream(r, start)) for r in results]
        await asyncio.sleep(0)  # every task is waiting for the start
        samples.rss_before_kb = status_kb(os.getpid(), "VmRSS")
        fake_before, cpu_before = fake.stats(), cpu_now()
        stop = threading.Event()
        watcher = threading.Thread(target=watch_memory, args=(direct, samples, stop), daemon=True)
        watcher.start()
        started = time.perf_counter()
        start.set()
        try:
            async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                await asyncio.gather(*tasks)
        except TimeoutError:
            figures["deadline_hit"] = True
            await asyncio.gather(*tasks, return_exceptions=True)  # gather cancelled them
        finally:
            figures["wall_s"] = time.perf_counter() - started
            figures["cpu_s"] = cpu_now() - cpu_before
            stop.set()
            watcher.join()
        fake_after = fake.stats()
        figures["fake_cpu_s"] = fake_after["cpu_seconds"] - fake_before["cpu_seconds"]
        figures["fake_completed"] = fake_after["completed"] - fake_before["completed"]
        figures["results"], figures["samples"] = results, samples
    finally:
        await direct.client.close()
    return figures


def report(args: argparse.Namespace, figures: dict) -> dict:
    results: list[Result] = figures["results"]
    samples: Samples = figures["samples"]
    ttft = [r.ttft for r in results if r.ttft is not None]
    gaps = [g for r in results for g in r.gaps]
    tokens = sum(r.tokens for r in results)
    errors = [r for r in results if r.outcome == "error"]
    wall, cpu, ms, nan = figures["wall_s"], figures["cpu_s"], 1000, float("nan")
    per_stream = ((samples.rss_at_peak_open_kb - samples.rss_before_kb) / samples.peak_open
                  if samples.peak_open else nan)
    summary = {
        "streams": len(results), "completed": len(results) - len(errors), "errors": len(errors),
        "ttft_p50_ms": statistics.median(ttft) * ms if ttft else nan, "ttft_p99_ms": percentile(ttft, .99) * ms,
        "gap_p50_ms": percentile(gaps, .5) * ms, "gap_p99_ms": percentile(gaps, .99) * ms,
        "tokens": tokens, "cpu_s": cpu, "cpu_ms_per_1000_tokens": cpu / tokens * 1000 * ms if tokens else nan,
        "mem_per_stream_kib": per_stream, "wall_s": wall,
    }
    rows = [
        ("streams", f"{len(results)}  (one AsyncOpenAI client, openai {openai.__version__})"),
        ("answer", f"{args.tokens} tokens, {args.delay * ms:g} ms apart; fake server: process"),
        ("completed", f"{summary['completed']}"),
        ("errors", f"{len(errors)}"),
        ("load phase wall time", f"{wall:.1f} s"),
        ("time to first token p50", f"{summary['ttft_p50_ms']:.0f} ms"),
        ("time to first token p99", f"{summary['ttft_p99_ms']:.0f} ms  (max {max(ttft, default=nan) * ms:.0f})"),
        ("inter-token gap p50 / p99", f"{summary['gap_p50_ms']:.1f} / {summary['gap_p99_ms']:.1f} ms  "
                                      f"(max {max(gaps, default=nan) * ms:.0f})"),
        ("tokens delivered", f"{tokens:,}  ({tokens / wall:,.0f}/s)"),
        ("CPU over the load phase", f"{cpu:.1f} s  ({cpu / wall:.0%} of one core)"),
        ("CPU per 1,000 tokens", f"{summary['cpu_ms_per_1000_tokens']:.0f} ms"),
        ("RSS before / at peak", f"{samples.rss_before_kb / 1024:.1f} / {samples.rss_at_peak_open_kb / 1024:.1f} MiB "
                                 f"(max {samples.peak_rss_kb / 1024:.1f})"),
        ("peak open streams", f"{samples.peak_open}"),
        ("memory per open stream", f"{per_stream:.0f} KiB"),
        ("fake server CPU", f"{figures['fake_cpu_s']:.1f} s  ({figures['fake_completed']} streams written to the end)"),
        ("load average (1 min) at start", f"{args.loadavg:.2f} on {os.cpu_count()} CPUs"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    print(f"direct: {args.streams} concurrent streams, the openai SDK straight to the fake server, loopback")
    print("-" * (width + 60))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print("-" * (width + 60))
    if figures.get("deadline_hit"):
        print(f"the {args.deadline:g} s deadline passed: streams still open were cancelled (counted as errors)")
    if errors:
        reasons: dict[str, int] = {}
        for r in errors:
            reason = re.sub(r"\d+", "N", r.reason)
            reasons[reason] = reasons.get(reason, 0) + 1
        print("errors by reason:")
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
            print(f"  {count:6}  {reason}")
    print("PASS: 0 errors" if not errors else "FAIL")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description="N concurrent streams through the openai SDK, no app.")
    parser.add_argument("streams", type=int, nargs="?", default=200)
    parser.add_argument("--tokens", type=int, default=200, help="tokens per answer (default 200)")
    parser.add_argument("--delay", type=float, default=0.01, help="seconds between tokens (default 0.01)")
    parser.add_argument("--deadline", type=float, default=120.0, help="global deadline in seconds (120)")
    parser.add_argument("--json", action="store_true", help="also print one last line: JSON {...}")
    args = parser.parse_args()
    deadline = time.monotonic() + args.deadline
    args.loadavg = os.getloadavg()[0]

    limit = raise_fd_limit()
    fake = FakeProcess(args.tokens, args.delay, backlog=4096)

    def watchdog() -> None:  # the last resort: nothing outlives the deadline by much
        print(f"direct.py: watchdog: still running {args.deadline + 30:g} s after start; killing the fake server",
              file=sys.stderr, flush=True)
        kill_quietly(fake.pid)
        os._exit(3)

    timer = threading.Timer(args.deadline + 30, watchdog)
    timer.daemon = True
    timer.start()
    try:
        print(f"fd limit {limit[0]}/{limit[1]}; fake server {fake.base_url}; "
              f"{args.streams} streams at once after 3 to warm up ...", flush=True)
        figures = asyncio.run(run(fake, args, deadline))
        summary = report(args, figures)
    finally:
        fake.stop()
        timer.cancel()
    if args.json:
        clean = {k: None if isinstance(v, float) and math.isnan(v) else round(v, 3) for k, v in summary.items()}
        print("JSON " + json.dumps(clean))
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
