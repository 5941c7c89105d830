"""One bench run as a subprocess, read by another bench: its `JSON {...}` line (bench/lib/table.py's
print_json), within a timeout that kills its whole process group (the script, its app and its fake
server; a PostgreSQL server it started is in a session of its own, and load.py's watchdog, which
fires first, ends it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_json(command: list[str], timeout: float, who: str) -> dict | None:
    """Runs one benchmark (a script and its arguments); its `JSON {...}` line, or None (saying why
    on stderr, as `who`, where the progress goes too)."""
    started = time.monotonic()
    print(f"{who}: {' '.join(command)} ...", end=" ", file=sys.stderr, flush=True)
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
