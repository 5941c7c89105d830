"""People in a live server's database, made before it starts (tests that drive the server from
outside: a browser, urllib)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from chatapp.accounts import Accounts
from chatapp.storage import Store

PASSWORD = "correct horse battery"
T = TypeVar("T")


def with_accounts(database: Path, work: Callable[[Accounts], Awaitable[T]]) -> T:
    """Run `work` on the database's people (migrated first, if new). In a thread of its own, with
    its own event loop: Playwright's may be running in this one."""

    async def run() -> T:
        store = await Store.open(str(database))
        try:
            return await work(Accounts(store.db))
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def admin_and_bob(database: Path) -> dict[str, str]:
    """ada, an admin, and bob, both with PASSWORD; their ids by name."""

    async def make(people: Accounts) -> dict[str, str]:
        return {"ada": (await people.create_person("ada", PASSWORD, admin=True)).id,
                "bob": (await people.create_person("bob", PASSWORD)).id}

    return with_accounts(database, make)
