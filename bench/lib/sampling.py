"""A thread that samples a process's (or a few processes', summed) memory, open files and the open-stream count while a load runs,
keeping the peaks (and the memory at peak concurrency, for the cost of one open stream)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from bench.lib.procfs import open_fds, status_kb


@dataclass
class Samples:
    rss_before_kb: int = 0
    peak_open: int = 0
    rss_at_peak_open_kb: int = 0
    peak_rss_kb: int = 0
    peak_fds: int = 0
    health: list[float] = field(default_factory=list)
    health_failures: int = 0


def watch(pids: list[int], open_streams: Callable[[], int], samples: Samples, stop: threading.Event) -> None:
    """Samples the pids' RSS and the open-stream count every 0.1 s, their open fds every 0.5 s, until
    stop; RSS and fds are summed over the pids (the app's workers).

    Run in a thread (see watching), not as a task on the client's event loop: once the client is
    busy, one turn of its loop can take seconds (bench/direct.py's SDK parses every buffered chunk
    before it yields), and a sampler on the loop misses the peak. A thread gets the GIL back within
    the switch interval."""
    ticks = 0
    while True:
        try:
            rss = sum(status_kb(pid, "VmRSS") for pid in pids)
        except OSError:
            return
        now_open = open_streams()
        samples.peak_rss_kb = max(samples.peak_rss_kb, rss)
        if now_open > samples.peak_open:
            samples.peak_open, samples.rss_at_peak_open_kb = now_open, rss
        elif now_open == samples.peak_open and now_open:
            samples.rss_at_peak_open_kb = max(samples.rss_at_peak_open_kb, rss)
        if ticks % 5 == 0:
            samples.peak_fds = max(samples.peak_fds, sum(open_fds(pid) for pid in pids))
        ticks += 1
        if stop.wait(0.1):
            return


@contextmanager
def watching(pid: int | list[int], open_streams: Callable[[], int], samples: Samples) -> Iterator[None]:
    """watch() in a thread for the duration of the block, on one pid or a few."""
    stop = threading.Event()
    pids = pid if isinstance(pid, list) else [pid]
    thread = threading.Thread(target=watch, args=(pids, open_streams, samples, stop), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
