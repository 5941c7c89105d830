"""SQLite, the embedded default: one file, one connection per process (aiosqlite runs it on its
own thread, off the event loop), shared by every request; several processes share the file.

Each call is one trip to the database thread, and every trip costs a thread switch each way:
reads fetch all their rows in the same trip, writes return theirs (RETURNING), and a transaction
runs its whole body in one trip.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from .base import Many, MissingParent, Retryable, Row, Transaction
from .migrations import MIGRATIONS

T = TypeVar("T")


class SQLite:
    dialect = "sqlite"

    def __init__(self, db: aiosqlite.Connection, path: Path):
        self._db, self.where = db, str(path)

    @classmethod
    async def open(cls, path: Path) -> SQLite:
        # Autocommit: each statement is its own transaction. The connection is shared by every
        # request, so an open transaction would mix their writes (one's rollback undoing another's).
        _create_private(path)
        db = await aiosqlite.connect(path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        # The busy timeout makes a writer wait for another instead of failing at once; WAL lets
        # readers and the writer overlap, and several workers share the file.
        await db.execute("PRAGMA busy_timeout = 5000")
        await _switch_to_wal(db)
        await db.execute("PRAGMA foreign_keys = ON")
        await db.execute("PRAGMA synchronous = NORMAL")
        return cls(db, path)

    async def rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        try:
            return list(await self._db.execute_fetchall(sql, parameters))
        except sqlite3.IntegrityError as error:
            raise _missing_parent_or(error) from None

    async def many(self, sql: str, parameters: Iterable[Sequence[Any]]) -> None:
        await self._db.executemany(sql, parameters)

    async def transaction(self, body: Transaction[T], *, lock: str | None = None) -> T:
        """The body runs on the database thread, in one trip: no other request's statement can run
        in between (the thread runs one call at a time), and BEGIN IMMEDIATE takes the file's
        write lock first, so other processes wait too (which is also why `lock` is not needed).
        (aiosqlite has no public call for this; `_execute` is how its own methods reach the
        thread.)"""

        def run(connection: sqlite3.Connection) -> T:
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = _drive(connection, body)
                connection.execute("COMMIT")
            except BaseException:
                # Whatever failed, even COMMIT (a full disk), the shared connection must not stay
                # inside this transaction: every later write would join it.
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            return result

        try:
            return await self._db._execute(run, self._db._conn)
        except sqlite3.IntegrityError as error:
            raise _missing_parent_or(error) from None
        except sqlite3.OperationalError as error:
            if "locked" in str(error):  # another process held the file past the busy timeout
                raise Retryable(str(error)) from None
            raise

    async def check_writable(self) -> None:
        # One trip to the database thread: the connection is shared, and any statement of another
        # request that ran between BEGIN and ROLLBACK would be rolled back with them.
        await self._db.executescript("BEGIN IMMEDIATE; ROLLBACK;")

    async def migrate(self) -> list[str]:
        """Safe when several workers start at once: each migration runs in a write transaction,
        and one that another worker has just applied fails harmlessly and is skipped."""
        await self._db.execute(
            "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        applied = []
        for migration in MIGRATIONS:
            if migration.name in await self.applied_migrations():
                continue
            now = datetime.now(UTC).isoformat(timespec="milliseconds")
            record = f"INSERT INTO migrations (name, applied_at) VALUES ('{migration.name}', '{now}');"
            try:
                await self._db.executescript(f"BEGIN IMMEDIATE;\n{migration.sqlite}\n{record}\nCOMMIT;")
            except sqlite3.Error:
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                if migration.name not in await self.applied_migrations():
                    raise
                continue
            applied.append(migration.name)
        return applied

    async def applied_migrations(self) -> list[str]:
        tables = await self._db.execute_fetchall(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'migrations'")
        if not tables:
            return []
        return [row["name"] for row in await self._db.execute_fetchall("SELECT name FROM migrations ORDER BY name")]

    async def close(self) -> None:
        await self._db.close()


def _drive(connection: sqlite3.Connection, body: Transaction[T]) -> T:
    """Run each statement the body yields, sending its rows back, until it returns."""
    try:
        statement = next(body)
        while True:
            if isinstance(statement, Many):
                connection.executemany(statement.sql, statement.parameters)
                rows: list[Row] = []
            else:
                rows = connection.execute(statement.sql, statement.parameters).fetchall()
            statement = body.send(rows)
    except StopIteration as done:
        return done.value


def _create_private(path: Path) -> None:
    """A new database file is readable by its owner only: it may hold the generated signing key.
    (SQLite gives its -wal and -shm files the same permissions.)"""
    if str(path) != ":memory:" and not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


async def _switch_to_wal(db: aiosqlite.Connection, tries: int = 100) -> None:
    """PRAGMA journal_mode = WAL, tried again while another worker holds the lock: switching a new
    file needs it alone, and two workers switching at once can be refused at once, without the
    busy timeout (SQLite's way out of a deadlock between two would-be writers)."""
    for attempt in range(tries):
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == tries - 1:
                raise
            await asyncio.sleep(0.02 + random.random() * 0.03)


def _missing_parent_or(error: sqlite3.IntegrityError) -> Exception:
    """A row whose conversation was deleted since the caller found it fails the foreign key."""
    return MissingParent(str(error)) if "FOREIGN KEY" in str(error) else error
