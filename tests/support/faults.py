"""Faults a test can cause in a real database: writes that fail as a full disk's do, through a
trigger that either database runs inside the statement (and so inside its transaction)."""

from __future__ import annotations

from chatapp.storage import Store

MESSAGE = "database or disk is full"


async def fail_writes(store: Store, event: str, *, when: str | None = None) -> None:
    """From now on, statements that fire `event` ("BEFORE INSERT ON messages") fail, those
    matching `when` (an SQL condition on NEW) only."""
    if store.db.dialect == "sqlite":
        condition = f" WHEN {when}" if when else ""
        await store.db.rows(f"CREATE TRIGGER disk_full {event}{condition} BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END")
        return
    condition = f" WHEN ({when})" if when else ""
    await store.db.rows(f"CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS "
                        f"$$ BEGIN RAISE EXCEPTION '{MESSAGE}'; END $$")
    await store.db.rows(f"CREATE TRIGGER disk_full {event} FOR EACH ROW{condition} EXECUTE FUNCTION disk_full()")


async def stop_failing_writes(store: Store) -> None:
    if store.db.dialect == "sqlite":
        await store.db.rows("DROP TRIGGER disk_full")
        return
    await store.db.rows("DROP FUNCTION disk_full CASCADE")  # and its trigger
