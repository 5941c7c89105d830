"""`chatapp copy-db FROM TO`: one database's history copied into another, of either kind (the case
that matters: a team's SQLite file into PostgreSQL, to run on several hosts).

What lasts is copied: conversations, messages (with their ids, so that links stay valid), the usage
ledger, settings (the generated signing key), signed-in sessions, people with their invitation and
reset links, and the audit log. Short-lived counters (rate windows, streams, sign-in failures) are
not: they start afresh.

Each table is read in batches of a bounded number of rows, in the order of its primary key, and
each batch is written in one transaction with an upsert that writes only rows that differ. So a
copy that was interrupted goes on when run again, never duplicates a row, and picks up what changed
in FROM meanwhile (new messages, an answer that was still being written). The counts are compared
at the end.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import is_postgresql, redacted, sqlite_path
from .base import Database, Many, Row, Transaction
from .migrations import MIGRATIONS

BATCH = 200  # rows per read and per transaction: 200 answers of 100 KB (and their HTML) stay well in memory


@dataclass(frozen=True)
class Table:
    name: str
    key: tuple[str, ...]  # its primary key, the order it is read in
    checks: tuple[tuple[str, str], ...] = ()  # (label, aggregate) compared besides the count


# In the order of their references: a message names its conversation; a session, an invitation
# and a reset link name people.
TABLES = (
    Table("settings", ("name",)),
    Table("people", ("id",)),
    Table("sessions", ("id",)),
    Table("usage", ("owner", "day"), checks=(("tokens", "COALESCE(SUM(tokens), 0)"),)),
    Table("conversations", ("id",), checks=(("newest", "MAX(updated_at)"),)),
    Table("messages", ("id",), checks=(("largest id", "MAX(id)"),
                                       ("characters", "COALESCE(SUM(LENGTH(content) + LENGTH(reasoning)), 0)"))),
    Table("invitations", ("token_hash",)),
    Table("password_resets", ("token_hash",)),
    Table("audit_log", ("id",)),
)
# Short-lived state, which starts afresh: rate windows, answers being written, sign-in back-off, and
# the processes writing answers. (tests/test_copy_db.py checks that every table is one or the other.)
NOT_COPIED = ("rate_limits", "streams", "sign_in_failures", "writers")
CONVERSATIONS = next(table for table in TABLES if table.name == "conversations")

# What copy() reports after each batch: the table, its rows read so far, and its rows in all.
Progress = Callable[[str, int, int], None]


class Refused(Exception):
    """The copy cannot start; the message says why and what to do, in one line."""


@dataclass(frozen=True)
class Check:
    """One figure, read from both databases."""

    label: str  # "messages", or an indented figure under it: "  largest id"
    source: Any
    target: Any

    @property
    def equal(self) -> bool:
        return self.source == self.target


def check_locations(source: str, target: str) -> None:
    """Refuse, before anything is opened, a FROM that is not there, an unknown kind of URL, and
    a copy into itself. (Opening a SQLite location that does not exist would create the file.)"""
    for location in (source, target):
        if "://" in location and not is_postgresql(location) and not location.startswith("sqlite:"):
            raise Refused(f"{redacted(location)} is neither a SQLite file nor a postgresql:// URL")
    if not is_postgresql(source) and not sqlite_path(source).is_file():
        raise Refused(f"{redacted(source)} does not exist")
    if _same(source, target):
        raise Refused("FROM and TO are the same database")


def _same(source: str, target: str) -> bool:
    if is_postgresql(source) or is_postgresql(target):
        return source.rstrip("/") == target.rstrip("/")
    a, b = sqlite_path(source), sqlite_path(target)
    return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))


async def copy(source: Database, target: Database, *, batch: int = BATCH,
               progress: Progress | None = None) -> list[str]:
    """Copy every lasting table of `source` into `target`, whose schema is brought up to date
    first; the tables left out. `source` must be at the same migration step. Run again after an
    interruption, it goes on; `progress` may raise to interrupt it (the batches written so far stay)."""
    known = [migration.name for migration in MIGRATIONS]
    if (applied := await source.applied_migrations()) != known:
        advice = ("a newer chatapp migrated it: copy with that one" if set(applied) - set(known) else
                  "run `chatapp migrate` on it first (CHATAPP_DATABASE_URL=FROM chatapp migrate)")
        raise Refused(f"{source.where} is at migration {_step(applied)}, this chatapp at {_step(known)}: {advice}")
    await target.migrate()
    if (applied := await target.applied_migrations()) != known:
        raise Refused(f"{target.where} is at migration {_step(applied)}, newer than this chatapp ({_step(known)})")
    for table in TABLES:
        await _copy_table(source, target, table, batch, progress)
    # Each message inserted set its conversation's updated_at (migration 0004's trigger) to its own
    # time: the conversations are written again where that differs from FROM's.
    await _copy_table(source, target, CONVERSATIONS, batch, None)
    if target.dialect == "postgresql":  # the next message's id comes after the copied ones
        await target.rows("SELECT setval(pg_get_serial_sequence('messages', 'id'), COALESCE(MAX(id), 0) + 1, false) "
                          "FROM messages")
    return sorted(await tables(source) - {table.name for table in TABLES} - {"migrations"})


async def tables(db: Database) -> set[str]:
    """The names of the database's tables."""
    if db.dialect == "sqlite":
        rows = await db.rows("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    else:
        rows = await db.rows("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {row[0] for row in rows}


def _step(names: list[str]) -> str:
    return names[-1] if names else "none (an empty database)"


async def _copy_table(source: Database, target: Database, table: Table, batch: int,
                      progress: Progress | None) -> None:
    key = ", ".join(table.key)
    [(total,)] = await source.rows(f"SELECT COUNT(*) FROM {table.name}")
    after: Sequence[Any] | None = None
    done = 0
    while True:
        where = f"WHERE ({key}) > ({', '.join('?' for _ in table.key)}) " if after is not None else ""
        rows = await source.rows(f"SELECT * FROM {table.name} {where}ORDER BY {key} LIMIT ?", (*(after or ()), batch))
        if not rows:
            break
        await target.transaction(_write(table, rows, target.dialect))
        after = [rows[-1][column] for column in table.key]
        done += len(rows)
        if progress is not None:
            progress(table.name, done, max(total, done))
        if len(rows) < batch:
            break


def _write(table: Table, rows: list[Row], dialect: str) -> Transaction[None]:
    """One batch, as an upsert that leaves rows already equal untouched (a second run rewrites
    nothing it copied before)."""
    columns = list(rows[0].keys())
    others = [column for column in columns if column not in table.key]
    differs = "IS NOT" if dialect == "sqlite" else "IS DISTINCT FROM"  # SQLite before 3.39 has only IS NOT
    sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
           f"ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET "
           f"{', '.join(f'{column} = excluded.{column}' for column in others)} "
           f"WHERE ({', '.join(f'{table.name}.{column}' for column in others)}) {differs} "
           f"({', '.join(f'excluded.{column}' for column in others)})")
    yield Many(sql, [tuple(row[column] for column in columns) for row in rows])


async def compare(source: Database, target: Database) -> list[Check]:
    """Each table's count, and a few cheap figures (largest id, characters, tokens), in both."""
    checks = []
    for table in TABLES:
        # CAST: PostgreSQL sums BIGINTs as NUMERIC, SQLite as integers.
        figures = ["COUNT(*)", *(f"CAST({sql} AS BIGINT)" if "SUM" in sql else sql
                                 for _, sql in table.checks)]
        query = f"SELECT {', '.join(figures)} FROM {table.name}"
        [theirs], [ours] = await source.rows(query), await target.rows(query)
        labels = [table.name, *(f"  {label}" for label, _ in table.checks)]
        checks += [Check(label, theirs[i], ours[i]) for i, label in enumerate(labels)]
    return checks
