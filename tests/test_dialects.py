"""Every server's dialect, on its own wire format: the fixtures in tests/fixtures/dialects/ (each
says where its bytes come from) replayed by the fake server over real HTTP and read by the real
OpenAIProvider, whole and cut into small writes, must give the fixture's answer, reasoning, usage
and finish_reason; and each server's error bodies must give the right kind of error, with a
message for people that repeats nothing of the body. Then the same through the whole app: what is
stored and shown.

One difference from the fixtures is by design: after an inline `</think>`, the newlines that start
the answer are dropped (the model's separator between reasoning and answer), where the fixtures
keep them verbatim ("trimming is the client's choice", their README says).
"""

from __future__ import annotations

import contextlib
import json
import tomllib
from pathlib import Path

import pytest

from chatapp.llm import Ending, LLMError, OpenAIProvider, Retrying, Thought, Usage, make_provider
from chatapp.llm.errors import MESSAGES
from tests.support.app import stored_id
from tests.support.client import open_chat, send
from tests.support.fake_openai import FakeOpenAI, Reply

DIALECTS = Path(__file__).parent / "fixtures" / "dialects"
STREAMS = tomllib.loads((DIALECTS / "streams.toml").read_text(encoding="utf-8"))
ERRORS = tomllib.loads((DIALECTS / "errors.toml").read_text(encoding="utf-8"))["error"]
HISTORY = [{"role": "user", "content": "Hi"}]
KINDS = {400: "bad_request", 401: "auth", 403: "auth", 404: "not_found", 429: "rate_limit", 500: "server",
         503: "server"}
# Shapes that cannot be told apart live (thinking.py says why): the answer stays as it came.
NOT_SPLIT = {"vllm-inline-missing-open-tag": "only a closing </think> (the template opened the block in "
                                             "the prompt): not split live, the whole text stays the answer"}


@pytest.fixture
def fake(fake_upstream: FakeOpenAI) -> FakeOpenAI:
    """The shared fake model server (tests/conftest.py), cleared for this test."""
    return fake_upstream


@pytest.fixture
async def provider(fake):
    provider = make_provider(api_key="sk-test", base_url=fake.base_url, model="fake-model", connect_timeout=1.0,
                             first_token_timeout=5.0, idle_timeout=5.0, max_retries=0)
    assert isinstance(provider, OpenAIProvider)
    yield provider
    await provider.aclose()


def stream_cases() -> list:
    cases = []
    for name in STREAMS:
        marks = [pytest.mark.xfail(reason=NOT_SPLIT[name], strict=True)] if name in NOT_SPLIT else []
        for split in (None, 1, 13):
            cases.append(pytest.param(name, split, id=f"{name}-{'whole' if split is None else split}", marks=marks))
    return cases


@pytest.mark.parametrize(("name", "split"), stream_cases())
async def test_each_servers_stream_gives_its_answer_reasoning_usage_and_ending(fake, provider, name, split):
    case = STREAMS[name]
    fake.script(Reply(raw=(DIALECTS / case["file"]).read_bytes(), raw_split=split))

    got = [piece async for piece in provider.stream(HISTORY)]

    thoughts = [p for p in got if isinstance(p, Thought)]
    texts = [p for p in got if isinstance(p, str)]
    inline = "inline" in name
    assert "".join(t.text for t in thoughts) == case["reasoning"]
    assert "".join(texts) == (case["answer"].lstrip("\r\n") if inline else case["answer"])
    # The order of base.py: reasoning, answer, then the Ending, then the Usage, and no empty piece.
    tail = [p for p in got if not isinstance(p, (str, Thought))]
    expected_tail: list = [Ending(case["finish_reason"])]
    if "prompt_tokens" in case:
        expected_tail.append(Usage(case["prompt_tokens"], case["completion_tokens"]))
    assert tail == expected_tail and got[-len(tail):] == tail
    kinds = [isinstance(p, Thought) for p in got[:-len(tail)]]
    assert kinds == sorted(kinds, reverse=True)
    assert all(p.text if isinstance(p, Thought) else p for p in got[:-len(tail)])


def error_cases() -> list:
    return [pytest.param(entry, id=f"{entry['server']}-{entry['status']}") for entry in ERRORS]


def body_message(body: str) -> str:
    """What the server's error body says, in any of the shapes of errors.toml."""
    error = json.loads(body)["error"]
    return error if isinstance(error, str) else error["message"]


def retry_after_of(entry: dict) -> float | None:
    headers = {name.lower(): value for name, value in entry["headers"].items()}
    if "retry-after-ms" in headers:
        return float(headers["retry-after-ms"]) / 1000
    return float(headers["retry-after"]) if "retry-after" in headers else None


@pytest.mark.parametrize("entry", error_cases())
async def test_each_servers_error_body_gives_the_right_kind_and_a_message_without_the_body(fake, provider, entry):
    fake.default = Reply(status=entry["status"], raw=entry["body"].encode(), content_type=entry["content_type"],
                         headers=dict(entry["headers"]))

    with pytest.raises(LLMError) as caught:
        async for _ in provider.stream(HISTORY):
            pass

    error = caught.value
    kind = KINDS[entry["status"]]
    assert error.kind == kind
    assert str(error) == error.user_message == MESSAGES[kind].format(model="fake-model")
    said = body_message(entry["body"])
    assert said and said not in error.user_message and said in error.detail  # the body is for the log
    assert f"status {entry['status']}" in error.detail
    assert error.retry_after == retry_after_of(entry)


@pytest.mark.parametrize("entry", [e for e in ERRORS if retry_after_of(e) is not None],
                         ids=lambda e: f"{e['server']}-{e['status']}")
async def test_a_servers_retry_after_is_how_long_the_retry_waits(fake, entry):
    fake.default = Reply(status=entry["status"], raw=entry["body"].encode(), content_type=entry["content_type"],
                         headers=dict(entry["headers"]))
    provider = make_provider(api_key="sk-test", base_url=fake.base_url, model="fake-model", connect_timeout=1.0,
                             first_token_timeout=60.0, idle_timeout=5.0, max_retries=1)
    try:
        async with contextlib.aclosing(provider.stream(HISTORY)) as stream:
            first = await anext(stream)  # and leave while it waits
    finally:
        await provider.aclose()
    assert first == Retrying(attempt=2, tries=2, wait=retry_after_of(entry), reason="rate_limit")


async def test_an_error_event_after_the_stream_began_comes_after_the_text_before_it(fake, provider):
    # OpenRouter (its streaming docs): once a 200 response has begun, an error is a data event.
    chunk = '{"choices":[{"index":0,"delta":{"role":"assistant","content":"Part"},"finish_reason":null}]}'
    error = '{"error":{"code":502,"message":"Provider returned error"},"choices":[]}'
    fake.script(Reply(raw=f": OPENROUTER PROCESSING\n\ndata: {chunk}\n\ndata: {error}\n\n".encode()))

    got = []
    with pytest.raises(LLMError) as caught:
        async for piece in provider.stream(HISTORY):
            got.append(piece)

    assert got == ["Part"]
    assert caught.value.kind == "server" and "Provider returned error" not in caught.value.user_message


# --- through the whole app --------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(STREAMS))
async def test_each_servers_stream_through_the_app_is_stored_and_shown_right(app, client, fake_upstream, name):
    """The same bytes through the real app: what is stored and shown as answer and as reasoning,
    the usage charged, and how the answer ended."""
    case = STREAMS[name]
    fake_upstream.script(Reply(raw=(DIALECTS / case["file"]).read_bytes(), raw_split=7))
    action, csrf = await open_chat(client)
    final = (await send(client, action, csrf, "Hi")).final
    message = await app.extensions["store"].message(stored_id(app, final["id"]))
    reasoning, answer = case["reasoning"].strip(), case["answer"]
    assert message.reasoning.strip() == reasoning
    assert message.content == (answer.lstrip("\r\n") if reasoning else answer)
    assert (final.select_one("details.thinking") is not None) == bool(reasoning)
    assert message.status == final["data-status"] == "complete"
    assert message.finish_reason == case["finish_reason"]
    if "prompt_tokens" in case:
        assert (message.prompt_tokens, message.completion_tokens) == (case["prompt_tokens"], case["completion_tokens"])


@pytest.mark.parametrize("entry", error_cases())
async def test_each_servers_error_through_the_app_is_said_for_people(client, fake_upstream, entry):
    fake_upstream.default = Reply(status=entry["status"], raw=entry["body"].encode(),
                                  content_type=entry["content_type"], headers=dict(entry["headers"]))
    action, csrf = await open_chat(client)
    final = (await send(client, action, csrf, "Hi")).final
    error = final.select_one("[data-role=error]").get_text()
    assert final["data-status"] == "error"
    assert MESSAGES[KINDS[entry["status"]]].format(model="fake-model") in error
    assert body_message(entry["body"]) not in error
