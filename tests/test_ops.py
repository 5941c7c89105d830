"""For operators: readiness, metrics, and log lines that carry the request id."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from quart import Quart
from quart.testing import QuartClient

from chatapp import create_app
from tests.conftest import MakeApp, app_settings, open_chat, parse_sse, soup
from tests.support.client import send
from tests.support.live_server import free_port
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support import HTMX



def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_ready_when_the_database_and_the_model_server_answer(make_app: MakeApp, fake_upstream: FakeOpenAI) -> None:
    # The operator's list of models: the app does not ask the server for its own.
    client = (await make_app(models=("fake-model", "other-model"))).test_client()
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert await response.get_json() == {"ready": True, "database": "ok", "model": "ok"}
    await client.get("/readyz")
    assert len(fake_upstream.model_lists) == 1  # the second answer came from the last look


async def test_not_ready_when_the_model_server_is_away(make_app: MakeApp) -> None:
    app = await make_app(fake_model=False, openai_base_url=f"http://127.0.0.1:{free_port()}/v1",
                         openai_api_key="sk-x", connect_timeout=0.5)
    response = await app.test_client().get("/readyz")
    body = await response.get_json()
    assert response.status_code == 503 and body["ready"] is False
    assert body["database"] == "ok" and body["model"].startswith("error: connection")


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
