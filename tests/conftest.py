"""Shared fixtures: a fake OpenAI-compatible server, the app on a real SQLite file, a test client."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from quart import Quart
from quart.testing import QuartClient

from chatapp import create_app
from chatapp.web.ids import MessageIds
from chatapp.storage import Store
from tests.support.fake_openai import FakeOpenAI
from tests.support.live_server import CANARY_KEY, LiveServer, app_environment

# The browser fixtures (browser, new_page) and the `browser` marker on every test that uses them.
pytest_plugins = ["tests.support.browser"]


@pytest.fixture(scope="session")
def _fake_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_upstream(_fake_server: FakeOpenAI) -> FakeOpenAI:
    """The fake model server, with its script and records cleared for this test."""
    _fake_server.reset()
    return _fake_server


def app_settings(tmp_path: Path, fake: FakeOpenAI | None, **extra: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "database": tmp_path / "chat.db",
        "secret_key": "test-secret-key",
        "first_token_timeout": 3.0,
        "idle_timeout": 3.0,
        "max_retries": 0,
        "demo_delay": 0.0,
        # Off unless a test is about them: other tests send many messages quickly on purpose.
        "rate_limit_per_session": None,
        "rate_limit_per_address": None,
        # Each piece its own frame, so tests can follow the frames; pacing is tested on its own
        # (test_pacing.py) and is on in the live-server and browser tests, as deployed.
        "stream_interval": 0,
    }
    if fake is not None:
        settings.update(openai_base_url=fake.base_url, openai_api_key=CANARY_KEY, openai_model="fake-model")
    settings.update(extra)
    return settings


@pytest.fixture
async def app(tmp_path: Path, fake_upstream: FakeOpenAI) -> AsyncIterator[Quart]:
    """The app talking to the fake server, on a fresh SQLite file."""
    app = create_app(app_settings(tmp_path, fake_upstream))
    async with app.test_app():
        yield app


@pytest.fixture
async def demo_app(tmp_path: Path) -> AsyncIterator[Quart]:
    """The app with no key and no base URL: the offline demo model."""
    app = create_app(app_settings(tmp_path, None))
    async with app.test_app():
        yield app


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
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """The store alone, on a fresh SQLite file."""
    store = await Store.open(tmp_path / "db.sqlite")
    yield store
    await store.close()


@pytest.fixture
def client(app: Quart) -> QuartClient:
    return app.test_client()


def stored_id(app: Quart, element_id: str) -> int:
    """The database id of a message from its element's id ("msg-<shown id>")."""
    return MessageIds(app.config["SECRET_KEY"]).private(element_id.removeprefix("msg-"))


def shown_id(app: Quart, message_id: int) -> str:
    """A message's id as pages and URLs show it."""
    return MessageIds(app.config["SECRET_KEY"]).public(message_id)


def soup(html: str | bytes) -> BeautifulSoup:
    return BeautifulSoup(html, "html.parser")


async def open_chat(client: QuartClient) -> tuple[str, str]:
    """Load the start page like a browser would: returns (form action, csrf token)."""
    response = await client.get("/", follow_redirects=True)
    assert response.status_code == 200
    page = soup(await response.get_data())
    form = page.select_one("form#composer")
    return form["action"], form.select_one("input[name=csrf_token]")["value"]


def parse_sse(body: str) -> list[tuple[str | None, str]]:
    """(event name or None, data) for each frame of an event stream."""
    frames = []
    for block in re.split(r"\n\n", body.strip("\n")):
        event, data = None, []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
        frames.append((event, "\n".join(data)))
    return frames


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
