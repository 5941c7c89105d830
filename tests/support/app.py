"""The app as the tests build it: its test settings, and its message ids as pages show them."""

from __future__ import annotations

from pathlib import Path

from quart import Quart

from chatapp.web.ids import MessageIds
from tests.support.fake_openai import FakeOpenAI
from tests.support.live_server import CANARY_KEY


def app_settings(tmp_path: Path, fake: FakeOpenAI | None, **extra: object) -> dict[str, object]:
    """create_app's settings for a test: a fresh SQLite file in tmp_path, the fake model server (or,
    with None, the offline demo), and `extra` over the defaults."""
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


def stored_id(app: Quart, element_id: str) -> int:
    """The database id of a message from its element's id ("msg-<shown id>")."""
    return MessageIds(app.config["SECRET_KEY"]).private(element_id.removeprefix("msg-"))


def shown_id(app: Quart, message_id: int) -> str:
    """A message's id as pages and URLs show it."""
    return MessageIds(app.config["SECRET_KEY"]).public(message_id)
