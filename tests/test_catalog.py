"""The models a person may choose (chatapp/catalog.py): the operator's list, or the model server's
own (GET /v1/models) kept for a few minutes, or OPENAI_MODEL alone when the server has none to give;
always an allowlist."""

from __future__ import annotations

import asyncio
import logging

import pytest
from quart import Quart

from chatapp.catalog import ModelCatalog
from chatapp.llm import DemoProvider, make_provider
from tests.support.client import open_chat, send, soup
from tests.support.fake_openai import FakeOpenAI, Reply


def _provider(fake: FakeOpenAI):
    return make_provider(api_key="sk-test", base_url=fake.base_url, model="fake-model", connect_timeout=1.0,
                         first_token_timeout=2.0, idle_timeout=2.0, max_retries=0)


async def test_the_servers_models_are_offered_the_default_first_without_those_that_cannot_chat(
        fake_upstream: FakeOpenAI) -> None:
    fake_upstream.listed = ["qwen3:8b", "text-embedding-3-small", "fake-model", "llama3.2:3b", "whisper-1",
                            "gpt-4o-mini-tts", "qwen3:8b"]
    provider = _provider(fake_upstream)
    catalog = ModelCatalog(provider, configured=(), default="fake-model")
    try:
        assert catalog.names() == ["fake-model"]  # before the first answer: the default alone
        await catalog.refresh()
        assert catalog.names() == ["fake-model", "llama3.2:3b", "qwen3:8b"]
    finally:
        await catalog.aclose()
        await provider.aclose()


async def test_the_list_is_kept_for_a_while_then_fetched_again_in_the_background(fake_upstream: FakeOpenAI) -> None:
    fake_upstream.listed = ["a-model"]
    provider = _provider(fake_upstream)
    catalog = ModelCatalog(provider, configured=(), default="fake-model", refresh_seconds=0.3)
    try:
        catalog.names()  # starts the first fetch
        await asyncio.sleep(0.2)
        assert catalog.names() == ["a-model"]
        fake_upstream.listed = ["a-model", "b-model"]
        assert catalog.names() == ["a-model"]  # still fresh: not asked again
        asked = len(fake_upstream.model_lists)
        await asyncio.sleep(0.35)
        assert catalog.names() == ["a-model"]  # stale: answered at once, fetched meanwhile
        await asyncio.sleep(0.2)
        assert catalog.names() == ["a-model", "b-model"]
        assert len(fake_upstream.model_lists) == asked + 1
    finally:
        await catalog.aclose()
        await provider.aclose()


@pytest.mark.parametrize("status", [404, 500, 401])
async def test_a_server_that_cannot_list_leaves_the_default_with_a_log_line(
        fake_upstream: FakeOpenAI, caplog: pytest.LogCaptureFixture, status: int) -> None:
    fake_upstream.models_status = status
    provider = _provider(fake_upstream)
    catalog = ModelCatalog(provider, configured=(), default="fake-model")
    try:
        with caplog.at_level(logging.INFO, logger="chatapp.catalog"):
            await catalog.refresh()
        assert catalog.names() == ["fake-model"]
        assert any(r.name == "chatapp.catalog" for r in caplog.records)
    finally:
        await catalog.aclose()
        await provider.aclose()


async def test_the_operators_list_and_the_demo_are_never_fetched() -> None:
    demo = ModelCatalog(DemoProvider(delay=0), configured=(), default="gpt-4o-mini")
    assert demo.names() == ["Demo model (offline)"]
    fixed = ModelCatalog(DemoProvider(delay=0), configured=("m1", "m2"), default="m1")
    fixed.refresh_soon()
    assert fixed.names() == ["m1", "m2"]
    assert demo._fetching is None and fixed._fetching is None


async def test_the_page_offers_the_servers_models_and_a_chosen_one_is_asked_for(
        make_app, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.listed = ["fake-model", "qwen3:8b"]
    app: Quart = await make_app()
    client = app.test_client()
    action, csrf = await open_chat(client)
    for _ in range(50):  # the list arrives in the background, fetched as the app started
        page = soup(await (await client.get("/", follow_redirects=True)).get_data())
        if page.select("select#model option"):
            break
        await asyncio.sleep(0.02)
    assert [o.get_text() for o in page.select("select#model option")] == ["fake-model", "qwen3:8b"]
    fake_upstream.script(Reply(tokens=["ok"]))
    answer = await send(client, action, csrf, "hi", fields={"model": "qwen3:8b"})
    assert answer.final["data-status"] == "complete"
    assert fake_upstream.requests[-1].body["model"] == "qwen3:8b"


async def test_a_model_not_offered_is_refused_and_never_asked_for(make_app, fake_upstream: FakeOpenAI) -> None:
    app: Quart = await make_app(models=("fake-model", "other-model"))
    client = app.test_client()
    action, csrf = await open_chat(client)
    asked = len(fake_upstream.requests)
    refused = await send(client, action, csrf, "hi", fields={"model": "gpt-4-secret"})
    assert refused.status_code == 400 and "not offered" in refused.body
    assert len(fake_upstream.requests) == asked
