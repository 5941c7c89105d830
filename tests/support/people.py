"""People in a live server's database, made before it starts (tests that drive the server from
outside: a browser, urllib)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from quart import Quart
from quart.testing import QuartClient

from chatapp.accounts import Accounts
from chatapp.storage import Store
from tests.support.client import sign_in_as

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


async def signed_in(app: Quart, name: str, password: str = PASSWORD) -> QuartClient:
    """A test client signed in as `name` through the sign-in page."""
    client = app.test_client()
    response = await sign_in_as(client, name, password)
    assert response.status_code == 303, await response.get_data()
    return client
