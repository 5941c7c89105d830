"""For operators: readiness, metrics, and log lines that carry the request id."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client import REGISTRY
from quart import Quart
from quart.testing import QuartClient

from chatapp import create_app
from chatapp.web import ops
from tests.conftest import MakeApp, app_settings, open_chat, parse_sse, soup
from tests.support.client import send
from tests.support.live_server import LiveServer, app_environment, free_port
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support import HTMX



def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_ready_when_the_database_and_the_model_server_answer(make_app: MakeApp, fake_upstream: FakeOpenAI,
                                                                  database: str) -> None:
    # The operator's list of models: the app does not ask the server for its own.
    client = (await make_app(models=("fake-model", "other-model"), replica="app-2")).test_client()
    response = await client.get("/readyz")
    assert response.status_code == 200
    kind = "postgresql" if database.startswith("postgresql://") else "sqlite"
    assert await response.get_json() == {"ready": True, "database": "ok", "database_kind": kind, "model": "ok",
                                         "replica": "app-2"}
    await client.get("/readyz")
    assert len(fake_upstream.model_lists) == 1  # the second answer came from the last look


async def test_where_the_database_is_only_operators_see(make_app: MakeApp, database: str) -> None:
    if database.startswith("postgresql://"):  # the test server trusts local connections: any password does
        database = database.replace("postgres@", "postgres:hunter2-secret@", 1)
    client = (await make_app(database=database, production=True, secret_key="k" * 32, metrics_token="scrape-me",
                             fake_model=False, replica="app-2")).test_client()
    stranger = await (await client.get("/readyz")).get_data(as_text=True)
    assert json.loads(stranger) == {"ready": True, "database": "ok", "model": "ok",
                                    "database_kind": "postgresql" if "hunter2" in database else "sqlite"}
    operator = await (await client.get("/readyz", headers={"Authorization": "Bearer scrape-me"})).get_json()
    assert operator["replica"] == "app-2"
    if "hunter2" in database:
        assert operator["database_where"] == database.replace("hunter2-secret", "***")
    else:
        assert operator["database_where"] == database
        assert str(Path(database).parent) not in stranger
    assert "hunter2" not in stranger + json.dumps(operator)


async def test_not_ready_when_the_model_server_is_away(make_app: MakeApp) -> None:
    app = await make_app(fake_model=False, openai_base_url=f"http://127.0.0.1:{free_port()}/v1",
                         openai_api_key="sk-x", connect_timeout=0.5)
    response = await app.test_client().get("/readyz")
    body = await response.get_json()
    assert response.status_code == 503 and body["ready"] is False
    assert body["database"] == "ok" and body["model"].startswith("error: connection")


class _Link:
    """A TCP port relaying to the test PostgreSQL server's socket, which can go silent (a server
    behind a firewall that drops packets: connections open, nothing answers) or down."""

    def __init__(self, socket_path: str) -> None:
        self._socket_path, self._open = socket_path, True
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> _Link:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.flowing.set()
        await self.down()

    async def down(self) -> None:
        """The server is gone: open connections are cut, new ones refused."""
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_unix_connection(self._socket_path)
        self._writers += [writer, server_writer]
        await asyncio.gather(self._pipe(reader, server_writer), self._pipe(server_reader, writer),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self.flowing.wait()
            writer.write(data)
            await writer.drain()
        writer.close()


async def test_a_silent_or_stopped_postgresql_makes_readyz_fail_in_time(
        tmp_path: Path, postgres_url: str, fake_upstream: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "DATABASE_TIMEOUT", 1.0)
    parts = urlsplit(postgres_url)
    socket_path = f"{parse_qs(parts.query)['host'][0]}/.s.PGSQL.{parse_qs(parts.query)['port'][0]}"
    async with _Link(socket_path) as link:
        url = f"postgresql://{parts.username}@127.0.0.1:{link.port}{parts.path}"
        app = create_app(app_settings(tmp_path, fake_upstream, database=url))
        async with app.test_app():
            client = app.test_client()

            async def ready() -> tuple[int, dict[str, str], float]:
                app.extensions.pop("readiness", None)  # a fresh look, not the last one
                started = time.monotonic()
                response = await client.get("/readyz")
                return response.status_code, await response.get_json(), time.monotonic() - started

            assert (await ready())[0] == 200
            link.flowing.clear()
            status, body, took = await ready()
            assert (status, body["database"], body["database_kind"]) == (503, "error: no answer within 1 s", "postgresql")
            assert body["model"] == "ok" and took < 2.5
            link.flowing.set()  # back: the pool's connections serve again
            assert (await ready())[0] == 200
            await link.down()
            status, body, took = await ready()
            assert status == 503 and body["database"].startswith("error: ") and took < 2.5


async def test_metrics_count_answers_tokens_errors_and_requests(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    before = {
        "complete": metric("chatapp_answers_total", status="complete"),
        "tokens": metric("chatapp_tokens_relayed_total"),
        "ttft": metric("chatapp_time_to_first_token_seconds_count"),
        "server": metric("chatapp_upstream_errors_total", kind="server"),
        "sends": metric("chatapp_http_requests_total", route="/c/<conversation_id>/messages", status="200"),
    }
    fake_upstream.script(Reply(tokens=["one ", "two ", "three"]), Reply(status=500))
    action, csrf = await open_chat(client)
    for _ in range(2):
        await send(client, action, csrf)

    response = await client.get("/metrics")
    text = (await response.get_data()).decode()
    assert response.status_code == 200 and "chatapp_active_streams" in text
    assert metric("chatapp_answers_total", status="complete") - before["complete"] == 1
    assert metric("chatapp_tokens_relayed_total") - before["tokens"] == 3
    assert metric("chatapp_time_to_first_token_seconds_count") - before["ttft"] == 1
    assert metric("chatapp_upstream_errors_total", kind="server") - before["server"] == 1
    assert metric("chatapp_http_requests_total", route="/c/<conversation_id>/messages", status="200") - before["sends"] == 2
    assert metric("chatapp_active_streams") == 0


async def test_metrics_can_be_kept_for_those_with_the_token(make_app: MakeApp) -> None:
    client = (await make_app(fake_model=False, metrics_token="scrape-me")).test_client()
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})).status_code == 200


def _samples(exposition: str) -> list[str]:
    return [line for line in exposition.splitlines() if line and not line.startswith("#")]


async def test_every_metric_says_which_replica_it_comes_from(make_app: MakeApp) -> None:
    client = (await make_app(replica="app-3")).test_client()
    await client.get("/healthz")
    samples = _samples(await (await client.get("/metrics")).get_data(as_text=True))
    assert any(line.startswith('chatapp_http_requests_total{') for line in samples)
    unlabelled = [line for line in samples if 'replica="app-3"' not in line.split("} ")[0]]
    assert len(samples) > 20 and not unlabelled


def test_the_workers_of_a_replica_are_added_up_under_its_name(tmp_path: Path, fake_upstream: FakeOpenAI) -> None:
    (tmp_path / "metrics").mkdir()
    env = app_environment(fake_upstream.base_url, tmp_path / "chat.db", CHATAPP_REPLICA="app-4",
                          PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    server = LiveServer(env, tmp_path / "server.log", workers=2)
    try:
        for _ in range(6):  # new connections: both workers answer some of them
            urllib.request.urlopen(server.url + "/healthz", timeout=5).read()
        samples = _samples(urllib.request.urlopen(server.url + "/metrics", timeout=5).read().decode())
    finally:
        server.stop()
    # One series, summed over the workers (not one per worker process), under the replica's name.
    (health,) = [line for line in samples if line.startswith("chatapp_http_requests_total{") and "/healthz" in line]
    assert 'replica="app-4"' in health and float(health.rsplit(" ", 1)[1]) == 1 + 6  # and the start-up wait's
    assert all('replica="app-4"' in line for line in samples)


@pytest.fixture
async def json_logging_app(tmp_path: Path, fake_upstream: FakeOpenAI) -> AsyncIterator[tuple[Quart, io.StringIO]]:
    # Built by hand: the log handler the factory sets up is pointed here before the app starts, and
    # a second factory call puts text lines back.
    app = create_app(app_settings(tmp_path, fake_upstream, log_format="json"))
    handler = next(h for h in logging.getLogger("chatapp").handlers if getattr(h, "chatapp", False))
    captured = io.StringIO()
    original = handler.setStream(captured)
    async with app.test_app():
        yield app, captured
    handler.setStream(original)
    create_app(app_settings(tmp_path, fake_upstream))  # back to text lines for the tests after


async def test_log_lines_are_json_with_the_request_id_people_see(json_logging_app, fake_upstream: FakeOpenAI) -> None:
    app, captured = json_logging_app
    fake_upstream.script(Reply(status=500))
    client = app.test_client()
    action, csrf = await open_chat(client)
    response = await client.post(action, form={"message": "hi"}, headers={**HTMX, "X-CSRF-Token": csrf})
    frames = parse_sse((await response.get_data()).decode())
    shown = soup(frames[-2][1]).select_one("[data-role=error]").get_text()
    request_id = shown.rsplit("request id ", 1)[1].rstrip(")")

    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    upstream = [line for line in lines if "upstream error" in line["message"]]
    assert upstream and upstream[0]["request_id"] == request_id and upstream[0]["level"] == "WARNING"
    assert response.headers["X-Request-ID"] == request_id


async def test_the_theme_switch_works_without_javascript(client: QuartClient) -> None:
    _, csrf = await open_chat(client)
    page = soup(await (await client.get("/", follow_redirects=True)).get_data())
    assert page.find("html").get("data-theme") is None  # the system's choice by default
    assert (await client.post("/theme", form={"theme": "dark"})).status_code == 403  # no token
    response = await client.post("/theme", form={"theme": "dark", "back": "//evil.example/x", "csrf_token": csrf})
    assert response.status_code == 303 and response.headers["Location"] == "/"  # never off-site
    assert "HttpOnly" in response.headers["Set-Cookie"] and "theme=dark" in response.headers["Set-Cookie"]
    page = soup(await (await client.get("/", follow_redirects=True)).get_data())
    assert page.find("html")["data-theme"] == "dark"
    assert page.select_one("select[name=theme] option[selected]")["value"] == "dark"
    await client.post("/theme", form={"theme": "<script>", "csrf_token": csrf})
    assert soup(await (await client.get("/", follow_redirects=True)).get_data()).find("html").get("data-theme") is None


async def test_static_files_are_versioned_cached_and_compressed_but_streams_never(client: QuartClient,
                                                                                 fake_upstream: FakeOpenAI) -> None:
    import gzip

    page = await client.get("/", follow_redirects=True, headers={"Accept-Encoding": "gzip"})
    assert page.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in page.headers["Vary"]
    html = soup(gzip.decompress(await page.get_data()))
    css = html.select_one("link[rel=stylesheet]")["href"]
    assert css.startswith("/static/app.css?v=") and len(css.split("v=")[1]) == 12
    response = await client.get(css, headers={"Accept-Encoding": "gzip"})
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert b":root" in gzip.decompress(await response.get_data())
    action = html.select_one("form#composer")["action"]
    csrf = html.select_one("form#composer input[name=csrf_token]")["value"]
    stream = await client.post(action, form={"message": "hi"},
                               headers={**HTMX, "X-CSRF-Token": csrf, "Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in stream.headers and (await stream.get_data()).startswith(b"data: ")
    no_js = await client.post(action, form={"message": "hi", "csrf_token": csrf}, headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in no_js.headers  # the chunked answer page is a stream too
