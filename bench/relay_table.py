"""The relay table: the app against the official SDK calling the fake server directly, 1 to 1,000 streams.

    python bench/relay_table.py [1 50 200 1000] [--repeat 40] [--timeout 180] [--budget 720] [--workers 1]
    python bench/relay_table.py 50 --databases sqlite,postgresql [--repeat 3]

For each N (one after another, never two at once: the figures are CPU figures), runs as subprocesses:
  - bench/load.py N --json --disconnect-share 0: N conversations through ONE Hypercorn worker of
    the app, every one to the end (so the figures compare like for like with the SDK's);
  - bench/direct.py N --json --transport aiohttp: N streams from the SDK straight to the fake server,
    on the transport the app uses, the physical limit the app is measured against;
  - bench/direct.py N --json --transport httpx: the same on the SDK's default transport, a second
    reference.
All against the fake server's default answer: 200 tokens, 10 ms apart. Each for two start patterns:
  (a) burst: all N start at once (--ramp 0);
  (b) ramp: the starts spread over 2 s, the length of one answer (--ramp 2), so about N streams are
      open at once in steady state, rather than N requests arriving in the same millisecond.
At 1 stream the two are the same: it runs once, REPEAT streams one after another (--repeat), pooled
for a stable p50, and its row is in both tables.

The SDK-direct client is a limit only while it keeps up: it reads through chat.completions.create,
which builds the SDK's objects for every chunk (a step the app skips, see chatapp/llm/wire.py), and
spends more CPU a token than the app does (the table shows how much). From a few hundred streams
on, its one process runs out of CPU before the app does, its first tokens come late, and "added by
the app" can go below zero.

Prints, per pattern, a Markdown table (the SDK's columns are the aiohttp run's; "added by the app"
is the app's percentile minus the SDK's, the streams not being paired), the httpx reference
table, then a line per bar with its figure: PASS, FAIL, or n/a when that run is missing (for
the two bars now measured elsewhere, the figure alone, saying where). Progress goes to stderr. Every run is bounded: each its own deadline (the scripts' --deadline, and their
watchdogs), a timeout here that kills its process group, and a total budget past which the runs
left are skipped (shown as n/a).

With `--workers 2` the app runs on two Hypercorn workers (as WEB_CONCURRENCY=2 runs it; on SQLite,
the default), each of which should have a core: the way the bar on time-to-first-token added at 200
streams is measured (one worker cannot meet it). The httpx reference is left out then (it does not
depend on the app). On a machine with two cores the load client and the fake server share them
with the workers, so the figure is an upper bound there.

With `--databases sqlite,postgresql`, another table: the app alone (bench/load.py N --disconnect-share 0
--database D, --repeat waves of N pooled, one worker) on each database in turn, its CPU per 1,000
tokens side by side with the ratio to the first, against the bar (≤ 1.3× SQLite's); the PostgreSQL
server's own CPU beside it (not the app's, so not in the ratio); and every check load.py makes (0
errors, every question and answer stored once, read back from that database).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lib.database import NAMES  # noqa: E402
from bench.lib.runs import run_json  # noqa: E402

PATTERNS = [("Burst: all N streams start at once (--ramp 0)", 0.0),
            ("Ramp: the starts spread over 2 s, the length of one answer (--ramp 2)", 2.0)]
NEGATIVE = " — below zero: the SDK-direct client was the slower, so it was no limit to measure against"
RUNS = {  # name: the command, less N and the per-pattern options
    "app": ["bench/load.py", "--disconnect-share", "0"],
    "aiohttp": ["bench/direct.py", "--transport", "aiohttp"],
    "httpx": ["bench/direct.py", "--transport", "httpx"],
}


def run(command: list[str], timeout: float) -> dict | None:
    """Runs one benchmark; its `JSON {...}` line, or None (saying why on stderr)."""
    return run_json(command, timeout, "relay_table")


def fmt(value: float | None, places: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{places}f}"


def get(figures: dict | None, key: str) -> float | None:
    return figures.get(key) if figures else None


def added(runs: dict[str, dict | None], key: str) -> float | None:
    """The app's figure minus the SDK's (aiohttp), or None."""
    app, sdk = get(runs.get("app"), key), get(runs.get("aiohttp"), key)
    return None if app is None or sdk is None else app - sdk


def table(rows: dict[int, dict[str, dict | None]]) -> list[str]:
    lines = ["| streams | app completed / errors | app TTFT p50 / p99 ms | SDK direct TTFT p50 / p99 ms "
             "| **added by the app p50 / p99 ms** | app gap p99 ms | SDK gap p99 ms "
             "| app CPU ms / 1,000 tokens | SDK CPU ms / 1,000 tokens | app memory / stream KiB |",
             "|" + "---:|" * 10]
    for n, runs in rows.items():
        app, sdk = runs["app"], runs["aiohttp"]
        done = f"{app['completed']} / {app['errors']}" if app else "n/a"
        if app and app.get("lost"):
            done += f" ({app['lost']} lost)"
        lines.append(
            f"| {n:,} | {done} | {fmt(get(app, 'ttft_p50_ms'))} / {fmt(get(app, 'ttft_p99_ms'))} "
            f"| {fmt(get(sdk, 'ttft_p50_ms'))} / {fmt(get(sdk, 'ttft_p99_ms'))} "
            f"| **{fmt(added(runs, 'ttft_p50_ms'), 1)} / {fmt(added(runs, 'ttft_p99_ms'), 1)}** "
            f"| {fmt(get(app, 'gap_p99_ms'))} | {fmt(get(sdk, 'gap_p99_ms'))} "
            f"| {fmt(get(app, 'cpu_ms_per_1000_tokens'))} | {fmt(get(sdk, 'cpu_ms_per_1000_tokens'))} "
            f"| {fmt(get(app, 'mem_per_stream_kib'))} |")
    return lines


def reference(rows: dict[int, dict[str, dict | None]]) -> list[str]:
    lines = ["| streams | completed / errors | TTFT p50 / p99 ms | gap p99 ms | CPU ms / 1,000 tokens "
             "| memory / stream KiB |", "|" + "---:|" * 6]
    for n, runs in rows.items():
        sdk = runs["httpx"]
        done = f"{sdk['completed']} / {sdk['errors']}" if sdk else "n/a"
        lines.append(f"| {n:,} | {done} | {fmt(get(sdk, 'ttft_p50_ms'))} / {fmt(get(sdk, 'ttft_p99_ms'))} "
                     f"| {fmt(get(sdk, 'gap_p99_ms'))} | {fmt(get(sdk, 'cpu_ms_per_1000_tokens'))} "
                     f"| {fmt(get(sdk, 'mem_per_stream_kib'))} |")
    return lines


def bars(rows: dict[int, dict[str, dict | None]], workers: int = 1) -> list[str]:
    """One line per bar of the issue: PASS or FAIL with the figure, or n/a without that run. The two
    bars one worker cannot meet are measured elsewhere now: their one-worker figures are shown as
    reported, with where their bar is measured."""
    def app(n: int, key: str) -> float | None:
        return get(rows.get(n, {}).get("app"), key)

    big = rows.get(1000, {}).get("app")
    checks: list[tuple[str, float | None, float, str, int, str | None]]
    if workers > 1:  # what, the figure (None: no run), the bar (at most), unit, decimals, measured elsewhere
        checks = [(f"TTFT added by the app at 200 streams, p99, {workers} workers",
                   added(rows.get(200, {}), "ttft_p99_ms"), 25, " ms", 1, None)]
    else:
        checks = [
            ("TTFT added by the app at 1 stream, p50", added(rows.get(1, {}), "ttft_p50_ms"), 3, " ms", 1, None),
            ("TTFT added by the app at 200 streams, p99, one worker", added(rows.get(200, {}), "ttft_p99_ms"), 25,
             " ms", 1, "measured with two workers: bench/relay_table.py 200 --workers 2"),
            ("errors and lost answers at 1,000 streams", big["errors"] + big["lost"] if big else None, 0, "", 0, None),
            ("app memory per open stream at 1,000 streams", app(1000, "mem_per_stream_kib"), 64, " KiB", 0,
             "the stack's floor + 16 KiB: bench/memory_floor.py 500 --app"),
            ("app CPU per 1,000 tokens at 50 streams", app(50, "cpu_ms_per_1000_tokens"), 100, " ms", 0, None),
        ]
    lines = []
    for what, figure, most, unit, places, elsewhere in checks:
        shown = "no run" if figure is None else fmt(figure, places) + unit
        if elsewhere:
            lines.append(f"- reported: {what}: {shown} (its bar is now {elsewhere})")
            continue
        # Below zero, the reference ran out of CPU first: nothing was measured, so nothing passes.
        verdict = "n/a" if figure is None or figure < 0 else "PASS" if figure <= most else "FAIL"
        lines.append(f"- {verdict}: {what}: {shown} "
                     f"(bar: ≤ {most}{unit})" + (NEGATIVE if figure is not None and figure < 0 else ""))
    return lines


def databases(n: int, kinds: list[str], repeat: int, timeout: float) -> list[str]:
    """The app on each database in turn at N streams: a Markdown table, the ratio of CPU per token
    to the first database's, and the bar (≤ 1.3×)."""
    runs = {kind: run(["bench/load.py", str(n), "--disconnect-share", "0", "--database", kind,
                       "--repeat", str(repeat), "--deadline", f"{max(10.0, min(120.0, timeout - 45)):.0f}", "--json"],
                      timeout) for kind in kinds}
    base = get(runs[kinds[0]], "cpu_ms_per_1000_tokens")
    lines = [f"| database | completed / errors | every question and answer stored once | "
             f"**app CPU ms / 1,000 tokens** | × {NAMES[kinds[0]]} | database server CPU ms / 1,000 tokens "
             "| TTFT p50 / p99 ms | app memory / stream KiB |", "|---|" + "---:|" * 7]
    for kind, figures in runs.items():
        cpu = get(figures, "cpu_ms_per_1000_tokens")
        server = get(figures, "db_server_cpu_ms_per_1000_tokens")
        lost = get(figures, "lost")
        lines.append(
            f"| {NAMES[kind]} | {fmt(get(figures, 'completed'))} / {fmt(get(figures, 'errors'))} "
            f"| {'n/a' if lost is None else 'yes' if not lost else f'NO: {lost:.0f} lost'} "
            f"| **{fmt(cpu)}** | {fmt(cpu / base if cpu is not None and base else None, 2)} "
            f"| {'in the app' if kind == 'sqlite' else fmt(server)} "
            f"| {fmt(get(figures, 'ttft_p50_ms'))} / {fmt(get(figures, 'ttft_p99_ms'))} "
            f"| {fmt(get(figures, 'mem_per_stream_kib'))} |")
    lines.append("")
    for kind in kinds[1:]:
        cpu = get(runs[kind], "cpu_ms_per_1000_tokens")
        ratio = cpu / base if cpu is not None and base else None
        verdict = "n/a" if ratio is None else "PASS" if ratio <= 1.3 else "FAIL"
        lines.append(f"- {verdict}: app CPU per 1,000 tokens at {n} streams, {NAMES[kind]} / {NAMES[kinds[0]]}: "
                     f"{fmt(ratio, 2)}× ({fmt(cpu)} / {fmt(base)} ms) (bar: ≤ 1.3×)")
    clean = all(figures and not figures["errors"] and not figures["lost"] for figures in runs.values())
    lines.append(f"- {'PASS' if clean else 'FAIL'}: 0 errors and every question and answer stored exactly once, "
                 "on each database")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description="The app against the SDK straight to the fake server.")
    parser.add_argument("streams", type=int, nargs="*", default=[1, 50, 200, 1000])
    parser.add_argument("--repeat", type=int, default=None,
                        help="streams one after another at N = 1 (40); with --databases, waves of N pooled (3)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds for one run (180)")
    parser.add_argument("--budget", type=float, default=720.0, help="seconds for them all (720)")
    parser.add_argument("--workers", type=int, default=1, help="the app's Hypercorn workers (1)")
    parser.add_argument("--databases", help="instead: the app on each of these databases, compared "
                                            "(sqlite,postgresql)")
    args = parser.parse_args()
    started = time.monotonic()
    if args.databases:
        kinds = args.databases.split(",")
        for n in args.streams:
            print(f"The app on one Hypercorn worker, {n} streams at once, {args.repeat or 3} waves of them one after "
                  "another, pooled; every stream to the end (200 tokens, 10 ms apart). App CPU: the worker's; the "
                  "database server's CPU is its own column (PostgreSQL's postmaster and backends; SQLite runs "
                  "inside the app). The database checked afterwards through the app's own chatapp.db.\n")
            print("\n".join(databases(n, kinds, args.repeat or 3, args.timeout)))
        print(f"\n{time.monotonic() - started:.0f} s")
        return
    args.repeat = args.repeat or 40
    runs_here = {name: command for name, command in RUNS.items() if args.workers == 1 or name != "httpx"}
    end = started + args.budget
    results: list[dict[int, dict[str, dict | None]]] = [{} for _ in PATTERNS]  # per pattern: N: run: figures
    runs = 0
    for n in args.streams:
        for index, (_, ramp) in enumerate(PATTERNS):
            if n == 1 and index:
                results[index][n] = results[0][n]  # one stream: no burst, no ramp
                continue
            results[index][n] = {}
            for name, command in runs_here.items():
                left = end - time.monotonic()
                if left < 30:
                    print(f"relay_table: budget spent, {name} at {n} skipped", file=sys.stderr, flush=True)
                    results[index][n][name] = None
                    continue
                timeout = min(args.timeout, left)
                options = ["--repeat", str(args.repeat)] if n == 1 else ["--ramp", f"{ramp:g}"]
                # the script's own deadline passes first, so it reports what finished (its watchdog: +30 s)
                options += ["--deadline", f"{max(10.0, min(120.0, timeout - 45)):.0f}", "--json"]
                if name == "app" and args.workers > 1:
                    options += ["--workers", str(args.workers)]
                results[index][n][name] = run([command[0], str(n), *command[1:], *options], timeout)
                runs += 1
    workers = "one Hypercorn worker" if args.workers == 1 else f"{args.workers} Hypercorn workers (SQLite)"
    print(f"Against the fake server (200 tokens, 10 ms apart), the app on {workers}. SDK direct: the "
          "official openai SDK straight to the fake server, on its aiohttp transport, as the app uses it. Added by "
          "the app: the app's percentile minus the SDK's; below zero, the SDK-direct client, which builds the "
          "SDK's objects for every chunk (the app does not), ran out of CPU first. At 1 stream, "
          f"{args.repeat} streams one after another, pooled. Every stream runs to the end.")
    for (title, _), rows in zip(PATTERNS, results):
        print(f"\n### {title}\n")
        print("\n".join(table(rows)))
        if "httpx" in runs_here:
            print("\nSDK direct on httpx, its default transport, for reference:\n")
            print("\n".join(reference(rows)))
        print("\nBars:\n")
        print("\n".join(bars(rows, args.workers)))
    print(f"\n{runs} runs in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
