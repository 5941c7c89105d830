"""PostgreSQL, for a team running chatapp on several hosts: every replica shares one database
through a pool of connections (asyncpg: the faster driver on this app's statements, see
docs/drivers.md).

The store's statements are written with `?` placeholders, as SQLite takes them; they become `$1`,
`$2`… here, once per statement (the texts are few and fixed).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from .base import Many, MissingParent, Retryable, Row, Transaction, redacted
from .migrations import MIGRATIONS

T = TypeVar("T")
Connection = asyncpg.Connection | PoolConnectionProxy

# The key of the session lock under which one replica at a time migrates (any fixed number: it
# only has to differ from other applications' advisory locks in the same database).
MIGRATION_LOCK = 0x636861746170  # "chatap"


class PostgreSQL:
    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool, url: str):
        self._pool, self.where = pool, redacted(url)

    @classmethod
    async def open(cls, url: str, *, pool_size: int = 10) -> PostgreSQL:
        # JIT compiling pays off for long analytic queries, never for this app's short ones, and
        # its first compile can stall one for tens of milliseconds.
        pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_size, server_settings={"jit": "off"})
        return cls(pool, url)

    async def rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        try:
            return _rows(await self._pool.fetch(_numbered(sql), *parameters))
        except asyncpg.ForeignKeyViolationError as error:
            raise MissingParent(str(error)) from None

    async def many(self, sql: str, parameters: Iterable[Sequence[Any]]) -> None:
        await self._pool.executemany(_numbered(sql), parameters)

    async def transaction(self, body: Transaction[T], *, lock: str | None = None) -> T:
        """On one connection, in READ COMMITTED: two transactions that read a count and then write
        (a stream's place, a sign-in attempt) would both see the old count, so those name a
        `lock`, taken first and held to the end (an advisory lock on its hash)."""
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                if lock is not None:
                    await connection.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", lock)
                return await _drive(connection, body)
        except asyncpg.ForeignKeyViolationError as error:
            raise MissingParent(str(error)) from None
        except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as error:
            raise Retryable(str(error)) from None
        finally:
            body.close()

    async def check_writable(self) -> None:
        # A transaction id is given only to a transaction that may write: a read-only server (a
        # standby, a full disk's read-only mode) refuses it.
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT txid_current()")

    async def migrate(self) -> list[str]:
        """Under a session lock: ten replicas starting at once migrate once, the others wait
        and then find nothing left to do."""
        async with self._pool.acquire() as connection:
            await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await connection.execute(
                    "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
                done = set(await _applied(connection))
                applied = []
                for migration in MIGRATIONS:
                    if migration.name in done:
                        continue
                    async with connection.transaction():
                        await connection.execute(migration.postgresql)
                        await connection.execute(
                            "INSERT INTO migrations (name, applied_at) VALUES "
                            "($1, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS+00:00'))",
                            migration.name)
                    applied.append(migration.name)
                return applied
            finally:
                await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    async def applied_migrations(self) -> list[str]:
        async with self._pool.acquire() as connection:
            return await _applied(connection)

    async def close(self) -> None:
        await self._pool.close()


async def _drive(connection: Connection, body: Transaction[T]) -> T:
    """Run each statement the body yields, sending its rows back, until it returns."""
    try:
        statement = next(body)
        while True:
            if isinstance(statement, Many):
                await connection.executemany(_numbered(statement.sql), statement.parameters)
                rows: list[Row] = []
            else:
                rows = _rows(await connection.fetch(_numbered(statement.sql), *statement.parameters))
            statement = body.send(rows)
    except StopIteration as done:
        return done.value


async def _applied(connection: Connection) -> list[str]:
    if await connection.fetchval("SELECT to_regclass('migrations')") is None:
        return []
    return [row["name"] for row in await connection.fetch("SELECT name FROM migrations ORDER BY name")]


def _rows(records: list[asyncpg.Record]) -> list[Row]:
    return cast(list[Row], records)  # a Record reads by name and by position, as a Row does


@functools.lru_cache(maxsize=512)
def _numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1`, `$2`… (the store's SQL has no `?` in its literals)."""
    parts = sql.split("?")
    return "".join(part + (f"${number}" if number < len(parts) else "")
                   for number, part in enumerate(parts, start=1))
