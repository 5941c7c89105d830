"""A bounded load test: N conversations streaming at once through ONE Hypercorn worker (or a few,
--workers), loopback only, on SQLite or on PostgreSQL (--database).

    python bench/load.py 200
    python bench/load.py 1000 [--tokens 200] [--reasoning 0] [--delay 0.01] [--disconnect-share 0.1]
                              [--disconnect-after 50] [--deadline 120] [--fake process|thread]
                              [--ramp 0] [--repeat 1] [--backlog N] [--fake-backlog 4096]
                              [--database sqlite|postgresql] [--workers 1]
                              [--env NAME=VALUE] [--json] [--profile FILE] [--floor]

What it does, in order, and every step is bounded:
 1. Raises this process's open-file limit (RLIMIT_NOFILE) to the hard limit, before starting any
    child, so the app and the fake server inherit it.
 2. Starts the fake OpenAI-compatible server (tests/support/fake_openai.py): by default in a subprocess,
    bench/fake_server.py, which prints its port; `--fake thread` runs it in a thread of this process.
    Every answer is TOKENS word tokens, DELAY seconds apart, a paragraph break every 25 tokens.
 3. Starts the real app under Hypercorn with one worker (tests/support/live_server.py) on 127.0.0.1, with a
    fresh database, rate limits off, CHATAPP_MAX_RETRIES=0, CHATAPP_MAX_STREAMS=max(5000, N) and
    CHATAPP_MAX_STREAMS_PER_SESSION=100, and Hypercorn's listen backlog and keep-alive as
    hypercorn.toml sets them for production (`--backlog` sets another backlog); `--workers 2`
    runs two workers on the one socket, as WEB_CONCURRENCY=2 does (each with its own
    metrics, summed, as `chatapp` sets it up). The database: a fresh SQLite file (the default), or,
    with `--database postgresql`, a throwaway PostgreSQL server started for the run
    (tests/support/postgres.py: on its Unix socket, fsync off) and a fresh database on it, given to
    the app as CHATAPP_DATABASE_URL with the app's default pool; stopped and removed at the end.
 4. Warms up with 3 conversations per worker (templates compiled, modules imported), not counted.
 5. Sets up N clients, each its own httpx2 client (its own cookie jar: its own session): GET /
    (following the redirect), reads the composer form's action and csrf_token.
 6. Load phase: all N POST one message at once (htmx headers), or spread over RAMP seconds, and read
    the SSE stream to `event: done`. A share of them (default 10%) closes the response after
    DISCONNECT_AFTER tokens. With --repeat K, K waves of N, one after another (each with clients
    of its own), pooled in one report: for a stable p50 at 1 stream. Meanwhile a thread samples the
    app worker's RSS and open fds and the open-stream count every 0.1 s (bench/lib/sampling.py),
    and a task times GET /healthz every 0.5 s (a stand-in for the app's event-loop lag; it runs on
    this process's loop, so a busy client adds to it).
 7. Checks the database, reading it through the app's own chatapp.db (either database): every
    conversation has its user message, and its answer is `complete` with the full text (or `stopped`,
    a prefix, for the clients that left); none is left `streaming` (it waits up to 5 s for the last
    saves).
 8. Prints a table (and, with --json, one last line `JSON {...}`, keyed as bench/direct.py's), stops
    the app (and its worker) and the fake server. Exit status 0 only with 0 errors and nothing lost.

With --floor, the same clients and figures against bench/floor_app.py instead of the app: the
least a Quart app under Hypercorn must do to relay the model's answer as SSE through chatapp's own
provider (no session, no database, no templates); step 7 is skipped. The app's figures minus the
floor's are what the app adds (bench/ttft_floor.py sets them side by side).

A global deadline (--deadline, default 120 s) bounds the whole run: when it passes, the clients
still streaming are cancelled and counted as errors, and the report is printed for what finished.
A watchdog kills the app, its worker and the fake server, then exits, 30 s after the deadline, if
anything hangs.

Measured on the Hypercorn *worker* processes (Hypercorn runs the app in children of the process
LiveServer starts; the parent only supervises), summed over the workers: CPU seconds (utime+stime
from /proc/<pid>/stat, all threads, SQLite's thread included) over the load phase per 1,000 tokens
delivered; RSS (VmRSS) at peak concurrency minus RSS before the load phase, per open stream. On
PostgreSQL the server's own CPU (its postmaster and backends, from /proc) is not the app's: it is
reported on a line of its own, per 1,000 tokens too.

Why the fake server runs in its own process (the default): the load client and the fake server are
both busy Python event loops. In one process they share one GIL and, together, at most one core.
With a few hundred streams that makes no difference beyond run-to-run noise (the app, at one full
core, is the bottleneck); at a thousand, the fake, starved of the GIL by the client's frames,
answers late, and answers fail on the app's first-token timeout under `--fake thread` but not under
`--fake process`. That would be the fake being measured, not the app, so the default keeps them
apart; `--fake thread` stays to show it. The fake's listen backlog is raised to 4096 for the same
reason (see bench/fake_server.py): with asyncio's default of 100, answers failed on the app's
upstream connect timeout at a thousand streams. The app always runs in its own process
(Hypercorn), so its CPU and memory figures are its own either way.

Nothing here leaves 127.0.0.1: the clients ignore proxy settings (trust_env=False).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fake_server import reply_tokens  # noqa: E402
from bench.lib.fakes import FakeProcess, FakeThread  # noqa: E402
from bench.lib.database import BenchDatabase, add_database_option, bench_database  # noqa: E402
from bench.lib.options import add_stream_options  # noqa: E402
from bench.lib.page import composer_form  # noqa: E402
from bench.lib.processes import BenchServer, kill_orphan, raise_fd_limit, start_watchdog, worker_pids  # noqa: E402
from bench.lib.procfs import cpu_seconds, fd_limit, listen_drops, status_kb  # noqa: E402
from bench.lib.sampling import Samples, watching  # noqa: E402
from bench.lib.table import percentile, print_json, print_table  # noqa: E402
from chatapp import db as database  # noqa: E402
from tests.support.live_server import app_environment  # noqa: E402

FINAL = re.compile(rb'data-status="(\w+)" aria-busy="false"')
WORD = re.compile(rb"word(\d+)")  # token i of the fake server's answers is word<i> (bench/fake_server.py)
THOUGHT = re.compile(rb"thought(\d+)")  # and of its reasoning (--reasoning), thought<i>


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
    thoughts: int = 0                  # reasoning tokens received (--reasoning)
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
                    action, csrf = composer_form(page.text)
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
                        elif (seen := max(map(int, THOUGHT.findall(frame)), default=-1) + 1) > result.thoughts:
                            result.thoughts = seen  # reasoning: counted for the CPU per token only
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
    count = 3 * args.workers  # at once: the workers take their connections as they come
    load = Load(base_url, argparse.Namespace(**{**vars(args), "ramp": 0, "conversations": count, "repeat": 1}))
    load.waves[0].set()
    results = [Result(i, False, f"warm-up {i}") for i in range(count)]
    await asyncio.gather(*(load.conversation(r, asyncio.Semaphore(count), [0]) for r in results))
    failed = [r.reason for r in results if r.outcome != "complete"]
    if failed:
        raise RuntimeError(f"warm-up failed: {failed}")


@contextlib.contextmanager
def profiling(pid: int, output: str | None) -> Iterator[None]:
    """With --profile: py-spy samples the app worker while the block runs (the load phase), and
    writes its stacks in py-spy's raw (collapsed) format to `output` (bench/profile.py reads it).
    Only the thread holding the GIL is sampled: the CPU the app's Python code costs, without
    SQLite's thread waiting on its queue or threads waiting for the GIL."""
    if not output:
        yield
        return
    spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
                            "--rate", "250", "--gil", "--format", "raw", "--output", output],
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


async def run_load(base_url: str, pids: list[int], args: argparse.Namespace, db: BenchDatabase,
                   deadline: float) -> dict:
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
            samples.rss_before_kb = sum(status_kb(pid, "VmRSS") for pid in pids)
            cpu_before, usage_before = [cpu_seconds(pid) for pid in pids], resource.getrusage(resource.RUSAGE_SELF)
            server_before = db.server_cpu()
            figures["fake_before"] = args.fake_stats()
            drops_before = listen_drops()
            health = asyncio.create_task(probe_health(load, samples))
            started = time.perf_counter()
            try:
                with watching(pids, lambda: load.open_streams, samples), profiling(pids[0], args.profile):
                    for wave, event in enumerate(load.waves):
                        event.set()
                        await asyncio.gather(*tasks[wave * n:(wave + 1) * n])
            finally:
                figures["load_seconds"] = time.perf_counter() - started
                figures["worker_cpu"] = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu_before)]
                figures["app_cpu"] = sum(figures["worker_cpu"])
                if server_before is not None:
                    figures["db_server_cpu"] = (db.server_cpu() or 0.0) - server_before
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

async def stored_messages(location: str, ids: list[str], wait: float) -> dict[str, list[tuple]]:
    """Every message by conversation, as (role, content, status), read through the app's own
    database layer (SQLite or PostgreSQL alike), once no answer of `ids` is still `streaming` or
    `wait` seconds have passed. It only reads."""
    deadline = time.monotonic() + wait
    db = await database.connect(location, pool_size=1)
    try:
        while ids:  # the last answers are saved after their streams close: give them a moment
            counted = await db.rows(f"SELECT COUNT(*) FROM messages WHERE status = 'streaming' AND conversation_id "
                                    f"IN ({','.join('?' * len(ids))})", ids)
            if not counted[0][0] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        rows: dict[str, list[tuple]] = {}
        for row in await db.rows("SELECT conversation_id, role, content, status FROM messages ORDER BY id"):
            rows.setdefault(row[0], []).append(tuple(row)[1:])
        return rows
    finally:
        await db.close()


def check_database(location: str, results: list[Result], full_text: str, wait: float = 5.0) -> tuple[int, list[str]]:
    """(conversations checked, problems): run while the app still serves, reading only."""
    ids = [r.conversation_id for r in results if r.conversation_id and r.reason != "not started"]
    posted = [r for r in results if r.conversation_id]
    rows = asyncio.run(stored_messages(location, ids, wait))
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
    tokens = sum(r.tokens + r.thoughts for r in results)
    ms, nan = 1000, float("nan")
    load_seconds = figures.get("load_seconds", nan)
    app_cpu = figures.get("app_cpu", nan)
    per_stream = (samples.rss_at_peak_open_kb - samples.rss_before_kb) / samples.peak_open if samples.peak_open else nan
    server_cpu = figures.get("db_server_cpu")
    summary = {
        "streams": args.conversations, "repeat": args.repeat, "completed": len(complete), "errors": len(errors),
        "ttft_p50_ms": statistics.median(ttft) * ms if ttft else nan, "ttft_p99_ms": percentile(ttft, .99) * ms,
        "gap_p50_ms": percentile(gaps, .5) * ms, "gap_p99_ms": percentile(gaps, .99) * ms,
        "tokens": tokens, "cpu_s": app_cpu, "cpu_ms_per_1000_tokens": app_cpu / tokens * 1000 * ms if tokens else nan,
        "mem_per_stream_kib": per_stream, "wall_s": load_seconds,
        "disconnected": len(left), "lost": len(problems), "healthz_p99_ms": percentile(samples.health, .99) * ms,
        "database": args.database, "workers": args.workers, "floor": args.floor,
        "db_server_cpu_s": server_cpu if server_cpu is not None else nan,
        "db_server_cpu_ms_per_1000_tokens": server_cpu / tokens * 1000 * ms if server_cpu is not None and tokens else nan,
    }
    rows = [
        ("conversations", f"{len(results)}  ({len(results) - sum(r.leaves for r in results)} to finish, "
                          f"{sum(r.leaves for r in results)} to leave after {args.disconnect_after} tokens)"),
        ("answer", f"{args.tokens} tokens" + (f" after {args.reasoning} of reasoning" if args.reasoning else "")
                   + f", {args.delay * ms:g} ms apart; fake server: {args.fake}"),
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
        ("tokens delivered", f"{tokens:,}  ({tokens / load_seconds:,.0f}/s"
                             + (", reasoning included)" if args.reasoning else ")")),
        ("app CPU over the load phase", f"{app_cpu:.1f} s  ({app_cpu / load_seconds:.0%} of one core)"
                                        + (", by worker " + " / ".join(f"{cpu:.1f}" for cpu in figures["worker_cpu"])
                                           if len(figures.get("worker_cpu", [])) > 1 else "")),
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
    if server_cpu is not None:
        rows.append(("PostgreSQL server CPU (not the app's)",
                     f"{server_cpu:.1f} s, {summary['db_server_cpu_ms_per_1000_tokens']:.0f} ms per 1,000 tokens "
                     "(its postmaster and backends)"))
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
    workers = "one Hypercorn worker" if args.workers == 1 else f"{args.workers} Hypercorn workers"
    print_table(f"chatapp load test: {args.conversations} concurrent streams{waves}, {workers}, "
                f"{info['database']}, loopback",
                rows, errors, args.deadline if figures.get("deadline_hit") else None)
    for problem in problems[:10]:
        print(f"  lost: {problem}")
    ok = not errors and not problems and not figures.get("deadline_hit")
    print("PASS: 0 errors, nothing lost" if ok else "FAIL")
    return ok, summary


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
    parser = argparse.ArgumentParser(description="Bounded load test of chatapp on one Hypercorn worker (or --workers).")
    add_stream_options(parser, "conversations", starts="POSTs")
    add_database_option(parser)
    parser.add_argument("--workers", type=int, default=1, help="Hypercorn workers, as WEB_CONCURRENCY (1)")
    parser.add_argument("--reasoning", type=int, default=0,
                        help="reasoning tokens before each answer, as reasoning_content (0)")
    parser.add_argument("--disconnect-share", type=float, default=0.1, help="share of clients that leave (0.1)")
    parser.add_argument("--disconnect-after", type=int, default=50, help="tokens before they leave (50)")
    parser.add_argument("--fake", choices=("process", "thread"), default="process")
    parser.add_argument("--setup-concurrency", type=int, default=50, help="clients setting up at once (50)")
    parser.add_argument("--backlog", type=int, default=None,
                        help="Hypercorn --backlog (default: hypercorn.toml's, as production)")
    parser.add_argument("--fake-backlog", type=int, default=4096, help="the fake server's listen backlog (4096)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra app setting")
    parser.add_argument("--profile", metavar="FILE", help="py-spy the app worker in the load phase, into FILE")
    parser.add_argument("--floor", action="store_true",
                        help="the floor of the stack instead of the app: bench/floor_app.py (no database checked)")
    args = parser.parse_args()
    deadline = time.monotonic() + args.deadline

    limit = raise_fd_limit()
    info = {"loadavg": os.getloadavg()[0]}
    pids: dict[str, int | None] = {}

    timer = start_watchdog("load.py", args.deadline + 30, pids)
    fake = (FakeProcess if args.fake == "process" else FakeThread)(args.tokens, args.delay, args.fake_backlog,
                                                                   args.reasoning)
    pids["fake"] = fake.pid
    args.fake_stats = fake.stats
    server = None
    ok = False
    try:
        with (tempfile.TemporaryDirectory(prefix="chatapp-load-") as tmp,
              bench_database(args.database, Path(tmp)) as db):
            log_path = Path(tmp) / "server.log"
            info["database"] = "the floor (bench/floor_app.py): no app, no database" if args.floor else db.name
            pids["postgresql"] = db.server_pid
            try:
                extra = {"CHATAPP_MAX_STREAMS_PER_SESSION": "100",
                         "CHATAPP_MAX_STREAMS": str(max(5000, args.conversations)),
                         "CHATAPP_MAX_RETRIES": "0"}
                if args.workers > 1:  # as `chatapp` does for WEB_CONCURRENCY > 1: /metrics sums the workers
                    (Path(tmp) / "metrics").mkdir()
                    extra["PROMETHEUS_MULTIPROC_DIR"] = str(Path(tmp) / "metrics")
                extra.update(dict(item.split("=", 1) for item in args.env))
                hypercorn_args = ["--backlog", str(args.backlog)] if args.backlog else []
                environment = db.app_environment(app_environment(fake.base_url, Path(db.location), **extra))
                server = BenchServer(environment, log_path, hypercorn_args, workers=args.workers,
                                     app="bench.floor_app:create_app()" if args.floor else "chatapp:create_app()")
                pids["master"] = server._process.pid
                workers = worker_pids(server._process.pid, args.workers)
                for number, pid in enumerate(workers):
                    pids[f"worker {number + 1}"] = pid
                info["app_fd_limit"] = fd_limit(workers[0])
                print(f"fd limit: this process {limit[0]}/{limit[1]}, app worker {info['app_fd_limit']}; "
                      f"app pid {', '.join(map(str, workers))} on {server.url} ({db.name}); fake server {fake.base_url}",
                      flush=True)
                asyncio.run(warm_up(server.url, args))
                start = f"over {args.ramp:g} s" if args.ramp else "at once"
                waves = f", in {args.repeat} waves of {args.conversations}" if args.repeat > 1 else ""
                print(f"setting up {args.conversations * args.repeat} sessions, then all stream {start}{waves} ...",
                      flush=True)
                figures = asyncio.run(run_load(server.url, workers, args, db, deadline))
                full_text = "".join(reply_tokens(args.tokens, 25))
                checked, problems = (0, []) if args.floor else check_database(db.location, figures["results"], full_text)
                ok, summary = report(args, figures, fake.stats(), checked, problems, info)
                print_app_log(log_path)
                if args.json:
                    print_json(summary)
            finally:
                if server is not None:
                    server.stop()
                    for name, pid in pids.items():
                        if name.startswith("worker"):
                            kill_orphan(pid)
    finally:
        fake.stop()
        timer.cancel()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
