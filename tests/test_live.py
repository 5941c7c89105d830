"""The app under the real Hypercorn: what happens when clients leave at awkward moments."""

from __future__ import annotations

import re
import socket
import sqlite3
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live_server import LiveServer, app_environment


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
    # Wait (up to 5 s, on a busy machine) until no answer is marked as streaming. An answer still
    # being generated for nobody would end `complete` after its 2 s, and fail the checks below.
    deadline = time.monotonic() + 5
    while True:
        with sqlite3.connect(tmp_path / "chat.db") as db:
            statuses = [s for (s,) in db.execute("SELECT status FROM messages WHERE role = 'assistant'")]
        if "streaming" not in statuses or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert statuses, "at least the slower posts should have been stored"
    assert set(statuses) == {"stopped"}, statuses
    assert fake_upstream.completed == 0


def _ask(server: LiveServer, action: str, csrf: str, cookie: str, message: str) -> str:
    """One htmx send over its own connection; the whole event stream."""
    request = urllib.request.Request(
        server.url + action, data=urllib.parse.urlencode({"message": message}).encode(),
        headers={"Cookie": cookie, "HX-Request": "true", "X-CSRF-Token": csrf,
                 "Content-Type": "application/x-www-form-urlencoded", "Connection": "close"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return response.read().decode()


def test_two_workers_serve_one_conversation(tmp_path: Path, fake_upstream: FakeOpenAI) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    server = LiveServer(app_environment(fake_upstream.base_url, tmp_path / "chat.db",
                                        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)),
                        tmp_path / "server.log", workers=2)
    try:
        action, csrf, cookie = _open_chat(server)
        for turn in range(8):  # separate connections: the kernel hands them to either worker
            fake_upstream.script(Reply(tokens=[f"answer {turn}"]))
            stream = _ask(server, action, csrf, cookie, f"question {turn}")
            assert "event: done" in stream and 'data-status="complete"' in stream
        metrics = urllib.request.urlopen(server.url + "/metrics", timeout=5).read().decode()
    finally:
        server.stop()

    # Every turn saw the whole conversation so far, whichever worker served it.
    last = fake_upstream.requests[-1].body["messages"]
    assert [m["content"] for m in last[1:]] == [
        text for turn in range(7) for text in (f"question {turn}", f"answer {turn}")
    ] + ["question 7"]
    served_by = {path.stem.rsplit("_", 1)[1] for path in metrics_dir.glob("counter_*.db")}
    assert len(served_by) == 2, "both workers should have answered something"
    completed = [line for line in metrics.splitlines()
                 if line.startswith("chatapp_answers_total{") and 'status="complete"' in line]
    assert completed and float(completed[0].split()[-1]) == 8.0  # summed over both workers


def test_sigterm_mid_answer_saves_what_was_written(tmp_path: Path, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.default = Reply(tokens=[f"w{i} " for i in range(200)], delay=0.05)
    server = LiveServer(app_environment(fake_upstream.base_url, tmp_path / "chat.db"), tmp_path / "server.log",
                        graceful_timeout=1)
    action, csrf, cookie = _open_chat(server)
    body = f"message=long&csrf_token={csrf}".encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    try:
        sock.sendall(
            f"POST {action} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\nHX-Request: true\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        )
        received = b""
        while received.count(b"msg-") < 6:  # a few token frames in
            received += sock.recv(65536)
        server.stop()  # SIGTERM; the graceful timeout (1 s) runs out mid-answer
    finally:
        sock.close()
    with sqlite3.connect(tmp_path / "chat.db") as db:
        rows = db.execute("SELECT role, status, content FROM messages ORDER BY id").fetchall()
    assert rows[0] == ("user", "complete", "long")
    role, status, content = rows[1]
    assert role == "assistant" and status == "stopped"
    assert content.startswith("w0 w1 ") and len(content.split()) < 200
