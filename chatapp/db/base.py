"""What the store needs of a database, whichever it is: statements with `?` placeholders, rows
that read by name or by position, and transactions written once for both.

A transaction is a generator: it yields each statement and is sent back that statement's rows, so
that Python can decide between statements (a count read, then an insert or not) while the database
runs the whole body as one transaction. SQLite runs it in one trip to its thread; PostgreSQL on
one pooled connection.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")


class Row(Protocol):
    """A row, as sqlite3.Row and asyncpg.Record both are: `row["name"]`, `row[0]`, `dict(row)`
    (through keys()), and unpacking."""

    def __getitem__(self, key: str | int, /) -> Any: ...
    def keys(self) -> Iterable[str]: ...
    def __iter__(self) -> Any: ...
    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Statement:
    """One statement of a transaction; its rows are sent back into the body."""

    sql: str
    parameters: Sequence[Any] = ()


@dataclass(frozen=True)
class Many:
    """One statement for each set of parameters (no rows come back)."""

    sql: str
    parameters: Iterable[Sequence[Any]]


# The body of a transaction: yields statements, is sent their rows, returns the result.
Transaction = Generator[Statement | Many, list[Row], T]


class Retryable(Exception):
    """The database gave this transaction up for another's sake (a deadlock, a write conflict, a
    lock held too long): nothing of it was written, and running it again will do."""


class MissingParent(Exception):
    """A row names one that is not there (a foreign key): its conversation was deleted."""


class Database(Protocol):
    """One database, shared by every request of the process."""

    dialect: str  # "sqlite" or "postgresql", for the few places that must know (migrations)
    where: str  # where it is, fit for a log line: a file path, or a URL without its password

    async def rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        """Run one statement; its rows (those of RETURNING for a write), all of them."""
        ...

    async def many(self, sql: str, parameters: Iterable[Sequence[Any]]) -> None: ...

    async def transaction(self, body: Transaction[T], *, lock: str | None = None) -> T:
        """Run `body` as one transaction: all its writes or none. Those that name the same `lock`
        run one at a time (SQLite runs every write transaction one at a time anyway)."""
        ...

    async def check_writable(self) -> None:
        """Raises if the database cannot take a write now (read-only, full, unreachable)."""
        ...

    async def migrate(self) -> list[str]:
        """Apply the migrations not applied yet, once however many processes start at once; the
        names applied now."""
        ...

    async def applied_migrations(self) -> list[str]: ...

    async def close(self) -> None: ...


# Runs of a transaction the database gave up for another's sake (Retryable).
TRIES = 4


async def run_transaction(db: Database, body: Callable[[], Transaction[T]], *, lock: str | None = None) -> T:
    """Run the transaction that `body()` makes; if the database gave it up for another's sake
    (Retryable: nothing was written), run it again, from the start, a few times, a little later
    each time."""
    for attempt in range(TRIES):
        try:
            return await db.transaction(body(), lock=lock)
        except Retryable:
            if attempt == TRIES - 1:
                raise
            await asyncio.sleep(0.02 * 2**attempt * (1 + random.random()))
    raise AssertionError("unreachable")


def first(rows: list[Row]) -> Row | None:
    return rows[0] if rows else None


def as_dict(row: Row) -> dict[str, Any]:
    return {key: row[key] for key in row.keys()}


def redacted(url: str) -> str:
    """A database URL without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))

