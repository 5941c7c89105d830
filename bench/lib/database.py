"""The database a bench runs the app on: SQLite (a fresh file, the default) or PostgreSQL (a
throwaway server of its own, tests/support/postgres.py, and a fresh database on it, stopped and
removed afterwards), and the CPU that server spends, which is not the app's."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.lib.procfs import tree_cpu_seconds
from tests.support.postgres import PostgresServer

KINDS = ("sqlite", "postgresql")
NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def add_database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database", choices=KINDS, default="sqlite",
                        help="the app's database: a fresh SQLite file, or a throwaway PostgreSQL server (sqlite)")


@dataclass
class BenchDatabase:
    kind: str
    location: str          # a SQLite file's path, or a PostgreSQL URL
    server_pid: int | None = None

    @property
    def name(self) -> str:
        return NAMES[self.kind]

    def app_environment(self, environment: dict[str, str]) -> dict[str, str]:
        """The app's settings (tests/support/live_server.py's app_environment) on this database."""
        if self.kind == "sqlite":
            return {**environment, "CHATAPP_DATABASE": self.location}
        rest = {name: value for name, value in environment.items() if name != "CHATAPP_DATABASE"}
        return {**rest, "CHATAPP_DATABASE_URL": self.location}

    def server_cpu(self) -> float | None:
        """CPU seconds of the PostgreSQL server so far (its postmaster and every backend, those
        that ended included); None on SQLite, which runs inside the app."""
        return tree_cpu_seconds(self.server_pid) if self.server_pid else None


@contextlib.contextmanager
def bench_database(kind: str, directory: Path) -> Iterator[BenchDatabase]:
    """A fresh database of `kind` for one run: a file in `directory`, or a database on a server
    started for the run and stopped (its directory removed) when the block ends."""
    if kind == "sqlite":
        yield BenchDatabase(kind, str(directory / "bench.db"))
        return
    with PostgresServer() as server:
        yield BenchDatabase(kind, server.create_database("bench"), server.pid)
