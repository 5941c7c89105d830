"""Run every benchmark (bounded, loopback only) and write their figures to docs/benchmarks.md.

    python bench/report.py          (or: make bench)
    python bench/report.py --only PostgreSQL "Two workers"

With --only, just the sections whose titles contain one of the words given (case-insensitive),
printed here; docs/benchmarks.md is left as it is.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BENCHES = [
    ("Rendering: streamed token by token vs once (bar: ≤ 2×)", ["bench/render.py"]),
    ("Time to first token added by the app; first-load weight", ["bench/relay.py", "50"]),
    ("A 1,000-message conversation on SQLite", ["bench/long_conversation.py", "50"]),
    ("A 1,000-message conversation on PostgreSQL",
     ["bench/long_conversation.py", "50", "--database", "postgresql"]),
    ("50 streams, SQLite vs PostgreSQL: app CPU per 1,000 tokens (bar: PostgreSQL ≤ 1.3× SQLite)",
     ["bench/relay_table.py", "50", "--databases", "sqlite,postgresql"]),
    ("Stop click to the upstream connection closing", ["bench/stop.py", "10"]),
    ("Hostile inputs", ["bench/hostile_report.py"]),
    ("Relay: 1 to 1,000 concurrent streams on one worker, against the SDK calling the fake server directly",
     ["bench/relay_table.py"]),
    ("Two workers, each with a core: time to first token added by the app at 200 streams (bar: p99 ≤ 25 ms)",
     ["bench/relay_table.py", "200", "--workers", "2"]),
    ("Two workers, 200 starts at once: the app beside the floor of the stack (bench/floor_app.py); "
     "time to first token and CPU per stream start (bar proposed: CPU per start ≤ the floor's + 3 ms)",
     ["bench/ttft_floor.py", "200"]),
    ("Reading the model's stream: CPU per token by HTTP stack", ["bench/read_floor.py", "50"]),
    ("Memory per open stream: the floor of the stack, and the app beside it (bar: ≤ the floor + 16 KiB)",
     ["bench/memory_floor.py", "500", "--app"]),
    ("What the app holds per open stream, by who allocated it (tracemalloc, 100 → 500 open streams)",
     ["bench/stream_memory.py", "100", "500"]),
    ("Profile: where the app's CPU goes at 50 streams", ["bench/profile.py", "50"]),
    ("Memory kept for strangers' static URLs (bar: < 16 MB for 10,000)", ["bench/static_memory.py", "10000"]),
    ("/healthz while another client loops a 400-message export", ["bench/loop_latency.py", "300"]),
    ("A reasoning model thinking for 40 s, in Chromium, with and without JavaScript", ["bench/reasoning.py", "40"]),
    ("50 streams that think first: 200 reasoning tokens, then 200 of answer",
     ["bench/load.py", "50", "--disconnect-share", "0", "--reasoning", "200"]),
    ("An admin disables a person mid-answer: until their answer ends (bar: ≤ 1 s)", ["bench/disable.py", "20"]),
    ("Sign-in: an unknown name against a wrong password (bar: medians within 20 % over 50 tries)",
     ["bench/sign_in_timing.py", "50"]),
    ("Three replicas behind nginx, 300 conversations, one replica killed mid-run", ["bench/replicas.py", "300"]),
]
MARKDOWN = {"bench/relay_table.py", "bench/ttft_floor.py"}  # prints Markdown (tables) itself: not fenced as text


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the benchmarks and write docs/benchmarks.md.")
    parser.add_argument("--only", nargs="+", metavar="WORD",
                        help="only the sections whose titles contain one of these, printed, not written")
    parser.add_argument("--replace", action="store_true",
                        help="with --only: put those sections, run again, in place of theirs in docs/benchmarks.md "
                             "(each says when it ran), the others kept as make bench wrote them")
    args = parser.parse_args()
    chosen = [(title, command) for title, command in BENCHES
              if not args.only or any(word.lower() in title.lower() for word in args.only)]
    sections = []
    for title, command in chosen:
        started = time.monotonic()
        result = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=900)
        lines = [line for line in result.stdout.splitlines() if " INFO " not in line and " WARNING " not in line]
        status = "" if result.returncode == 0 else f" (exit status {result.returncode})"
        if args.replace:
            status += f", run again on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        body = "\n".join(lines).strip()
        sections.append(f"## {title}\n\n`python {' '.join(command)}` — {time.monotonic() - started:.0f} s{status}\n\n"
                        + (body + "\n" if command[0] in MARKDOWN else f"```\n{body}\n```\n"))
        print(f"{title}: done{status}", flush=True)
    if args.only and args.replace:
        _replace(sections)
        return
    if args.only:
        print("\n" + "\n".join(sections))
        return
    header = (f"# Benchmarks\n\nMade by `make bench` (bench/report.py) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
              f"Python {platform.python_version()}, {platform.machine()}, "
              f"{len(__import__('os').sched_getaffinity(0))} CPUs. Everything runs on 127.0.0.1 and stops by itself.\n")
    (ROOT / "docs" / "benchmarks.md").write_text(header + "\n" + "\n".join(sections))
    print("wrote docs/benchmarks.md")


def _replace(sections: list[str]) -> None:
    """Each section in place of the one with its title in docs/benchmarks.md."""
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text()
    for section in sections:
        title = section.split("\n", 1)[0]
        start = text.index(title + "\n")
        end = text.find("\n## ", start + len(title))
        text = text[:start] + section + ("" if end < 0 else text[end:])
    path.write_text(text)
    print(f"replaced {len(sections)} section(s) in docs/benchmarks.md")


if __name__ == "__main__":
    main()
