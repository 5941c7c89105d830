"""The tests' fixtures: a fake OpenAI-compatible server, the app on a real database (as many as a
test needs, with its settings), a test client, the real app under Hypercorn, and the browser. The
helpers live in tests/support/; the ones tests have long imported from here are re-exported.

Every test that stores anything through the app or the store runs twice: on a fresh SQLite file,
and on a fresh database of a throwaway PostgreSQL server (tests/support/postgres.py). A test about
SQLite itself is marked `sqlite_only`; one about PostgreSQL itself asks for `postgres_server`."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from quart import Quart
from quart.testing import QuartClient

from chatapp import create_app
from chatapp.storage import Store
from tests.support.app import app_settings, shown_id, stored_id
from tests.support.client import open_chat, parse_sse, soup
from tests.support.fake_openai import FakeOpenAI
from tests.support.live_server import CANARY_KEY, LiveServer, app_environment

if TYPE_CHECKING:  # imported by pytest as a plugin (below), before this module could
    from tests.support.postgres import PostgresServer

__all__ = ["CANARY_KEY", "app_settings", "open_chat", "parse_sse", "shown_id", "soup", "stored_id"]

# The browser fixtures (browser, new_page) and the `browser` marker on every test that uses them;
# the OpenID Provider (oidc_provider); the PostgreSQL server (postgres_server, postgres_url).
pytest_plugins = ["tests.support.browser", "tests.support.oidc", "tests.support.postgres"]
DATABASES = ["sqlite", "postgresql"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test marked sqlite_only is not collected for PostgreSQL (deselected, not skipped: there is
    nothing to run)."""
    items[:] = [item for item in items if not (
        item.get_closest_marker("sqlite_only") and getattr(item, "callspec", None)
        and "postgresql" in (item.callspec.params.get("database"), item.callspec.params.get("blank_database")))]


@pytest.fixture(scope="session")
def _migrated_template(postgres_server: PostgresServer) -> str:
    """A PostgreSQL database with the schema, copied for each test (faster than migrating each)."""
    url = postgres_server.create_database("chatapp_template")

    async def migrate() -> None:
        await (await Store.open(url)).close()

    asyncio.run(migrate())
    return url.split("?")[0].rsplit("/", 1)[1]


_copies = itertools.count()


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test's database, empty but for the schema: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "chat.db")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"test_copy_{next(_copies)}"
    server.sql(f"CREATE DATABASE {name} TEMPLATE {request.getfixturevalue('_migrated_template')}")
    return server.url(name)


@pytest.fixture(scope="session")
def _fake_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_upstream(_fake_server: FakeOpenAI) -> FakeOpenAI:
    """The fake model server, with its script and records cleared for this test."""
    _fake_server.reset()
    return _fake_server


MakeApp = Callable[..., Awaitable[Quart]]


@pytest.fixture(params=DATABASES)
def blank_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with nothing in it yet, not even the schema."""
    if request.param == "sqlite":
        return str(tmp_path / "blank.db")
    return request.getfixturevalue("postgres_server").create_database("blank")


@pytest.fixture
async def make_app(tmp_path: Path, database: str, fake_upstream: FakeOpenAI) -> AsyncIterator[MakeApp]:
    """Builds the app with `app_settings`' test defaults under the given settings, talking to the
    fake model server (with fake_model=False, to no server: the offline demo model, unless the
    settings name one), started as for a request and shut down at the end of the test:
    `app = await make_app(password="open sesame")`."""
    async with AsyncExitStack() as started:
        async def make(*, fake_model: bool = True, **settings: object) -> Quart:
            app = create_app(app_settings(tmp_path, fake_upstream if fake_model else None,
                                          **{"database": database, **settings}))
            await started.enter_async_context(app.test_app())
            return app

        yield make


@pytest.fixture
async def app(make_app: MakeApp) -> Quart:
    """The app talking to the fake server, on a fresh database."""
    return await make_app()


@pytest.fixture
async def demo_app(make_app: MakeApp) -> Quart:
    """The app with no key and no base URL: the offline demo model."""
    return await make_app(fake_model=False)


@pytest.fixture
def make_live_server(tmp_path: Path, fake_upstream: FakeOpenAI) -> Iterator[Callable[..., LiveServer]]:
    """Starts the real app under Hypercorn in a subprocess, talking to the fake model server, with
    extra environment settings (CHATAPP_PASSWORD="…"); stopped at the end of the test."""
    started: list[LiveServer] = []

    def start(**environment: str) -> LiveServer:
        env = app_environment(fake_upstream.base_url, tmp_path / "chat.db", **environment)
        started.append(LiveServer(env, tmp_path / "server.log"))
        return started[-1]

    yield start
    for live in started:
        live.stop()


@pytest.fixture
def live_server(make_live_server: Callable[..., LiveServer]) -> LiveServer:
    """The real app under Hypercorn with the test settings."""
    return make_live_server()


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    """The store alone, on a fresh database."""
    store = await Store.open(database)
    yield store
    await store.close()


@pytest.fixture
def client(app: Quart) -> QuartClient:
    return app.test_client()


def _database_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name and t.is_alive()}


@pytest.fixture(autouse=True)
def _no_database_left_open() -> Iterator[None]:
    """A test must close every database it opens: aiosqlite's threads would keep pytest from exiting."""
    before = _database_threads()
    yield
    deadline = time.monotonic() + 2
    while (left := _database_threads() - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not left, f"{len(left)} database connection(s) left open"
