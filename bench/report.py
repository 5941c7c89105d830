"""Run every benchmark (bounded, loopback only) and write their figures to docs/benchmarks.md.

    python bench/report.py          (or: make bench)
"""

from __future__ import annotations

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
    ("A 1,000-message conversation", ["bench/long_conversation.py", "50"]),
    ("Stop click to the upstream connection closing", ["bench/stop.py", "10"]),
    ("Hostile inputs", ["bench/hostile_report.py"]),
    ("Relay: 1 to 1,000 concurrent streams on one worker, against the SDK calling the fake server directly",
     ["bench/relay_table.py"]),
    ("Reading the model's stream: CPU per token by HTTP stack", ["bench/read_floor.py", "50"]),
    ("Memory per open stream before the app does anything", ["bench/memory_floor.py", "500"]),
    ("Profile: where the app's CPU goes at 50 streams", ["bench/profile.py", "50"]),
    ("Memory kept for strangers' static URLs (bar: < 16 MB for 10,000)", ["bench/static_memory.py", "10000"]),
    ("/healthz while another client loops a 400-message export", ["bench/loop_latency.py", "300"]),
    ("A reasoning model thinking for 40 s, in Chromium, with and without JavaScript", ["bench/reasoning.py", "40"]),
    ("50 streams that think first: 200 reasoning tokens, then 200 of answer",
     ["bench/load.py", "50", "--disconnect-share", "0", "--reasoning", "200"]),
]
MARKDOWN = {"bench/relay_table.py"}  # prints Markdown (tables) itself: not fenced as text


def main() -> None:
    sections = []
    for title, command in BENCHES:
        started = time.monotonic()
        result = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=900)
        lines = [line for line in result.stdout.splitlines() if " INFO " not in line and " WARNING " not in line]
        status = "" if result.returncode == 0 else f" (exit status {result.returncode})"
        body = "\n".join(lines).strip()
        sections.append(f"## {title}\n\n`python {' '.join(command)}` — {time.monotonic() - started:.0f} s{status}\n\n"
                        + (body + "\n" if command[0] in MARKDOWN else f"```\n{body}\n```\n"))
        print(f"{title}: done{status}")
    header = (f"# Benchmarks\n\nMade by `make bench` (bench/report.py) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
              f"Python {platform.python_version()}, {platform.machine()}, "
              f"{len(__import__('os').sched_getaffinity(0))} CPUs. Everything runs on 127.0.0.1 and stops by itself.\n")
    (ROOT / "docs" / "benchmarks.md").write_text(header + "\n" + "\n".join(sections))
    print("wrote docs/benchmarks.md")


if __name__ == "__main__":
    main()
