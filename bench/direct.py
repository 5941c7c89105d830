"""The physical limit for bench/load.py: N streams at once from the official SDK, straight to the fake server.

    python bench/direct.py 200
    python bench/direct.py 1000 [--tokens 200] [--delay 0.01] [--deadline 120] [--ramp 0] [--repeat 1]
                                [--transport httpx|aiohttp] [--json]

bench/load.py measures the app as a relay between the model server and N browsers. This measures
the same streams with no app at all: one process reading them through the official `openai` SDK,
as an app that only relayed them would have to, at the least. A table can put the two side by side.

What it does, in order, and every step is bounded:
 1. Raises this process's open-file limit (RLIMIT_NOFILE) to the hard limit, before starting the
    fake server, so both can hold N connections.
 2. Starts the fake OpenAI-compatible server in a subprocess (bench/fake_server.py, listen backlog
    4096), as load.py does by default: TOKENS word tokens, DELAY seconds apart.
 3. Makes ONE openai.AsyncOpenAI client for all the streams, as the app does (max_retries=0, no
    read timeout), on the transport --transport names (see sdk_client):
      - httpx (the default): the SDK's default client, an httpx2 pool with no connection limit
        (the SDK's default stops at 1,000);
      - aiohttp: openai.DefaultAioHttpClient (the `openai[aiohttp]` extra), the transport the app
        itself uses, so the fairer "physical limit" for it.
 4. Warms up with 3 streams (imports, the SDK's models), not counted.
 5. Load phase: all N call chat.completions.create(stream=True, stream_options include_usage), as
    the app does, at once (or spread over RAMP seconds, as load.py's --ramp), and read the chunks to
    the end. With --repeat K, K waves of N, one after another, pooled in one report. Time to first
    token runs from just before create() to the first chunk with content; the gaps are between
    content chunks. A stream is completed when it got all TOKENS content tokens, finish_reason
    "stop", and ended normally. Meanwhile a thread samples this process's RSS every 0.1 s
    (bench/lib/sampling.py).
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
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lib.fakes import FakeProcess  # noqa: E402
from bench.lib.options import add_stream_options  # noqa: E402
from bench.lib.processes import raise_fd_limit, start_watchdog  # noqa: E402
from bench.lib.procfs import status_kb  # noqa: E402
from bench.lib.sampling import Samples, watching  # noqa: E402
from bench.lib.table import percentile, print_json, print_table  # noqa: E402

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


def sdk_client(base_url: str, transport: str, streams: int) -> openai.AsyncOpenAI:
    """One client for all the streams, configured as the app's (chatapp/llm/openai_server.py): no retries, no read
    timeout (the deadline bounds the run), only a connect timeout."""
    if transport == "aiohttp":
        # The transport reads max_connections=None as aiohttp's own default, 100: keep the SDK's 1,000.
        http_client = openai.DefaultAioHttpClient(limits=httpx2.Limits(max_connections=max(1000, streams)),
                                                  trust_env=False)
    else:
        http_client = openai.DefaultAsyncHttpxClient(
            limits=httpx2.Limits(max_connections=None, max_keepalive_connections=None), trust_env=False)
    return openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0, http_client=http_client,
                              timeout=openai.Timeout(None, connect=30.0))


class Direct:
    """The streams, on one shared client, and how many of them are open."""

    def __init__(self, base_url: str, tokens: int, transport: str, streams: int) -> None:
        self.tokens = tokens
        self.open_streams = 0
        self.client = sdk_client(base_url, transport, streams)

    async def stream(self, result: Result, start: asyncio.Event, after: float = 0.0) -> None:
        """Waits for start, then `after` seconds (the ramp), then reads one stream to the end."""
        await start.wait()
        if after:
            await asyncio.sleep(after)
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


async def run(fake: FakeProcess, args: argparse.Namespace, deadline: float) -> dict:
    direct = Direct(fake.base_url, args.tokens, args.transport, args.streams)
    figures: dict = {}
    try:
        go = asyncio.Event()
        go.set()
        warm = [Result(i) for i in range(3)]
        async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
            await asyncio.gather(*(direct.stream(r, go) for r in warm))
        if failed := [r.reason for r in warm if r.outcome != "complete"]:
            raise RuntimeError(f"warm-up failed: {failed}")

        n, samples = args.streams, Samples()
        waves = [asyncio.Event() for _ in range(args.repeat)]
        results = [Result(i) for i in range(n * args.repeat)]
        tasks = [asyncio.create_task(direct.stream(r, waves[r.index // n], args.ramp * (r.index % n) / n))
                 for r in results]
        await asyncio.sleep(0)  # every task is waiting for its start
        samples.rss_before_kb = status_kb(os.getpid(), "VmRSS")
        fake_before, cpu_before = fake.stats(), cpu_now()
        started = time.perf_counter()
        try:
            with watching(os.getpid(), lambda: direct.open_streams, samples):
                async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                    for wave, start in enumerate(waves):
                        start.set()
                        await asyncio.gather(*tasks[wave * n:(wave + 1) * n])
        except TimeoutError:
            figures["deadline_hit"] = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            figures["wall_s"] = time.perf_counter() - started
            figures["cpu_s"] = cpu_now() - cpu_before
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
        "streams": args.streams, "repeat": args.repeat, "completed": len(results) - len(errors),
        "errors": len(errors),
        "ttft_p50_ms": statistics.median(ttft) * ms if ttft else nan, "ttft_p99_ms": percentile(ttft, .99) * ms,
        "gap_p50_ms": percentile(gaps, .5) * ms, "gap_p99_ms": percentile(gaps, .99) * ms,
        "tokens": tokens, "cpu_s": cpu, "cpu_ms_per_1000_tokens": cpu / tokens * 1000 * ms if tokens else nan,
        "mem_per_stream_kib": per_stream, "wall_s": wall,
    }
    rows = [
        ("streams", f"{len(results)}  (one AsyncOpenAI client, openai {openai.__version__}, {args.transport})"),
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
    waves = f", {args.repeat} times one after another" if args.repeat > 1 else ""
    print_table(f"direct: {args.streams} concurrent streams{waves}, the openai SDK straight to the fake server, loopback",
                rows, errors, args.deadline if figures.get("deadline_hit") else None)
    print("PASS: 0 errors" if not errors else "FAIL")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description="N concurrent streams through the openai SDK, no app.")
    add_stream_options(parser, "streams", starts="starts")
    parser.add_argument("--transport", choices=("httpx", "aiohttp"), default="httpx",
                        help="the SDK's HTTP client: httpx (its default) or aiohttp (the app's)")
    args = parser.parse_args()
    deadline = time.monotonic() + args.deadline
    args.loadavg = os.getloadavg()[0]

    limit = raise_fd_limit()
    fake = FakeProcess(args.tokens, args.delay, backlog=4096)

    timer = start_watchdog("direct.py", args.deadline + 30, {"fake server": fake.pid})
    try:
        start = f"over {args.ramp:g} s" if args.ramp else "at once"
        waves = f", in {args.repeat} waves of {args.streams}" if args.repeat > 1 else ""
        print(f"fd limit {limit[0]}/{limit[1]}; fake server {fake.base_url}; {args.transport}; "
              f"{args.streams} streams {start}{waves}, after 3 to warm up ...", flush=True)
        figures = asyncio.run(run(fake, args, deadline))
        summary = report(args, figures)
    finally:
        fake.stop()
        timer.cancel()
    if args.json:
        print_json(summary)
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
