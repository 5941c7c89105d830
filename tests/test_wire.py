"""The event stream reader (chatapp.llm.wire.events): the JSON of each `data:` event, until `[DONE]`.

Every token of every answer passes through this small Server-Sent Events parser instead of the
SDK's, so it must cope with what a network does to a stream: events split across reads at any
byte, several events in one read, CRLF line endings, multi-line `data:`, fields and comments it
does not use, a last event without its line break. A line that is not JSON must fail loudly (after
the events before it), and the response must be closed however reading ends, so the model server
stops generating. The responses are real httpx2 Responses over a byte stream that hands out the
given chunks and records what was read and whether it was closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx2
import pytest

from chatapp.llm import wire


class Chunks(httpx2.AsyncByteStream):
    """A response body arriving as the given chunks; records how many were read, and closing."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks
        self.read = 0
        self.closed = False

    async def __aiter__(self):
        for chunk in self.chunks:
            self.read += 1
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


def response_of(*chunks: bytes) -> tuple[httpx2.Response, Chunks]:
    body = Chunks(*chunks)
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=body), body


async def read_all(*chunks: bytes) -> tuple[list, httpx2.Response, Chunks]:
    """Every event of a body in these chunks, read to the end, and the response and body."""
    response, body = response_of(*chunks)
    async with contextlib.aclosing(wire.events(response)) as events:
        got = [event async for event in events]
    return got, response, body


def assert_closed(response: httpx2.Response, body: Chunks) -> None:
    assert response.is_closed and body.closed


def event(payload: object, end: bytes = b"\n") -> bytes:
    return b"data: " + json.dumps(payload).encode() + end + end


STREAM = event({"n": 1}) + event({"n": 2, "text": "hé \"quoted\"\nline"}) + b"data: [DONE]\n\n"
EXPECTED = [{"n": 1}, {"n": 2, "text": "hé \"quoted\"\nline"}]


# --- how the bytes arrive ------------------------------------------------------------------------

async def test_one_event_per_chunk():
    got, response, body = await read_all(event({"n": 1}), event({"n": 2}), b"data: [DONE]\n\n")
    assert got == [{"n": 1}, {"n": 2}]
    assert_closed(response, body)


async def test_several_events_in_one_chunk():
    got, response, body = await read_all(event({"n": 1}) + event({"n": 2}) + event({"n": 3}))
    assert got == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert_closed(response, body)


@pytest.mark.parametrize("at", [
    b"dat",            # inside the field name
    b"data:",          # between the field name and its value
    b'data: {"n": 1',  # inside the JSON
    b'data: {"n": 1}\n',  # between the line break and the blank line
])
async def test_an_event_split_at_an_awkward_place(at):
    whole = event({"n": 1}) + event({"n": 2})
    assert whole.startswith(at)
    got, response, body = await read_all(at, whole[len(at):])
    assert got == [{"n": 1}, {"n": 2}]
    assert_closed(response, body)


async def test_a_stream_split_at_every_byte_boundary_gives_the_same_events():
    for cut in range(1, len(STREAM)):
        got, response, body = await read_all(STREAM[:cut], STREAM[cut:])
        assert got == EXPECTED, cut
        assert_closed(response, body)


async def test_a_stream_arriving_one_byte_at_a_time():
    got, response, body = await read_all(*(STREAM[i:i + 1] for i in range(len(STREAM))))
    assert got == EXPECTED
    assert_closed(response, body)


async def test_crlf_line_endings_even_split_between_cr_and_lf():
    crlf = STREAM.replace(b"\n\n", b"\r\n\r\n")
    assert crlf.count(b"\r\n") == 6
    whole, _, _ = await read_all(crlf)
    cut = crlf.index(b"\r\n") + 1  # the first chunk ends in the CR
    split, response, body = await read_all(crlf[:cut], crlf[cut:])
    assert whole == split == EXPECTED
    assert_closed(response, body)


# --- what an event may hold ----------------------------------------------------------------------

async def test_data_lines_of_one_event_are_joined_with_a_line_break():
    got, _, _ = await read_all(b'data: {"a":\ndata: 1}\n\n', b'data: ["x",\ndata:\n', b'data: "y"]\n\n')
    assert got == [{"a": 1}, ["x", "y"]]


async def test_data_lines_are_joined_as_lines_not_glued_together():
    # JSON cannot tell "\n" from " " between tokens, but its error positions can: the mistake in
    # the second data line is reported on the second line of the event.
    with pytest.raises(json.JSONDecodeError) as raised:
        await read_all(b'data: {"a":\ndata: 1,}\n\n')
    assert raised.value.lineno == 2


async def test_data_without_a_space_after_the_colon():
    got, _, _ = await read_all(b'data:{"a":1}\n\n')
    assert got == [{"a": 1}]


async def test_other_fields_and_comments_are_ignored():
    got, response, body = await read_all(
        b": keep-alive\n\n",
        b"event: message\nid: 7\nretry: 1000\n" + event({"n": 1}),
        b": a comment between events\n" + b"id: 8\n" + event({"n": 2}),
    )
    assert got == [{"n": 1}, {"n": 2}]
    assert_closed(response, body)


# --- how the stream ends -------------------------------------------------------------------------

async def test_done_ends_the_stream_and_what_follows_is_only_drained():
    got, response, body = await read_all(event({"n": 1}), b"data: [DONE]\n\n" + event({"n": 2}),
                                         event({"n": 3}))
    assert got == [{"n": 1}]  # nothing after [DONE] is an event...
    assert body.read == 3  # ...but the body is read to its end, so the connection can serve again
    assert_closed(response, body)


class Lingering(Chunks):
    """A body that does not end after its last chunk (a server that keeps the stream open)."""

    async def __aiter__(self):
        async for chunk in super().__aiter__():
            yield chunk
        await asyncio.sleep(30)


async def test_a_body_that_lingers_after_done_is_not_waited_for():
    body = Lingering(event({"n": 1}), b"data: [DONE]\n\n")
    response = httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=body)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async with contextlib.aclosing(wire.events(response)) as events:
        got = [event async for event in events]

    assert got == [{"n": 1}]
    assert loop.time() - started < 2  # the drain gives up (after 0.1 s), the answer is not held
    assert_closed(response, body)


@pytest.mark.parametrize("ending", [b"", b"\n"], ids=["no line break", "no blank line"])
async def test_a_last_event_without_its_blank_line_is_still_read(ending):
    got, response, body = await read_all(event({"n": 1}), b'data: {"n": 2}' + ending)
    assert got == [{"n": 1}, {"n": 2}]
    assert_closed(response, body)


@pytest.mark.parametrize("ending", [b"", b"\n"], ids=["no line break", "no blank line"])
async def test_a_last_done_without_its_blank_line_is_not_an_event(ending):
    got, _, _ = await read_all(event({"n": 1}), b"data: [DONE]" + ending)
    assert got == [{"n": 1}]


async def test_an_empty_body_has_no_events():
    got, response, body = await read_all()
    assert got == []
    assert_closed(response, body)


async def test_data_that_is_not_json_fails_after_the_events_before_it():
    response, body = response_of(event({"n": 1}), b"data: {not json}\n\n", event({"n": 2}))
    got = []

    with pytest.raises(ValueError) as raised:
        async with contextlib.aclosing(wire.events(response)) as events:
            async for item in events:
                got.append(item)

    assert isinstance(raised.value, json.JSONDecodeError)
    assert got == [{"n": 1}]
    assert body.read == 2
    assert_closed(response, body)


async def test_a_truncated_last_event_fails_rather_than_passing_as_complete():
    response, body = response_of(event({"n": 1}), b'data: {"n": 2, "te')
    with pytest.raises(ValueError):
        async with contextlib.aclosing(wire.events(response)) as events:
            async for _ in events:
                pass
    assert_closed(response, body)


async def test_a_consumer_stopping_early_closes_the_response():
    response, body = response_of(event({"n": 1}), event({"n": 2}), event({"n": 3}))

    async with contextlib.aclosing(wire.events(response)) as events:
        async for item in events:
            assert item == {"n": 1}
            break
        assert not response.is_closed

    assert body.read == 1
    assert_closed(response, body)


async def test_a_byte_order_mark_before_the_first_event_is_skipped():
    got, response, body = await read_all(b"\xef\xbb\xbf" + event({"n": 1}), event({"n": 2}))
    assert got == [{"n": 1}, {"n": 2}]


async def test_an_event_too_big_for_any_chunk_fails_instead_of_filling_memory():
    from chatapp.llm.wire import MAX_EVENT_BYTES

    piece = b"x" * 4096
    endless_line = [b'data: {"n": "'] + [piece] * (MAX_EVENT_BYTES // len(piece) + 2)
    response, body = response_of(*endless_line)
    with pytest.raises(ValueError, match="more than"):
        async with contextlib.aclosing(wire.events(response)) as events:
            [event async for event in events]
    assert body.read < len(endless_line)  # refused as soon as it passed the limit
    assert_closed(response, body)


async def test_a_long_event_in_small_pieces_is_read_whole():
    text = "y" * 500_000
    whole = event({"text": text})
    got, response, body = await read_all(*(whole[i:i + 1024] for i in range(0, len(whole), 1024)))
    assert got == [{"text": text}]


async def test_empty_data_lines_count_towards_the_limit_and_cost_linear_time():
    from chatapp.llm.wire import MAX_EVENT_BYTES

    lines = b"data:\n" * (MAX_EVENT_BYTES + 10)  # each holds a line break, to join the event
    response, body = response_of(*(lines[i:i + 65536] for i in range(0, len(lines), 65536)))
    with pytest.raises(ValueError, match="more than"):
        async with contextlib.aclosing(wire.events(response)) as events:
            [event async for event in events]
    assert_closed(response, body)


async def test_an_event_of_empty_data_lines_is_no_event():
    got, response, body = await read_all(b"data:\n" * 1000 + b"\n", event({"n": 1}))
    assert got == [{"n": 1}]


async def test_a_compressed_stream_is_decoded():
    import gzip

    body = Chunks(gzip.compress(event({"n": 1}) + event({"n": 2}) + b"data: [DONE]\n\n"))
    response = httpx2.Response(200, headers={"content-type": "text/event-stream", "content-encoding": "gzip"},
                               stream=body)
    async with contextlib.aclosing(wire.events(response)) as events:
        got = [event async for event in events]
    assert got == [{"n": 1}, {"n": 2}]
    assert_closed(response, body)
