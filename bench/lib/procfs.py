"""A process's figures as Linux keeps them in /proc: CPU time, memory, open files, and the
connections refused because a listen queue was full."""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


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


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children: those alive (read one by one) and those that
    ended and were waited for (the parent's cutime and cstime). A PostgreSQL server's CPU is its
    postmaster's tree: a backend per connection."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / CLK_TCK
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        try:
            total += tree_cpu_seconds(int(child))
        except OSError:
            pass  # it ended between the two reads
    return total
