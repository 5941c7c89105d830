"""Reading an OpenAI-style event stream off the wire: the JSON of each `data:` event, until `[DONE]`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from typing import Any

import httpx2

# An event bigger than any Chat Completions chunk: the stream is broken (or hostile), not slow.
MAX_EVENT_BYTES = 1 << 20


async def events(response: httpx2.Response) -> AsyncGenerator[Any, None]:
    """The JSON of each event of an OpenAI-style event stream, until `[DONE]`. The response is
    closed however this ends, so the model server stops generating when we stop reading."""
    try:
        lines = EventReader()
        async with contextlib.aclosing(_body(response)) as received:
            async for data in received:
                for event in lines.feed(data):
                    if event == b"[DONE]":
                        await _drain(received)
                        return
                    yield json.loads(event)
        for event in lines.finish():
            if event != b"[DONE]":
                yield json.loads(event)
    finally:
        await response.aclose()


async def _body(response: httpx2.Response) -> AsyncGenerator[bytes, None]:
    """The response body as it arrives. Without a content encoding (the usual case for an event
    stream) it comes straight from the transport, as the SDK's own drain reads it, past httpx2's
    decoding and re-chunking layers, for less CPU a token (measured by bench/read_floor.py; see
    docs/benchmarks.md)."""
    if response.headers.get("content-encoding", "identity") != "identity":
        async for data in response.aiter_bytes():
            yield data
        return
    stream = response.stream
    if not isinstance(stream, AsyncIterable):  # a response of a sync client: a mistake of ours
        raise TypeError(f"not an async response stream: {type(stream).__name__}")
    async for data in stream:
        yield data


# How long the end of a response may take to arrive after [DONE] (as the SDK's own streams wait).
DRAIN_SECONDS = 0.1


async def _drain(received: AsyncIterator[bytes]) -> None:
    """Read what follows [DONE] (the end of the chunked body): an HTTP/1.1 connection closed with
    its response unread cannot be used again, and every answer would open a new one."""
    with contextlib.suppress(TimeoutError, httpx2.HTTPError):
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in received:
                pass


class EventReader:
    """A minimal Server-Sent Events reader: `data:` lines gather into an event until a blank line
    (the Chat Completions stream uses no other field); lines end in LF or CRLF. Linear in the
    bytes fed however they are split, and refuses (ValueError) an event over MAX_EVENT_BYTES."""

    def __init__(self) -> None:
        self._partial: list[bytes] = []  # the current line, not yet ended
        self._data: list[bytes] = []  # the current event's data lines
        self._size = 0  # bytes held: the current line, and the event's lines with their breaks
        self._first = True

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events completed by `chunk`."""
        if self._first:
            self._first = False
            chunk = chunk.removeprefix(b"\xef\xbb\xbf")  # a byte order mark may open the stream
        if b"\n" not in chunk:
            self._partial.append(chunk)
            self._hold(len(chunk))
            return []
        partial = sum(map(len, self._partial))  # each byte counted here once: it is then in a line
        *lines, rest = (b"".join(self._partial) + chunk if self._partial else chunk).split(b"\n")
        self._size -= partial
        self._partial = [rest] if rest else []
        events = []
        for line in lines:
            event = self._line(line[:-1] if line.endswith(b"\r") else line)
            if event:
                events.append(event)
        self._hold(len(rest))
        return events

    def finish(self) -> list[bytes]:
        """The last event, if the stream ended without its blank line."""
        last = self._line(b"".join(self._partial).removesuffix(b"\r"))
        return [event for event in (last, self._line(b"")) if event]

    def _line(self, line: bytes) -> bytes | None:
        if line.startswith(b"data:"):
            self._data.append(line[5:])
            self._hold(len(line) - 4)  # the data, and the line break that will join it
        elif not line and self._data:
            event = b"\n".join(self._data).strip()
            self._size -= sum(map(len, self._data)) + len(self._data)
            self._data = []
            return event or None
        return None

    def _hold(self, more: int) -> None:
        self._size += more
        if self._size > MAX_EVENT_BYTES:
            raise ValueError(f"an event of more than {MAX_EVENT_BYTES} bytes")
