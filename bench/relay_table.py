"""The relay table: the app against the official SDK calling the fake server directly, 1 to 1,000 streams.

    python bench/relay_table.py [1 50 200 1000] [--repeat 40] [--timeout 180] [--budget 720]

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
table, then a line per bar with its figure: PASS, FAIL, or n/a when that run is missing. Progress
goes to stderr. Every run is bounded: each its own deadline (the scripts' --deadline, and their
watchdogs), a timeout here that kills its process group, and a total budget past which the runs
left are skipped (shown as n/a).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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
    started = time.monotonic()
    print(f"relay_table: {' '.join(command)} ...", end=" ", file=sys.stderr, flush=True)
    process = subprocess.Popen([sys.executable, *command], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own group: the script, its app and its fake server
        process.communicate()
        print(f"killed after {timeout:.0f} s", file=sys.stderr, flush=True)
        return None
    found = [line for line in out.splitlines() if line.startswith("JSON ")]
    print(f"{time.monotonic() - started:.0f} s, exit status {process.returncode}", file=sys.stderr, flush=True)
    if not found:
        print("\n".join(out.splitlines()[-5:]), file=sys.stderr, flush=True)
    return json.loads(found[-1].removeprefix("JSON ")) if found else None


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


def bars(rows: dict[int, dict[str, dict | None]]) -> list[str]:
    """One line per bar of the issue: PASS or FAIL with the figure, or n/a without that run."""
    def app(n: int, key: str) -> float | None:
        return get(rows.get(n, {}).get("app"), key)

    big = rows.get(1000, {}).get("app")
    checks = [  # what, the figure (None: no run), the bar (at most), unit, decimals
        ("TTFT added by the app at 1 stream, p50", added(rows.get(1, {}), "ttft_p50_ms"), 3, " ms", 1),
        ("TTFT added by the app at 200 streams, p99", added(rows.get(200, {}), "ttft_p99_ms"), 25, " ms", 1),
        ("errors and lost answers at 1,000 streams", big["errors"] + big["lost"] if big else None, 0, "", 0),
        ("app memory per open stream at 1,000 streams", app(1000, "mem_per_stream_kib"), 64, " KiB", 0),
        ("app CPU per 1,000 tokens at 50 streams", app(50, "cpu_ms_per_1000_tokens"), 100, " ms", 0),
    ]
    return [f"- {'n/a' if figure is None else 'PASS' if figure <= most else 'FAIL'}: {what}: "
            f"{'no run' if figure is None else fmt(figure, places) + unit} (bar: ≤ {most}{unit})"
            + (NEGATIVE if figure is not None and figure < 0 else "")
            for what, figure, most, unit, places in checks]


def main() -> None:
    parser = argparse.ArgumentParser(description="The app against the SDK straight to the fake server.")
    parser.add_argument("streams", type=int, nargs="*", default=[1, 50, 200, 1000])
    parser.add_argument("--repeat", type=int, default=40, help="streams one after another at N = 1 (40)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds for one run (180)")
    parser.add_argument("--budget", type=float, default=720.0, help="seconds for them all (720)")
    args = parser.parse_args()
    started = time.monotonic()
    end = started + args.budget
    results: list[dict[int, dict[str, dict | None]]] = [{} for _ in PATTERNS]  # per pattern: N: run: figures
    runs = 0
    for n in args.streams:
        for index, (_, ramp) in enumerate(PATTERNS):
            if n == 1 and index:
                results[index][n] = results[0][n]  # one stream: no burst, no ramp
                continue
            results[index][n] = {}
            for name, command in RUNS.items():
                left = end - time.monotonic()
                if left < 30:
                    print(f"relay_table: budget spent, {name} at {n} skipped", file=sys.stderr, flush=True)
                    results[index][n][name] = None
                    continue
                timeout = min(args.timeout, left)
                options = ["--repeat", str(args.repeat)] if n == 1 else ["--ramp", f"{ramp:g}"]
                # the script's own deadline passes first, so it reports what finished (its watchdog: +30 s)
                options += ["--deadline", f"{max(10.0, min(120.0, timeout - 45)):.0f}", "--json"]
                results[index][n][name] = run([command[0], str(n), *command[1:], *options], timeout)
                runs += 1
    print("Against the fake server (200 tokens, 10 ms apart), the app on one Hypercorn worker. SDK direct: the "
          "official openai SDK straight to the fake server, on its aiohttp transport, as the app uses it. Added by "
          "the app: the app's percentile minus the SDK's; below zero, the SDK-direct client, which builds the "
          "SDK's objects for every chunk (the app does not), ran out of CPU first. At 1 stream, "
          f"{args.repeat} streams one after another, pooled. Every stream runs to the end.")
    for (title, _), rows in zip(PATTERNS, results):
        print(f"\n### {title}\n")
        print("\n".join(table(rows)))
        print("\nSDK direct on httpx, its default transport, for reference:\n")
        print("\n".join(reference(rows)))
        print("\nBars:\n")
        print("\n".join(bars(rows)))
    print(f"\n{runs} runs in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
