"""The processes a bench starts and stops: the open-file limit they inherit, the app under Hypercorn
and its worker, and the last resorts (killing by pid, the watchdog)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path

from tests.support.live_server import ROOT as APP_ROOT, LiveServer, clean_environment, free_port


def raise_fd_limit() -> tuple[int, int]:
    """This process's open-file limit raised to the hard limit: call it before starting any child,
    so the app and the fake server inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


APP = "chatapp:create_app()"


class BenchServer(LiveServer):
    """LiveServer with `workers` workers, extra Hypercorn arguments, another app than chatapp if
    asked (bench/floor_app.py), and the connection settings production serves with (below)."""

    def __init__(self, env: dict[str, str], log_path: Path, hypercorn_args: list[str], workers: int = 1,
                 app: str = APP) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
             *shipped_connection_settings(), *hypercorn_args, app],
            cwd=APP_ROOT, env={**clean_environment(), **env}, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._wait_until_up()


def shipped_connection_settings() -> list[str]:
    """Hypercorn's listen backlog and idle keep-alive as hypercorn.toml sets them for production
    (arguments given after these override them). Hypercorn's own defaults, 100 connections and 5 s,
    measure another server: clients set up more than 5 s before a burst find their connections
    closed, and all reconnect at once into a queue of 100 (errors and listen-queue overflows)."""
    shipped = tomllib.loads((APP_ROOT / "hypercorn.toml").read_text())
    return ["--backlog", str(shipped["backlog"]), "--keep-alive", str(shipped["keep_alive_timeout"])]


def worker_pid(master: int, timeout: float = 10.0) -> int:
    """The Hypercorn worker: the master's child running multiprocessing's spawn (not its resource tracker)."""
    return worker_pids(master, 1, timeout)[0]


def worker_pids(master: int, count: int, timeout: float = 10.0) -> list[int]:
    """The master's first `count` Hypercorn workers (multiprocessing's spawn children, not its
    resource tracker), waiting up to `timeout` for them all; fewer if they did not all start."""
    deadline = time.monotonic() + timeout
    found: list[int] = []
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        except OSError:
            children = []
        found = []
        for child in children:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"resource_tracker" not in cmdline:
                found.append(int(child))
        if len(found) >= count:
            return found[:count]
        time.sleep(0.05)
    return found or [master]  # --workers 0 style: the app runs in the master itself


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


def start_watchdog(bench: str, after: float, pids: Mapping[str, int | None]) -> threading.Timer:
    """The last resort, so that nothing outlives a bench's deadline by much: `after` seconds from now,
    kills every pid in `pids` (read then, so the caller may add to it as it starts things) and exits.
    Cancel the timer it returns when the bench is done."""

    def fire() -> None:
        print(f"{bench}: watchdog: still running {after:g} s after start; killing {', '.join(pids) or 'nothing'}",
              file=sys.stderr, flush=True)
        for pid in pids.values():
            kill_quietly(pid)
        os._exit(3)

    timer = threading.Timer(after, fire)
    timer.daemon = True
    timer.start()
    return timer
