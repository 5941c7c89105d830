"""A bounded load test: N conversations streaming at once through ONE Hypercorn worker, loopback only.

    python bench/load.py 200
    python bench/load.py 1000 [--tokens 200] [--delay 0.01] [--disconnect-share 0.1]
                              [--disconnect-after 50] [--deadline 120] [--fake process|thread]
                              [--ramp 0] [--repeat 1] [--backlog N] [--fake-backlog 4096]
                              [--env NAME=VALUE] [--json] [--profile FILE]

What it does, in order, and every step is bounded:
 1. Raises this process's open-file limit (RLIMIT_NOFILE) to the hard limit, before starting any
    child, so the app and the fake server inherit it.
 2. Starts the fake OpenAI-compatible server (tests/support/fake_openai.py): by default in a subprocess,
    bench/fake_server.py, which prints its port; `--fake thread` runs it in a thread of this process.
    Every answer is TOKENS word tokens, DELAY seconds apart, a paragraph break every 25 tokens.
 3. Starts the real app under Hypercorn with one worker (tests/support/live_server.py) on 127.0.0.1, with a
    fresh SQLite file, rate limits off, CHATAPP_MAX_RETRIES=0, CHATAPP_MAX_STREAMS=max(5000, N) and
    CHATAPP_MAX_STREAMS_PER_SESSION=100. `--backlog` passes Hypercorn's --backlog (default 100).
 4. Warms up with 3 conversations (templates compiled, modules imported), not counted.
 5. Sets up N clients, each its own httpx2 client (its own cookie jar: its own session): GET /
    (following the redirect), reads the composer form's action and csrf_token.
 6. Load phase: all N POST one message at once (htmx headers), or spread over RAMP seconds, and read
    the SSE stream to `event: done`. A share of them (default 10%) closes the response after
    DISCONNECT_AFTER tokens. With --repeat K, K waves of N, one after another (each with clients
    of its own), pooled in one report: for a stable p50 at 1 stream. Meanwhile a thread samples the
    app worker's RSS and open fds and the open-stream count every 0.1 s (see watch), and a task
    times GET /healthz every 0.5 s (a stand-in for the app's event-loop lag; it runs on this
    process's loop, so a busy client adds to it).
 7. Checks the database (read-only): every conversation has its user message, and its answer is
    `complete` with the full text (or `stopped`, a prefix, for the clients that left); none is left
    `streaming` (it waits up to 5 s for the last saves).
 8. Prints a table (and, with --json, one last line `JSON {...}`, keyed as bench/direct.py's), stops
    the app (and its worker) and the fake server. Exit status 0 only with 0 errors and nothing lost.

A global deadline (--deadline, default 120 s) bounds the whole run: when it passes, the clients
still streaming are cancelled and counted as errors, and the report is printed for what finished.
A watchdog kills the app, its worker and the fake server, then exits, 30 s after the deadline, if
anything hangs.

Measured on the Hypercorn *worker* process (Hypercorn with --workers 1 runs the app in a child of
the process LiveServer starts; the parent only supervises): CPU seconds (utime+stime from
/proc/<pid>/stat, all threads, aiosqlite's included) over the load phase per 1,000 tokens delivered;
RSS (VmRSS) at peak concurrency minus RSS before the load phase, per open stream.

Why the fake server runs in its own process (the default): the load client and the fake server are
both busy Python event loops. In one process they share one GIL and, together, at most one core.
Measured on this 2-CPU box (200 tokens, 10 ms apart, 10% leaving):
  - 200 streams: no difference beyond run-to-run noise (TTFT p99 1.5-3.2 s, gap p99 1.4-1.6 s,
    ~270-280 ms app CPU per 1,000 tokens in both modes): the app, at ~100% of one core, is the
    bottleneck, and the client plus the fake need only ~5 s of CPU in a 10 s load phase.
  - 1,000 streams: `--fake thread` FAILS with ~130 answers in `error` (the app's 30 s first-token
    timeout: TTFT p99 47 s) because the fake, starved of the GIL by the client's 200,000 frames,
    answers late; `--fake process` passes (0 errors) with TTFT p99 ~15 s. That is the fake being
    measured, not the app, so the default keeps them apart; `--fake thread` stays to show it.
The fake's listen backlog is raised to 4096 for the same reason (see bench/fake_server.py): with
asyncio's default of 100, about 60 of 1,000 answers failed on the app's 10 s upstream connect
timeout. The app always runs in its own process (Hypercorn), so its CPU and memory figures are
its own either way.

Nothing here leaves 127.0.0.1: the clients ignore proxy settings (trust_env=False).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import resource
import signal
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fake_server import BenchFake, reply_tokens  # noqa: E402
from tests.support.fake_openai import Reply  # noqa: E402
from tests.support.live_server import ROOT as APP_ROOT, LiveServer, app_environment, clean_environment, free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
ACTION = re.compile(r'<form id="composer"[^>]*action="([^"]+)"')
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
FINAL = re.compile(rb'data-status="(\w+)" aria-busy="false"')
WORD = re.compile(rb"word(\d+)")  # token i of the fake server's answers is word<i> (bench/fake_server.py)


# --- the processes ---------------------------------------------------------------------------

def raise_fd_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class FakeProcess:
    """bench/fake_server.py in a subprocess (the default)."""

    def __init__(self, tokens: int, delay: float, backlog: int) -> None:
        self._process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "fake_server.py"), "--tokens", str(tokens), "--delay", str(delay),
             "--backlog", str(backlog)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the fake server did not start")
        info = json.loads(line)
        self.base_url, self.pid = info["base_url"], info["pid"]

    def stats(self) -> dict:
        self._process.stdin.write("stats\n")
        self._process.stdin.flush()
        return json.loads(self._process.stdout.readline())

    def stop(self) -> None:
        try:
            self._process.stdin.close()
            self._process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self._process.kill()
            self._process.wait()


class FakeThread:
    """The fake server in a thread of this process (`--fake thread`, to compare)."""

    def __init__(self, tokens: int, delay: float, backlog: int) -> None:
        self._fake = BenchFake(default=Reply(tokens=reply_tokens(tokens, 25), delay=delay), backlog=backlog).start()
        self.base_url, self.pid = self._fake.base_url, None

    def stats(self) -> dict:
        return {"requests": len(self._fake.requests), "completed": self._fake.completed,
                "disconnects": len(self._fake.disconnects), "cpu_seconds": None}

    def stop(self) -> None:
        self._fake.stop()


class BenchServer(LiveServer):
    """LiveServer, with extra Hypercorn arguments (only when some are given)."""

    def __init__(self, env: dict[str, str], log_path: Path, hypercorn_args: list[str]) -> None:
        if not hypercorn_args:
            super().__init__(env, log_path)
            return
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{self.port}", "--workers", "1",
             *hypercorn_args, "chatapp:create_app()"],
            cwd=APP_ROOT, env={**clean_environment(), **env}, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._wait_until_up()


def worker_pid(master: int, timeout: float = 10.0) -> int:
    """The Hypercorn worker: the master's child running multiprocessing's spawn (not its resource tracker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        except OSError:
            children = []
        for child in children:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"resource_tracker" not in cmdline:
                return int(child)
        time.sleep(0.05)
    return master  # --workers 0 style: the app runs in the master itself


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def fd_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return "/".join(line.split()[3:5])
    return "?"


def listen_drops() -> dict[str, int]:
    """This network namespace's TcpExt ListenOverflows/ListenDrops: connections refused because an
    accept queue (a listen backlog) was full."""
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines() if line.startswith("TcpExt:")]
    values = dict(zip(lines[0][1:], map(int, lines[1][1:])))
    return {key: values.get(key, 0) for key in ("ListenOverflows", "ListenDrops")}


def kill_orphan(pid: int | None) -> None:
    """The Hypercorn worker, if it outlived its master (it is a multiprocessing child)."""
    try:
        if pid and b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def kill_quietly(pid: int | None) -> None:
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# --- the clients ----------------------------------------------------------------------------

@dataclass
class Result:
    index: int
    leaves: bool                       # disconnects by design
    message: str
    wave: int = 0                      # with --repeat: which of the waves, one after another
    conversation_id: str | None = None
    outcome: str = "error"             # complete | disconnected | error
    reason: str = "not started"
    ttff: float | None = None           # POST to the first frame (the two bubbles)
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0                    # token frames received
    final_status: str | None = None


class Load:
    def __init__(self, base_url: str, args: argparse.Namespace) -> None:
        self.base_url, self.args = base_url, args
        self.ssl = ssl.create_default_context()  # one for all clients (each would load the CA file)
        self.open_streams = 0
        self.waves = [asyncio.Event() for _ in range(args.repeat)]  # set: that wave starts

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            base_url=self.base_url, follow_redirects=True, verify=self.ssl, trust_env=False,
            timeout=httpx2.Timeout(60.0, connect=30.0, pool=30.0),
        )

    async def conversation(self, result: Result, setup: asyncio.Semaphore, ready: list[int]) -> None:
        async with self.client() as client:
            try:
                async with setup:
                    page = await client.get("/")
                    if page.status_code != 200:
                        result.reason = f"GET / answered {page.status_code}"
                        return
                    action, csrf = ACTION.search(page.text).group(1), CSRF.search(page.text).group(1)
                result.conversation_id = action.split("/")[2]
            except Exception as error:  # noqa: BLE001 - every failure is a figure
                result.reason = f"setup: {type(error).__name__}: {error}"
                return
            finally:
                ready[0] += 1  # set up, or failed to: either way the load phase need not wait for it
            await self.waves[result.wave].wait()
            if self.args.ramp:
                n = self.args.conversations
                await asyncio.sleep(self.args.ramp * (result.index % n) / n)
            await self.stream(client, result, action, csrf)

    async def stream(self, client: httpx2.AsyncClient, result: Result, action: str, csrf: str) -> None:
        headers = {"HX-Request": "true", "X-CSRF-Token": csrf}
        result.reason = "no response"
        started = time.perf_counter()
        opened = False
        try:
            async with client.stream("POST", action, data={"message": result.message}, headers=headers) as response:
                if response.status_code != 200:
                    result.reason = f"POST answered {response.status_code}"
                    return
                self.open_streams += 1
                opened = True
                buffer, frames, last = b"", 0, None
                async for data in response.aiter_bytes():
                    now = time.perf_counter()
                    buffer += data
                    *complete, buffer = buffer.split(b"\n\n")
                    for frame in complete:
                        frames += 1
                        if frames == 1:
                            result.ttff = now - started
                            if b'aria-busy="true"' not in frame:
                                result.reason = "first frame without the busy answer"
                                return
                        elif frame.startswith(b"event: done"):
                            if result.final_status == "complete" and result.tokens == self.args.tokens:
                                result.outcome, result.reason = "complete", ""
                            elif result.final_status is None:
                                result.reason = "done without the final message"
                            else:
                                result.reason = f"final status {result.final_status}, {result.tokens} tokens"
                            return
                        elif (final := FINAL.search(frame)) and b'hx-swap="outerHTML"' in frame:
                            result.final_status = final.group(1).decode()
                        elif (count := max(map(int, WORD.findall(frame)), default=-1) + 1 - result.tokens) > 0:
                            # A frame may carry several tokens (the app paces its writes): the
                            # first waited since the last frame, the others came with it. (Tokens
                            # are numbered: a finished block's HTML repeats words already counted.)
                            result.tokens += count
                            if last is None:
                                result.ttft = now - started
                                result.gaps += [0.0] * (count - 1)
                            else:
                                result.gaps += [now - last] + [0.0] * (count - 1)
                            last = now
                            if result.leaves and result.tokens >= self.args.disconnect_after:
                                result.outcome, result.reason = "disconnected", ""
                                return  # leaving the block closes the response and its connection
                result.reason = f"stream ended without done after {result.tokens} tokens"
        except asyncio.CancelledError:
            result.reason = f"cancelled at the deadline after {result.tokens} tokens"
            raise
        except Exception as error:  # noqa: BLE001
            result.reason = f"{type(error).__name__}: {error or ''}".strip()
        finally:
            if opened:
                self.open_streams -= 1


@dataclass
class Samples:
    rss_before_kb: int = 0
    peak_open: int = 0
    rss_at_peak_open_kb: int = 0
    peak_rss_kb: int = 0
    peak_fds: int = 0
    health: list[float] = field(default_factory=list)
    health_failures: int = 0


def watch(pid: int, open_streams: Callable[[], int], samples: Samples, stop: threading.Event) -> None:
    """Samples pid's RSS and the open-stream count every 0.1 s, its open fds every 0.5 s, until stop.

    Run in a thread (see watching), not as a task on the client's event loop: once the client is
    busy, one turn of its loop can take seconds (bench/direct.py with 200 streams: 5 ticks of an
    asyncio sampler in a 6 s run, as the SDK parses every buffered chunk before it yields), and a
    sampler on the loop misses the peak. A thread gets the GIL back within the switch interval."""
    ticks = 0
    while True:
        try:
            rss = status_kb(pid, "VmRSS")
        except OSError:
            return
        now_open = open_streams()
        samples.peak_rss_kb = max(samples.peak_rss_kb, rss)
        if now_open > samples.peak_open:
            samples.peak_open, samples.rss_at_peak_open_kb = now_open, rss
        elif now_open == samples.peak_open and now_open:
            samples.rss_at_peak_open_kb = max(samples.rss_at_peak_open_kb, rss)
        if ticks % 5 == 0:
            samples.peak_fds = max(samples.peak_fds, open_fds(pid))
        ticks += 1
        if stop.wait(0.1):
            return


@contextmanager
def watching(pid: int, open_streams: Callable[[], int], samples: Samples) -> Iterator[None]:
    """watch() in a thread for the duration of the block."""
    stop = threading.Event()
    thread = threading.Thread(target=watch, args=(pid, open_streams, samples, stop), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


async def probe_health(load: Load, samples: Samples) -> None:
    async with load.client() as client:
        while True:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(10):
                    response = await client.get("/healthz")
                if response.status_code == 200:
                    samples.health.append(time.perf_counter() - started)
                else:
                    samples.health_failures += 1
            except (Exception, TimeoutError):  # noqa: BLE001
                samples.health_failures += 1
            await asyncio.sleep(0.5)


async def warm_up(base_url: str, args: argparse.Namespace) -> None:
    load = Load(base_url, argparse.Namespace(**{**vars(args), "ramp": 0, "conversations": 3, "repeat": 1}))
    load.waves[0].set()
    results = [Result(i, False, f"warm-up {i}") for i in range(3)]
    await asyncio.gather(*(load.conversation(r, asyncio.Semaphore(3), [0]) for r in results))
    failed = [r.reason for r in results if r.outcome != "complete"]
    if failed:
        raise RuntimeError(f"warm-up failed: {failed}")


@contextlib.contextmanager
def profiling(pid: int, output: str | None) -> Iterator[None]:
    """With --profile: py-spy samples the app worker while the block runs (the load phase), and
    writes its stacks in py-spy's raw (collapsed) format to `output` (bench/profile.py reads it)."""
    if not output:
        yield
        return
    spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
                            "--rate", "250", "--format", "raw", "--output", output],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it has, then exits
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


async def run_load(base_url: str, pid: int, args: argparse.Namespace, deadline: float) -> dict:
    load = Load(base_url, args)
    every = round(1 / args.disconnect_share) if args.disconnect_share > 0 else 0
    n = args.conversations
    results = [Result(i, bool(every) and i % every == every - 1, f"load test message {i}", wave=i // n)
               for i in range(n * args.repeat)]
    ready = [0]
    setup = asyncio.Semaphore(args.setup_concurrency)
    samples = Samples()
    figures: dict = {}
    tasks = [asyncio.create_task(load.conversation(r, setup, ready)) for r in results]
    setup_started = time.perf_counter()
    try:
        async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
            while ready[0] < len(results):
                await asyncio.sleep(0.05)
            figures["setup_seconds"] = time.perf_counter() - setup_started
            samples.rss_before_kb = status_kb(pid, "VmRSS")
            cpu_before, usage_before = cpu_seconds(pid), resource.getrusage(resource.RUSAGE_SELF)
            figures["fake_before"] = args.fake_stats()
            drops_before = listen_drops()
            health = asyncio.create_task(probe_health(load, samples))
            started = time.perf_counter()
            try:
                with watching(pid, lambda: load.open_streams, samples), profiling(pid, args.profile):
                    for wave, event in enumerate(load.waves):
                        event.set()
                        await asyncio.gather(*tasks[wave * n:(wave + 1) * n])
            finally:
                figures["load_seconds"] = time.perf_counter() - started
                figures["app_cpu"] = cpu_seconds(pid) - cpu_before
                figures["listen_drops"] = {k: v - drops_before[k] for k, v in listen_drops().items()}
                usage = resource.getrusage(resource.RUSAGE_SELF)
                figures["client_cpu"] = (usage.ru_utime + usage.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime)
                health.cancel()
                await asyncio.gather(health, return_exceptions=True)
    except TimeoutError:
        figures["deadline_hit"] = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    figures["results"], figures["samples"] = results, samples
    return figures


# --- the database check ---------------------------------------------------------------------

def check_database(db: Path, results: list[Result], full_text: str, wait: float = 5.0) -> tuple[int, list[str]]:
    """(conversations checked, problems): run while the app still serves, read-only."""
    ids = [r.conversation_id for r in results if r.conversation_id and r.reason != "not started"]
    posted = [r for r in results if r.conversation_id]
    deadline = time.monotonic() + wait
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
        while True:  # the last answers are saved after their streams close: give them a moment
            streaming = connection.execute(
                f"SELECT COUNT(*) FROM messages WHERE status = 'streaming' AND conversation_id IN "
                f"({','.join('?' * len(ids))})", ids).fetchone()[0] if ids else 0
            if not streaming or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        rows: dict[str, list[tuple]] = {}
        for row in connection.execute("SELECT conversation_id, role, content, status FROM messages ORDER BY id"):
            rows.setdefault(row[0], []).append(row[1:])
    problems = []
    for result in posted:
        messages = rows.get(result.conversation_id, [])
        users = [m for m in messages if m[0] == "user"]
        answers = [m for m in messages if m[0] == "assistant"]
        where = f"conversation {result.index} ({result.conversation_id})"
        if result.reason.startswith("setup") or result.reason == "not started":
            continue  # never posted
        if len(users) != 1 or users[0][1] != result.message or users[0][2] != "complete":
            problems.append(f"{where}: user message missing or wrong: {users!r:.80}")
        if len(answers) != 1:
            problems.append(f"{where}: {len(answers)} answers stored")
            continue
        content, status = answers[0][1], answers[0][2]
        if status == "streaming":
            problems.append(f"{where}: answer left 'streaming'")
        elif result.outcome == "complete" and (status != "complete" or content != full_text):
            problems.append(f"{where}: answer stored as {status}, {len(content)}/{len(full_text)} chars")
        elif result.outcome == "disconnected" and (status not in ("stopped", "complete")
                                                   or not full_text.startswith(content)):
            problems.append(f"{where}: left answer stored as {status}, {len(content)} chars")
        elif result.outcome == "error" and status not in ("stopped", "complete", "error"):
            problems.append(f"{where}: failed answer stored as {status}")
    return len(posted), problems


# --- the report -----------------------------------------------------------------------------

def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def print_json(summary: dict) -> None:
    """The figures as one line, `JSON {...}`, for bench/relay_table.py: NaN as null, floats to 3 places."""
    clean = {key: None if isinstance(value, float) and math.isnan(value) else
             round(value, 3) if isinstance(value, float) else value for key, value in summary.items()}
    print("JSON " + json.dumps(clean), flush=True)


def report(args: argparse.Namespace, figures: dict, fake: dict, db_checked: int, problems: list[str],
           info: dict) -> tuple[bool, dict]:
    """Prints the table; returns (passed, the figures keyed as bench/direct.py's, plus load.py's own)."""
    results: list[Result] = figures["results"]
    samples: Samples = figures["samples"]
    complete = [r for r in results if r.outcome == "complete"]
    left = [r for r in results if r.outcome == "disconnected"]
    errors = [r for r in results if r.outcome == "error"]
    ttft = [r.ttft for r in results if r.ttft is not None]
    ttff = [r.ttff for r in results if r.ttff is not None]
    gaps = [g for r in results for g in r.gaps]
    tokens = sum(r.tokens for r in results)
    ms, nan = 1000, float("nan")
    load_seconds = figures.get("load_seconds", nan)
    app_cpu = figures.get("app_cpu", nan)
    per_stream = (samples.rss_at_peak_open_kb - samples.rss_before_kb) / samples.peak_open if samples.peak_open else nan
    summary = {
        "streams": args.conversations, "repeat": args.repeat, "completed": len(complete), "errors": len(errors),
        "ttft_p50_ms": statistics.median(ttft) * ms if ttft else nan, "ttft_p99_ms": percentile(ttft, .99) * ms,
        "gap_p50_ms": percentile(gaps, .5) * ms, "gap_p99_ms": percentile(gaps, .99) * ms,
        "tokens": tokens, "cpu_s": app_cpu, "cpu_ms_per_1000_tokens": app_cpu / tokens * 1000 * ms if tokens else nan,
        "mem_per_stream_kib": per_stream, "wall_s": load_seconds,
        "disconnected": len(left), "lost": len(problems), "healthz_p99_ms": percentile(samples.health, .99) * ms,
    }
    rows = [
        ("conversations", f"{len(results)}  ({len(results) - sum(r.leaves for r in results)} to finish, "
                          f"{sum(r.leaves for r in results)} to leave after {args.disconnect_after} tokens)"),
        ("answer", f"{args.tokens} tokens, {args.delay * ms:g} ms apart; fake server: {args.fake}"),
        ("completed", f"{len(complete)}"),
        ("disconnected by design", f"{len(left)}"),
        ("errors", f"{len(errors)}"),
        ("nothing lost (database)", f"{'yes' if not problems else 'NO'}: {db_checked} conversations checked, "
                                    f"{len(problems)} problems"),
        ("setup (GET /, N sessions)", f"{figures.get('setup_seconds', float('nan')):.1f} s"),
        ("load phase wall time", f"{load_seconds:.1f} s"),
        ("time to first frame p50 / p99", f"{percentile(ttff, .5) * ms:.0f} / {percentile(ttff, .99) * ms:.0f} ms"
                                          "  (POST to the two bubbles)"),
        ("time to first token p50", f"{summary['ttft_p50_ms']:.0f} ms"),
        ("time to first token p99", f"{percentile(ttft, .99) * ms:.0f} ms  (max {max(ttft, default=float('nan')) * ms:.0f})"),
        ("inter-token gap p50 / p99", f"{percentile(gaps, .5) * ms:.1f} / {percentile(gaps, .99) * ms:.1f} ms  "
                                      f"(max {max(gaps, default=float('nan')) * ms:.0f})"),
        ("tokens delivered", f"{tokens:,}  ({tokens / load_seconds:,.0f}/s)"),
        ("app CPU over the load phase", f"{app_cpu:.1f} s  ({app_cpu / load_seconds:.0%} of one core)"),
        ("app CPU per 1,000 tokens", f"{summary['cpu_ms_per_1000_tokens']:.0f} ms"),
        ("app RSS before / at peak", f"{samples.rss_before_kb / 1024:.1f} / {samples.rss_at_peak_open_kb / 1024:.1f} MiB "
                                     f"(max {samples.peak_rss_kb / 1024:.1f})"),
        ("peak open streams", f"{samples.peak_open}"),
        ("memory per open stream", f"{per_stream:.0f} KiB" if samples.peak_open else "n/a"),
        ("app open fds peak / limit", f"{samples.peak_fds} / {info['app_fd_limit']}"),
        ("GET /healthz under load", f"p50 {percentile(samples.health, .5) * ms:.0f} ms, p99 "
                                    f"{percentile(samples.health, .99) * ms:.0f} ms, max "
                                    f"{max(samples.health, default=float('nan')) * ms:.0f} ms, "
                                    f"{samples.health_failures} failed"),
        ("load client CPU", f"{figures.get('client_cpu', float('nan')):.1f} s"
                            + (" (fake server's thread included)" if args.fake == "thread" else "")),
    ]
    before = figures.get("fake_before") or {}
    if fake.get("cpu_seconds") is not None and before.get("cpu_seconds") is not None:
        rows.append(("fake server CPU", f"{fake['cpu_seconds'] - before['cpu_seconds']:.1f} s"))
    if before:
        rows.append(("upstream streams (fake)", f"{fake['completed'] - before['completed']} written to the end, "
                                                f"{fake['disconnects'] - before['disconnects']} closed early by the app"))
    drops = figures.get("listen_drops")
    if drops:
        rows.append(("listen queue overflows", f"{drops['ListenOverflows']} (drops {drops['ListenDrops']}), "
                                               "app and fake together"))
    rows.append(("load average (1 min) at start", f"{info['loadavg']:.2f} on {os.cpu_count()} CPUs"))
    waves = f", {args.repeat} times one after another" if args.repeat > 1 else ""
    print_table(f"chatapp load test: {args.conversations} concurrent streams{waves}, one Hypercorn worker, loopback",
                rows, errors, args.deadline if figures.get("deadline_hit") else None)
    for problem in problems[:10]:
        print(f"  lost: {problem}")
    ok = not errors and not problems and not figures.get("deadline_hit")
    print("PASS: 0 errors, nothing lost" if ok else "FAIL")
    return ok, summary


def print_table(title: str, rows: list[tuple[str, str]], errors: list, deadline_passed: float | None) -> None:
    """The figures as a two-column table, then the errors counted by reason (shared with direct.py)."""
    width = max(len(name) for name, _ in rows)
    print()
    print(title)
    print("-" * (width + 60))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print("-" * (width + 60))
    if deadline_passed is not None:
        print(f"the {deadline_passed:g} s deadline passed: streams still open were cancelled (counted as errors)")
    if errors:
        reasons: dict[str, int] = {}
        for result in errors:
            reason = re.sub(r"\d+", "N", result.reason)
            reasons[reason] = reasons.get(reason, 0) + 1
        print("errors by reason:")
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
            print(f"  {count:6}  {reason}")


def print_app_log(log_path: Path) -> None:
    """The app's warnings and errors, counted by kind (upstream errors by their detail)."""
    kinds: dict[str, int] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if " WARNING " not in line and " ERROR " not in line and "Traceback" not in line:
            continue
        found = re.search(r"(upstream error kind=\w+).*?detail=([^;(]{0,70})", line)
        key = f"{found.group(1)}: {found.group(2).strip()}" if found else line.split(" ", 2)[-1][:110]
        key = re.sub(r"\d{6,}", "N", key)
        kinds[key] = kinds.get(key, 0) + 1
    if kinds:
        print("app log, warnings and errors:")
        for key, count in sorted(kinds.items(), key=lambda item: -item[1])[:8]:
            print(f"  {count:6}  {key}")


# --- main -----------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description="Bounded load test of chatapp on one Hypercorn worker.")
    parser.add_argument("conversations", type=int, nargs="?", default=200)
    parser.add_argument("--tokens", type=int, default=200, help="tokens per answer (default 200)")
    parser.add_argument("--delay", type=float, default=0.01, help="seconds between tokens (default 0.01)")
    parser.add_argument("--disconnect-share", type=float, default=0.1, help="share of clients that leave (0.1)")
    parser.add_argument("--disconnect-after", type=int, default=50, help="tokens before they leave (50)")
    parser.add_argument("--deadline", type=float, default=120.0, help="global deadline in seconds (120)")
    parser.add_argument("--fake", choices=("process", "thread"), default="process")
    parser.add_argument("--setup-concurrency", type=int, default=50, help="clients setting up at once (50)")
    parser.add_argument("--ramp", type=float, default=0.0, help="spread the POSTs over this many seconds (0)")
    parser.add_argument("--repeat", type=int, default=1, help="waves of N, one after another, pooled (1)")
    parser.add_argument("--backlog", type=int, default=None, help="Hypercorn --backlog (Hypercorn's default: 100)")
    parser.add_argument("--fake-backlog", type=int, default=4096, help="the fake server's listen backlog (4096)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra app setting")
    parser.add_argument("--profile", metavar="FILE", help="py-spy the app worker in the load phase, into FILE")
    parser.add_argument("--json", action="store_true", help="also print one last line: JSON {...}")
    args = parser.parse_args()
    deadline = time.monotonic() + args.deadline

    limit = raise_fd_limit()
    info = {"loadavg": os.getloadavg()[0]}
    pids: dict[str, int | None] = {}

    def watchdog() -> None:  # the last resort: nothing outlives the deadline by much
        print(f"load.py: watchdog: still running {args.deadline + 30:g} s after start; killing everything",
              file=sys.stderr, flush=True)
        for pid in pids.values():
            kill_quietly(pid)
        os._exit(3)

    timer = threading.Timer(args.deadline + 30, watchdog)
    timer.daemon = True
    timer.start()

    fake = (FakeProcess if args.fake == "process" else FakeThread)(args.tokens, args.delay, args.fake_backlog)
    pids["fake"] = fake.pid
    args.fake_stats = fake.stats
    server = None
    ok = False
    with tempfile.TemporaryDirectory(prefix="chatapp-load-") as tmp:
        db, log_path = Path(tmp) / "load.db", Path(tmp) / "server.log"
        try:
            extra = {"CHATAPP_MAX_STREAMS_PER_SESSION": "100",
                     "CHATAPP_MAX_STREAMS": str(max(5000, args.conversations)),
                     "CHATAPP_MAX_RETRIES": "0"}
            extra.update(dict(item.split("=", 1) for item in args.env))
            hypercorn_args = ["--backlog", str(args.backlog)] if args.backlog else []
            server = BenchServer(app_environment(fake.base_url, db, **extra), log_path, hypercorn_args)
            pids["master"] = server._process.pid
            pids["worker"] = pid = worker_pid(server._process.pid)
            info["app_fd_limit"] = fd_limit(pid)
            print(f"fd limit: this process {limit[0]}/{limit[1]}, app worker {info['app_fd_limit']}; "
                  f"app pid {pid} on {server.url}; fake server {fake.base_url}", flush=True)
            asyncio.run(warm_up(server.url, args))
            start = f"over {args.ramp:g} s" if args.ramp else "at once"
            waves = f", in {args.repeat} waves of {args.conversations}" if args.repeat > 1 else ""
            print(f"setting up {args.conversations * args.repeat} sessions, then all stream {start}{waves} ...",
                  flush=True)
            figures = asyncio.run(run_load(server.url, pid, args, deadline))
            full_text = "".join(reply_tokens(args.tokens, 25))
            checked, problems = check_database(db, figures["results"], full_text)
            ok, summary = report(args, figures, fake.stats(), checked, problems, info)
            print_app_log(log_path)
            if args.json:
                print_json(summary)
        finally:
            if server is not None:
                server.stop()
                kill_orphan(pids.get("worker"))
            fake.stop()
            timer.cancel()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
