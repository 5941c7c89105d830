"""Every way the model server can fail, end to end: what the person sees, what is saved, what is
logged, and that the next message works."""

from __future__ import annotations

import logging
import socket

import pytest
from quart import Quart

from tests.conftest import MakeApp
from tests.support.app import stored_id
from tests.support.client import open_chat, send
from tests.support.fake_openai import FakeOpenAI, Reply

WORDS = ["Partial ", "answer ", "so ", "far."]
RETRY_SOON = {"retry-after-ms": "10"}

# fault → (scripted replies, what the person is told, error kind in the log, text kept)
FAULTS = {
    "401 key refused": ([Reply(status=401)], "refused our API key", "auth", ""),
    "403 forbidden": ([Reply(status=403)], "refused our API key", "auth", ""),
    "404 unknown model": ([Reply(status=404)], "does not know the model", "not_found", ""),
    "400 context too long": ([Reply(status=400)] * 2, "rejected this request", "bad_request", ""),
    "429 three times": ([Reply(status=429, headers=RETRY_SOON)] * 3, "busy; try again", "rate_limit", ""),
    "500 three times": ([Reply(status=500, headers=RETRY_SOON)] * 3, "had a problem", "server", ""),
    "no first token": ([Reply(tokens=WORDS, stall_after=0, stall=5)], "took too long", "timeout", ""),
    "stall mid-stream": ([Reply(tokens=WORDS, stall_after=2, stall=5)], "stopped sending in the middle",
                         "timeout", "Partial answer "),
    "dropped mid-stream": ([Reply(tokens=WORDS, drop_after=2)], "broke off before the answer was finished",
                           "connection", "Partial answer "),
    "malformed chunk": ([Reply(tokens=WORDS, malformed_after=2)], "could not understand", "malformed",
                        "Partial answer "),
}


@pytest.fixture
async def retrying_app(make_app: MakeApp) -> Quart:
    return await make_app(max_retries=2, first_token_timeout=1.0, idle_timeout=0.5)


async def _ask(app: Quart, client, action: str, csrf: str, message: str):
    """The answer's frames, its last state, and what was stored of it."""
    answer = await send(client, action, csrf, message)
    stored = await app.extensions["store"].message(stored_id(app, answer.final["id"]))
    return answer.frames, answer.final, stored


@pytest.mark.parametrize("fault", FAULTS)
async def test_each_fault_ends_clearly_and_loses_nothing(retrying_app: Quart, fake_upstream: FakeOpenAI,
                                                         caplog: pytest.LogCaptureFixture, fault: str) -> None:
    replies, told, kind, kept = FAULTS[fault]
    fake_upstream.script(*replies, Reply(tokens=["All ", "good."]))
    client = retrying_app.test_client()
    action, csrf = await open_chat(client)

    frames, final, stored = await _ask(retrying_app, client, action, csrf, f"question for {fault}")
    error = final.select_one("[data-role=error]").get_text()
    assert final["aria-busy"] == "false" and final["data-status"] == "error" and frames[-1][0] == "done"
    assert told in error and "request id" in error
    assert (stored.status, stored.content) == ("error", kept)
    request_id = error.rsplit("request id ", 1)[1].rstrip(")")
    assert f"upstream error kind={kind} request_id={request_id}" in caplog.text
    if kind in ("rate_limit", "server"):  # tried twice more, and the person was told so
        assert sum("trying again" in data for _, data in frames) == 2
    question = (await retrying_app.extensions["store"].messages(action.split("/")[2]))[0]
    assert question.content == f"question for {fault}"  # the question is never lost

    _, final, stored = await _ask(retrying_app, client, action, csrf, "and now?")
    assert final["data-status"] == "complete" and stored.content == "All good."


async def test_an_unreachable_server_is_tried_again_then_explained(make_app: MakeApp, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    app = await make_app(fake_model=False, openai_base_url=f"http://127.0.0.1:{port}/v1", openai_api_key="sk-x",
                         max_retries=2, connect_timeout=0.5)
    client = app.test_client()
    action, csrf = await open_chat(client)
    frames, final, stored = await _ask(app, client, action, csrf, "anyone there?")
    assert "Could not reach the model server" in final.select_one("[data-role=error]").get_text()
    assert stored.status == "error" and "upstream error kind=connection" in caplog.text
    assert sum("trying again" in data for _, data in frames) == 2
    assert caplog.records and all(r.levelno < logging.ERROR for r in caplog.records if r.name.startswith("chatapp"))
