"""The database under the store: SQLite, the embedded default (a file, no server), or PostgreSQL,
for a team that runs chatapp on several hosts. Chosen once, by the configured location."""

from __future__ import annotations

from pathlib import Path

from .base import (Database, Many, MissingParent, Retryable, Row, Statement, Transaction, as_dict, first, redacted,
                   run_transaction)

__all__ = ["Database", "Many", "MissingParent", "Retryable", "Row", "Statement", "Transaction", "as_dict", "connect", "first",
           "is_postgresql", "redacted", "run_transaction", "sqlite_path"]

POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")


def is_postgresql(location: str) -> bool:
    return location.startswith(POSTGRESQL_SCHEMES)


def sqlite_path(location: str) -> Path:
    """The file of a SQLite location: a path, or a `sqlite:` URL (sqlite:///abs/path, sqlite:rel)."""
    if location.startswith("sqlite:"):
        rest = location.removeprefix("sqlite:")
        return Path(rest[2:] if rest.startswith("///") else rest.removeprefix("//"))
    return Path(location)


async def connect(location: str | Path, *, pool_size: int = 10) -> Database:
    """The database at `location`, opened (not migrated): a PostgreSQL URL, or a SQLite file."""
    location = str(location)
    if is_postgresql(location):
        from .postgresql import PostgreSQL  # only a deployment that uses it loads its driver

        return await PostgreSQL.open(location, pool_size=pool_size)
    from .sqlite import SQLite

    return await SQLite.open(sqlite_path(location))
