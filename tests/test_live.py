"""The app under the real Hypercorn: what happens when clients leave at awkward moments."""

from __future__ import annotations

import re
import socket
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from tests.fake_openai import FakeOpenAI, Reply
from tests.live_server import LiveServer, app_environment


@pytest.fixture
def server(tmp_path: Path, fake_upstream: FakeOpenAI) -> Iterator[LiveServer]:
    live = LiveServer(app_environment(fake_upstream.base_url, tmp_path / "chat.db",
                                      CHATAPP_MAX_STREAMS_PER_SESSION="50"), tmp_path / "server.log")
    yield live
    live.stop()


def _open_chat(server: LiveServer) -> tuple[str, str, str]:
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(server.url + "/").read().decode()
    action = re.search(r'<form id="composer"[^>]*action="([^"]+)"', page).group(1)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return action, csrf, "; ".join(f"{c.name}={c.value}" for c in jar)


def _post_and_leave(server: LiveServer, action: str, csrf: str, cookie: str, wait: float) -> None:
    body = f"message=hello&csrf_token={csrf}".encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            f"POST {action} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\nHX-Request: true\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        )
        time.sleep(wait)


def test_a_client_leaving_as_its_message_arrives_never_leaves_an_answer_running(
    server: LiveServer, fake_upstream: FakeOpenAI, tmp_path: Path
) -> None:
    # Regression: on Python 3.11 Quart's body read (asyncio.wait_for) could swallow the cancel,
    # and the answer was generated, and paid for, with nobody reading it.
    fake_upstream.default = Reply(tokens=["word "] * 40, delay=0.05)
    action, csrf, cookie = _open_chat(server)
    for wait in (0, 0, 0, 0, 0, 0.001, 0.01, 0.1):
        _post_and_leave(server, action, csrf, cookie, wait)
    time.sleep(1.0)  # each answer would take 2 s to finish
    with sqlite3.connect(tmp_path / "chat.db") as db:
        statuses = [s for (s,) in db.execute("SELECT status FROM messages WHERE role = 'assistant'")]
    assert statuses, "at least the slower posts should have been stored"
    assert set(statuses) == {"stopped"}, statuses
    assert fake_upstream.completed == 0
