"""The providers, through the real AsyncOpenAI client, against a fake server on a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time

import pytest

from chatapp.llm import Ending, LLMError, OpenAIProvider, Retrying, Thought, Usage, make_provider
from chatapp.llm.errors import CUT_SHORT, MESSAGES
from chatapp.llm.demo import DemoProvider, demo_reply, pieces
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live_server import free_port

CANARY = "sk-canary-DO-NOT-LEAK-1234567890abcdef"
HISTORY = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! **How** can I help?"},
    {"role": "user", "content": "Explain `async with`."},
]


@pytest.fixture
def fake(fake_upstream: FakeOpenAI) -> FakeOpenAI:
    """The shared fake model server (tests/conftest.py), cleared for this test."""
    return fake_upstream


def _provider(fake: FakeOpenAI, **overrides) -> OpenAIProvider:
    settings = dict(api_key=CANARY, base_url=fake.base_url, model="fake-model", connect_timeout=1.0,
                    first_token_timeout=2.0, idle_timeout=2.0, max_retries=0)
    settings.update(overrides)
    provider = make_provider(**settings)
    assert isinstance(provider, OpenAIProvider)
    return provider


@pytest.fixture
async def provider(fake):
    provider = _provider(fake)
    yield provider
    await provider.aclose()


async def collect(stream) -> tuple[list, LLMError | None]:
    """Everything the stream yielded before it ended or failed, and the failure."""
    got = []
    try:
        async for piece in stream:
            got.append(piece)
    except LLMError as error:
        return got, error
    return got, None


async def _collect_with(fake: FakeOpenAI, **overrides) -> tuple[list, LLMError | None]:
    """The history streamed from the fake server by a provider with these settings, closed after."""
    provider = _provider(fake, **overrides)
    try:
        return await collect(provider.stream(HISTORY))
    finally:
        await provider.aclose()


async def _collect_from(port: int, **timeouts_and_retries: float) -> tuple[list, LLMError | None]:
    """The history streamed from whatever is at this local port (or nothing), the provider closed after."""
    provider = make_provider(api_key=CANARY, base_url=f"http://127.0.0.1:{port}/v1", model="m",
                             **{"idle_timeout": 2.0, **timeouts_and_retries})
    try:
        return await collect(provider.stream(HISTORY))
    finally:
        await provider.aclose()


def assert_no_key(error: LLMError) -> None:
    for text in (str(error), error.user_message, error.detail, repr(error)):
        assert CANARY not in text
        assert "canary" not in text.lower()


# --- the happy path ------------------------------------------------------------------------------

async def test_tokens_arrive_in_order_then_the_ending_then_usage(fake, provider):
    fake.script(Reply(tokens=["Hel", "lo", ", ", "world", "!"], usage=(21, 5)))

    got, error = await collect(provider.stream(HISTORY))

    assert error is None
    assert got == ["Hel", "lo", ", ", "world", "!", Ending("stop"), Usage(prompt_tokens=21, completion_tokens=5)]
    assert provider.label == "fake-model" and provider.is_demo is False


async def test_request_carries_history_model_stream_flags_and_key(fake, provider):
    await collect(provider.stream(HISTORY))

    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.body["messages"] == HISTORY
    assert request.body["model"] == "fake-model"
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.headers["authorization"] == f"Bearer {CANARY}"


async def test_base_url_without_key_sends_a_placeholder(fake):
    provider = make_provider(api_key=None, base_url=fake.base_url, model="llama3", connect_timeout=1.0,
                             first_token_timeout=2.0, idle_timeout=2.0)
    try:
        got, error = await collect(provider.stream(HISTORY))
    finally:
        await provider.aclose()

    assert error is None and "".join(p for p in got if isinstance(p, str)) == "Hello from the fake model."
    assert provider.label == "llama3" and not provider.is_demo
    assert fake.requests[0].headers["authorization"].startswith("Bearer ")


# --- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "kind"), [
    (400, "bad_request"), (401, "auth"), (403, "auth"), (404, "not_found"),
    (422, "bad_request"), (429, "rate_limit"), (500, "server"), (503, "server"),
])
async def test_status_errors_map_to_a_kind_with_a_message_for_people(fake, provider, status, kind):
    # Some servers echo the key they were given: it must still not reach the person or the log.
    body = {"error": {"message": f"Incorrect API key provided: {CANARY}", "type": "x", "code": None}}
    fake.default = Reply(status=status, body=body)

    got, error = await collect(provider.stream(HISTORY))

    assert got == []
    assert error is not None and error.kind == kind
    assert str(error) == error.user_message == MESSAGES[kind].format(model="fake-model")
    assert f"status {status}" in error.detail and "[redacted]" in error.detail
    assert_no_key(error)
    expected_requests = 2 if status == 400 else 1  # a 400 is retried once without stream_options
    assert len(fake.requests) == expected_requests


async def test_auth_message_tells_an_administrator_what_to_check(fake, provider):
    fake.script(Reply(status=401))
    _, error = await collect(provider.stream(HISTORY))
    assert error.user_message == ("The model server refused our API key. "
                                  "An administrator needs to check OPENAI_API_KEY.")
    fake.script(Reply(status=404))
    _, error = await collect(provider.stream(HISTORY))
    assert "fake-model" in error.user_message and "OPENAI_MODEL" in error.user_message


@pytest.mark.parametrize(("status", "kind"), [(429, "rate_limit"), (500, "server"), (503, "server")])
async def test_a_busy_or_failing_server_is_tried_again_then_streams(fake, status, kind):
    fake.script(Reply(status=status, headers={"retry-after-ms": "10"}), Reply(tokens=["after", " retry"]))
    provider = _provider(fake, max_retries=2)
    try:
        got, error = await collect(provider.stream(HISTORY))
    finally:
        await provider.aclose()

    assert error is None
    assert got[0] == Retrying(attempt=2, tries=3, wait=0.01, reason=kind)
    assert got[1:3] == ["after", " retry"] and isinstance(got[-1], Usage)
    assert len(fake.requests) == 2


async def test_retries_are_bounded_and_then_the_error_is_shown(fake):
    fake.script(*(Reply(status=500, headers={"retry-after-ms": "10"}) for _ in range(4)))
    provider = _provider(fake, max_retries=2)
    try:
        got, error = await collect(provider.stream(HISTORY))
    finally:
        await provider.aclose()
    assert [g.attempt for g in got] == [2, 3] and error.kind == "server"
    assert len(fake.requests) == 3  # the first try and two more


async def test_retry_after_is_honoured_with_backoff_when_absent(fake):
    fake.script(Reply(status=429, headers={"retry-after": "1"}), Reply(status=503), Reply(tokens=["ok"]))
    provider = _provider(fake, max_retries=2, first_token_timeout=10.0)
    try:
        got, error = await collect(provider.stream(HISTORY))
    finally:
        await provider.aclose()
    assert error is None and got[0].wait == 1.0
    assert 0.5 <= got[1].wait <= 1.5  # the second try's backoff: 0.5 s × 2 with up to 50% jitter
    gaps = [b.at - a.at for a, b in zip(fake.requests, fake.requests[1:])]
    assert gaps[0] >= 1.0 and gaps[1] >= got[1].wait


async def test_a_retry_after_beyond_the_first_token_deadline_fails_at_once(fake):
    fake.script(Reply(status=429, headers={"retry-after": "120"}))
    provider = _provider(fake, max_retries=2, first_token_timeout=5.0)
    try:
        got, error = await collect(provider.stream(HISTORY))
    finally:
        await provider.aclose()
    assert got == [] and error.kind == "rate_limit" and len(fake.requests) == 1


async def test_no_retry_once_text_has_been_shown(fake):
    fake.script(Reply(tokens=["partial", " text", " more"], drop_after=2), Reply(tokens=["again"]))
    provider = _provider(fake, max_retries=2)
    try:
        got, error = await collect(provider.stream(HISTORY))
    finally:
        await provider.aclose()
    assert got == ["partial", " text"] and len(fake.requests) == 1
    assert error.kind == "connection" and error.user_message == CUT_SHORT["connection"]


async def test_a_steady_stream_outlasts_its_deadlines(fake):
    """The deadlines move with every chunk: tokens 0.1 s apart for a second, with a first-token
    and an idle deadline of 0.3 s each, make a complete answer."""
    fake.script(Reply(tokens=[f"t{i} " for i in range(10)], delay=0.1))
    provider = _provider(fake, first_token_timeout=0.3, idle_timeout=0.3)
    try:
        got, error = await collect(provider.stream(HISTORY))
    finally:
        await provider.aclose()
    assert error is None and "".join(p for p in got if isinstance(p, str)) == "".join(f"t{i} " for i in range(10))


async def test_a_slow_reader_is_not_the_model_servers_silence(fake):
    """Time the caller spends with a piece is not counted against the model server: a reader that
    takes longer than the idle deadline over each piece still gets the whole answer."""
    fake.script(Reply(tokens=["a", "b", "c"], delay=0.01))
    provider = _provider(fake, first_token_timeout=2.0, idle_timeout=0.2)
    got = []
    try:
        async for piece in provider.stream(HISTORY):
            got.append(piece)
            await asyncio.sleep(0.5)
    finally:
        await provider.aclose()
    assert [p for p in got if isinstance(p, str)] == ["a", "b", "c"]


async def test_a_connect_timeout_is_tried_again_then_reported():
    # A listening socket whose accept queue is full: the kernel drops further SYNs, so connecting
    # hangs until the connect timeout (all on 127.0.0.1).
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        try:
            got, error = await _collect_from(port, connect_timeout=0.3, first_token_timeout=5.0, max_retries=1)
        finally:
            for filler in fillers:
                filler.close()
    assert [type(g) for g in got] == [Retrying] and got[0].reason == "timeout"
    assert error.kind == "timeout" and error.user_message == MESSAGES["timeout"]


async def test_unreachable_server_is_a_connection_error():
    got, error = await _collect_from(free_port(), connect_timeout=1.0, first_token_timeout=2.0, max_retries=0)

    assert got == [] and error.kind == "connection"
    assert error.user_message == MESSAGES["connection"]
    assert "Connect call failed" in error.detail  # the refusal itself reaches the log
    assert_no_key(error)


# --- faults in the middle of a stream ------------------------------------------------------------

async def test_stall_before_first_token_times_out(fake):
    fake.script(Reply(stall_after=0, stall=5.0))
    started = time.monotonic()
    got, error = await _collect_with(fake, first_token_timeout=0.3, idle_timeout=5.0)
    elapsed = time.monotonic() - started

    assert got == [] and error.kind == "timeout"
    assert error.user_message == MESSAGES["timeout"]
    assert 0.3 <= elapsed < 1.0
    assert await asyncio.to_thread(fake.wait_for_disconnect, 1.0)  # and we hung up


async def test_stall_mid_stream_times_out_after_the_text_so_far(fake):
    fake.script(Reply(tokens=["one", " two", " three"], stall_after=2, stall=5.0))
    started = time.monotonic()
    got, error = await _collect_with(fake, first_token_timeout=5.0, idle_timeout=0.3)

    assert got == ["one", " two"]
    assert error.kind == "timeout" and error.user_message == CUT_SHORT["timeout"]
    assert time.monotonic() - started < 1.0
    assert await asyncio.to_thread(fake.wait_for_disconnect, 1.0)


async def test_dropped_connection_mid_stream_is_an_error_after_the_text_so_far(fake, provider):
    fake.script(Reply(tokens=["one", " two", " three"], drop_after=2))

    got, error = await collect(provider.stream(HISTORY))

    assert got == ["one", " two"]
    assert error.kind == "connection"
    assert error.user_message == CUT_SHORT["connection"]
    assert "Not enough data to satisfy transfer length" in error.detail  # the cut chunk, in the log
    assert_no_key(error)


async def test_malformed_chunk_is_an_error_not_skipped(fake, provider):
    fake.script(Reply(tokens=["one", " two", " three"], malformed_after=1))

    got, error = await collect(provider.stream(HISTORY))

    assert got == ["one"]
    assert error.kind == "malformed" and error.user_message == MESSAGES["malformed"]
    assert_no_key(error)


async def test_server_without_stream_options_still_streams_and_is_remembered(fake, provider):
    fake.default = Reply(tokens=["no", " usage"], reject_stream_options=True)

    first, error1 = await collect(provider.stream(HISTORY))
    second, error2 = await collect(provider.stream(HISTORY))

    assert error1 is None and error2 is None
    assert first == second == ["no", " usage", Ending("stop")]  # no usage chunk from such a server
    assert ["stream_options" in r.body for r in fake.requests] == [True, False, False]
    assert provider.send_stream_options is False


async def test_a_real_bad_request_does_not_turn_off_stream_options(fake, provider):
    fake.default = Reply(status=400)

    _, error = await collect(provider.stream(HISTORY))

    assert error.kind == "bad_request"
    assert provider.send_stream_options is True


# --- reasoning models ----------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_comes_as_thoughts_before_the_answer(fake, provider, field):
    fake.script(Reply(reasoning=["Let me", " think."], reasoning_field=field, tokens=["Hi", "!"], usage=(9, 4)))

    got, error = await collect(provider.stream(HISTORY))

    assert error is None
    assert got == [Thought("Let me"), Thought(" think."), "Hi", "!", Ending("stop"), Usage(9, 4)]


async def test_inline_think_tags_become_thoughts_and_never_reach_the_answer(fake, provider):
    fake.script(Reply(tokens=["\n<thi", "nk>Hm", "m.</th", "ink>\n", "\nHi", " <think>"]))

    got, error = await collect(provider.stream(HISTORY))

    assert error is None and got[-2:] == [Ending("stop"), got[-1]] and isinstance(got[-1], Usage)
    assert got[:-2] == [Thought("Hm"), Thought("m."), "Hi", " <think>"]  # a later tag is the answer's


async def test_with_reasoning_fields_the_content_is_all_answer(fake, provider):
    fake.script(Reply(reasoning=["r"], tokens=["<think>x</think>", " y"]))

    got, error = await collect(provider.stream(HISTORY))

    assert error is None and got[:3] == [Thought("r"), "<think>x</think>", " y"]


async def test_the_finish_reason_is_the_ending(fake, provider):
    fake.script(Reply(tokens=["Once", " upon"], finish_reason="length"), Reply(tokens=["x"], finish_reason=None))

    cut, error = await collect(provider.stream(HISTORY))
    unsaid, error2 = await collect(provider.stream(HISTORY))

    assert error is error2 is None
    assert cut[:3] == ["Once", " upon", Ending("length")] and isinstance(cut[3], Usage)
    assert not any(isinstance(p, Ending) for p in unsaid)  # no reason given: no Ending


async def test_a_model_that_thinks_longer_than_the_first_token_deadline_is_not_cut_off(fake):
    """Reasoning pieces are the model's sign of life: 1.2 s of thinking, a piece every 0.1 s, with a
    first-token and an idle deadline of 0.4 s each, make a complete answer."""
    fake.script(Reply(reasoning=[f"step {i}. " for i in range(12)], reasoning_delay=0.1, tokens=["Done."]))

    got, error = await _collect_with(fake, first_token_timeout=0.4, idle_timeout=0.4)

    assert error is None
    assert "".join(p.text for p in got if isinstance(p, Thought)) == "".join(f"step {i}. " for i in range(12))
    assert [p for p in got if isinstance(p, str)] == ["Done."]


async def test_a_model_that_sends_nothing_still_times_out_before_its_first_thought(fake):
    fake.script(Reply(reasoning=["too late"], reasoning_delay=3.0))
    started = time.monotonic()

    got, error = await _collect_with(fake, first_token_timeout=0.3, idle_timeout=5.0)

    assert got == [] and error.kind == "timeout" and error.user_message == MESSAGES["timeout"]
    assert time.monotonic() - started < 1.5


async def test_the_idle_deadline_applies_between_thoughts(fake):
    fake.script(Reply(reasoning=["one", "two"], reasoning_delay=0.6))

    got, error = await _collect_with(fake, first_token_timeout=2.0, idle_timeout=0.3)

    assert got == [Thought("one")]
    assert error.kind == "timeout" and error.user_message == CUT_SHORT["timeout"]


async def test_no_retry_once_reasoning_has_been_shown(fake):
    fake.script(Reply(reasoning=["thinking"], tokens=["a", "b"], drop_after=0), Reply(tokens=["again"]))
    provider = _provider(fake, max_retries=2)
    try:
        got, error = await collect(provider.stream(HISTORY))
    finally:
        await provider.aclose()
    assert got == [Thought("thinking")] and len(fake.requests) == 1
    assert error.kind == "connection" and error.user_message == CUT_SHORT["connection"]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_that_is_not_text_is_malformed(fake, provider, field):
    chunk = {"choices": [{"index": 0, "delta": {field: {"text": "hm"}}, "finish_reason": None}]}
    fake.script(Reply(raw=f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()))

    got, error = await collect(provider.stream(HISTORY))

    assert got == [] and error.kind == "malformed" and error.user_message == MESSAGES["malformed"]
    assert_no_key(error)


async def test_one_reasoning_field_is_read_when_a_server_sends_both(fake, provider):
    chunks = [{"reasoning": "same", "reasoning_content": "same"}, {"reasoning": "", "reasoning_content": "a"},
              {"reasoning": "b", "reasoning_content": None}, {"reasoning_details": [{"text": "c"}]}]
    body = "".join(f"data: {json.dumps({'choices': [{'index': 0, 'delta': d}]})}\n\n" for d in chunks)
    fake.script(Reply(raw=(body + "data: [DONE]\n\n").encode(), raw_split=5))

    got, error = await collect(provider.stream(HISTORY))

    assert error is None and got == [Thought("same"), Thought("a"), Thought("b")]


# --- the consumer going away ---------------------------------------------------------------------

async def test_cancelling_the_consumer_closes_the_upstream_connection(fake, provider):
    fake.script(Reply(tokens=["first", " slow"], stall_after=1, stall=10.0))
    got: list = []
    first_token = asyncio.Event()

    async def consume():
        async for piece in provider.stream(HISTORY):
            got.append(piece)
            first_token.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_token.wait(), 2.0)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert got == ["first"]
    assert await asyncio.to_thread(fake.wait_for_disconnect, 1.0)
    assert fake.disconnects[0] - cancelled_at < 1.0
    assert fake.completed == 0


async def test_leaving_the_loop_early_closes_the_upstream_connection(fake, provider):
    fake.script(Reply(tokens=["a", "b", "c", "d"], delay=0.2))

    async with contextlib.aclosing(provider.stream(HISTORY)) as stream:
        async for piece in stream:
            assert piece == "a"
            break

    assert await asyncio.to_thread(fake.wait_for_disconnect, 1.0)
    assert fake.completed == 0


# --- the demo ------------------------------------------------------------------------------------

async def test_demo_is_chosen_without_key_or_url():
    provider = make_provider(api_key=None, base_url=None, model="gpt-4o-mini", connect_timeout=1.0,
                             first_token_timeout=1.0, idle_timeout=1.0, demo_delay=0)
    assert isinstance(provider, DemoProvider)
    assert provider.is_demo and provider.label == "Demo model (offline)"
    await provider.aclose()


async def test_demo_streams_a_deterministic_markdown_answer():
    messages = HISTORY[:-1] + [{"role": "user", "content": "What is *this*?\nSecond line"}]
    demo = DemoProvider(delay=0)

    first, error = await collect(demo.stream(messages))
    again, _ = await collect(demo.stream(messages))

    assert error is None and first == again
    *texts, usage = first
    text = "".join(texts)
    assert text == demo_reply(messages)
    assert all(isinstance(t, str) and 0 < len(t) <= 5 for t in texts)
    assert len(texts) > 100  # streamed in token-sized pieces, not lines
    assert text.startswith("## ")
    assert "OPENAI_API_KEY" in text and "OPENAI_BASE_URL" in text
    assert "\n- " in text
    assert "```python\n" in text and text.count("```") == 2
    assert "| --- | --- |" in text
    assert "\n> What is *this*?\n> Second line\n" in text
    assert "3 messages" in text
    assert usage == Usage(prompt_tokens=-(-sum(len(m["content"]) for m in messages) // 4),
                          completion_tokens=-(-len(text) // 4))


async def test_demo_answers_differ_by_question_and_pieces_join_back():
    one = demo_reply([{"role": "user", "content": "alpha"}])
    two = demo_reply([{"role": "user", "content": "beta"}])
    assert one != two and "> alpha" in one and "> beta" in two
    sample = "Hello, wörld!  `x = 1`\n\n| a |\ttab"
    assert "".join(pieces(sample)) == sample


async def test_demo_can_be_cancelled_between_pieces():
    demo = DemoProvider(delay=0.5)
    task = asyncio.create_task(collect(demo.stream(HISTORY)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
