"""The model boundary: the only module that knows the `openai` SDK.

A provider streams a reply as text pieces, then at most one `Usage` (and, before the first piece,
a `Retrying` notice for each try that failed), and raises one error family, `LLMError`
(llm_errors.py), whose message is written for the person at the keyboard; details are for the log.

Consume a stream with `contextlib.aclosing` (or let the task be cancelled): leaving the generator
closes the upstream HTTP response, so the model server stops generating too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx2
import openai

from .llm_errors import CUT_SHORT, MESSAGES, RETRYABLE, LLMError, kind_of, retry_after

log = logging.getLogger(__name__)

# Local servers (Ollama, llama.cpp, vLLM) ignore the key, but the SDK insists on one.
PLACEHOLDER_KEY = "no-key-needed"
# Headers the SDK adds to every request that the model server has no need of: this machine's OS,
# CPU and Python version, and the SDK's own retry state (its retries are off). Left out, each
# answer's request is smaller, and so is what every open stream keeps of it (about 3 KB).
SDK_TELEMETRY_HEADERS = ("X-Stainless-Lang", "X-Stainless-Package-Version", "X-Stainless-OS", "X-Stainless-Arch",
                         "X-Stainless-Runtime", "X-Stainless-Runtime-Version", "X-Stainless-Async")
SDK_REQUEST_HEADERS = ("X-Stainless-Retry-Count", "X-Stainless-Read-Timeout")
# The longest pause between tries, whatever a Retry-After header asks for.
MAX_RETRY_WAIT = 20.0


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Retrying:
    """Before the first token: the last try failed; the next starts after `wait` seconds."""

    attempt: int  # the try about to start, counting from 2
    tries: int  # how many there will be at most
    wait: float
    reason: str  # the error kind


class Provider(Protocol):
    label: str
    is_demo: bool

    def stream(self, messages: list[dict[str, str]], model: str | None = None) -> AsyncIterator[str | Usage | Retrying]: ...

    async def check(self) -> None: ...  # raises LLMError if the model server cannot be reached

    async def aclose(self) -> None: ...


class OpenAIProvider:
    """Any OpenAI-compatible Chat Completions server, through the official SDK."""

    is_demo = False

    def __init__(self, *, api_key: str, base_url: str | None, model: str, connect_timeout: float,
                 first_token_timeout: float, idle_timeout: float, max_retries: int = 2) -> None:
        self.label = model
        self.model = model
        self.max_retries = max_retries
        self.connect_timeout = connect_timeout
        self.first_token_timeout = first_token_timeout
        self.idle_timeout = idle_timeout
        self.send_stream_options = True
        self._secret = api_key if api_key != PLACEHOLDER_KEY else ""
        try:
            self._client = openai.AsyncOpenAI(
                # Retries are ours (stream() below): they can be told to the person and must stop
                # at the first token, where the SDK's would not.
                api_key=api_key, base_url=base_url, max_retries=0,
                # Connecting has its own limit; everything after (the response headers, then each
                # chunk) is bounded by _Deadline, in terms a person understands (first token, then
                # silence). A read timeout too would re-arm a timer for every chunk.
                timeout=openai.Timeout(None, connect=connect_timeout),
                # The SDK's aiohttp transport (the `openai[aiohttp]` extra): reading a streamed
                # answer through it costs about a third of the CPU of the default transport
                # (36-37 against 101 µs a token, measured with bench/read_floor.py 50).
                http_client=openai.DefaultAioHttpClient(),
                default_headers=dict.fromkeys(SDK_TELEMETRY_HEADERS, openai.omit),
            )
        except openai.OpenAIError as error:
            raise LLMError("config", "The model connection is not configured correctly.",
                           self._scrub(repr(error))) from None

    async def aclose(self) -> None:
        await self._client.close()

    async def check(self) -> None:
        """The model server answers (its model list; a server without one still answered)."""
        try:
            await self._client.with_options(timeout=self.connect_timeout, max_retries=0).models.list()
        except openai.NotFoundError:
            return
        except openai.OpenAIError as error:
            raise self._error(error, False) from None

    async def stream(self, messages: list[dict[str, str]], model: str | None = None) -> AsyncIterator[str | Usage | Retrying]:
        """Text pieces, then at most one Usage. A busy, failing or unreachable server is tried again
        (max_retries times, with backoff or as long as it asks, within the first-token deadline),
        but only before the first token: after it, a retry would repeat text already shown."""
        loop = asyncio.get_running_loop()
        # One deadline from the request to the first text piece, retries included; after that,
        # each chunk must follow the previous one within idle_timeout.
        first_deadline = loop.time() + self.first_token_timeout
        attempt = 1
        while True:
            started = False
            try:
                async with contextlib.aclosing(self._attempt(messages, model or self.model, first_deadline)) as pieces:
                    async for piece in pieces:
                        started = started or isinstance(piece, str)
                        yield piece
                return
            except LLMError as error:
                wait = None if started else self._retry_wait(error, attempt, first_deadline - loop.time())
                if wait is None:
                    raise
                log.info("model server %s (try %d of %d), trying again in %.1f s: %s",
                         error.kind, attempt, self.max_retries + 1, wait, error.detail)
                attempt += 1
                yield Retrying(attempt, self.max_retries + 1, wait, error.kind)
                await asyncio.sleep(wait)

    def _retry_wait(self, error: LLMError, attempt: int, time_left: float) -> float | None:
        """Seconds to wait before trying again, or None: give up now."""
        if error.kind not in RETRYABLE or attempt > self.max_retries:
            return None
        # Exponential backoff with jitter, unless the server said how long (then that, bounded).
        wait = error.retry_after if error.retry_after is not None else 0.5 * 2 ** (attempt - 1) * random.uniform(1, 1.5)
        wait = min(wait, MAX_RETRY_WAIT)
        return wait if wait < time_left else None  # no point waiting past the first-token deadline

    async def _attempt(self, messages: list[dict[str, str]], model: str, first_deadline: float) -> AsyncIterator[str | Usage]:
        """One try: open the stream and relay it, every failure as an LLMError."""
        loop = asyncio.get_running_loop()
        deadline = _Deadline(loop, first_deadline)
        try:
            async with deadline:
                response = await self._open(messages, model)
                async with contextlib.aclosing(_events(response)) as events:
                    usage: Usage | None = None
                    async for chunk in events:
                        text, chunk_usage = self._read(chunk)
                        del chunk  # not kept while the next one is awaited: memory per open stream
                        usage = chunk_usage or usage
                        if text:
                            deadline.started = True
                        if deadline.started:  # from the first text on, each chunk has idle_timeout
                            deadline.move(loop.time() + self.idle_timeout)
                        if text:
                            deadline.paused = True
                            yield text
                            deadline.paused = False
                    if usage is not None:
                        deadline.paused = True
                        yield usage
        except TimeoutError:
            if deadline.started:
                detail = f"no data from the model server for {self.idle_timeout} s mid-answer"
            else:
                detail = f"no text from the model server within {self.first_token_timeout} s"
            raise LLMError("timeout", self._message("timeout", deadline.started), detail) from None
        except openai.OpenAIError as error:
            raise self._error(error, deadline.started) from None
        except httpx2.TransportError as error:  # the stream broke after the response began
            kind = "timeout" if isinstance(error, httpx2.TimeoutException) else "connection"
            raise LLMError(kind, self._message(kind, deadline.started), self._scrub(repr(error))) from None
        except ValueError as error:  # a `data:` line that is not JSON
            raise LLMError("malformed", MESSAGES["malformed"], self._scrub(repr(error))) from None

    async def _open(self, messages: list[dict[str, str]], model: str) -> httpx2.Response:
        """Start the stream; a server that rejects `stream_options` gets one retry without it.

        The SDK sends the request (auth, base URL, headers, timeouts, and status errors mapped to
        its exceptions all stay the SDK's) and hands back the raw response, whose events
        _events parses. Two of the SDK's steps are skipped, both measured: building its
        objects for every chunk cost about 0.15 ms a token, more than the rest of the relay; and
        `chat.completions.create` runs the whole history through a type-directed transform on the
        event loop (0.4 ms for 2 messages, 12 ms for 80) that leaves plain text messages as they
        are. `post` is the SDK's documented way to send a request body as given."""

        async def create(**body: Any) -> httpx2.Response:
            return await self._client.post("/chat/completions", body={"stream": True, **body},
                                           cast_to=httpx2.Response, stream=True,
                                           options={"headers": dict.fromkeys(SDK_REQUEST_HEADERS, openai.omit)})

        if self.send_stream_options:
            try:
                return await create(model=model, messages=messages, stream_options={"include_usage": True})
            except openai.BadRequestError as error:
                first = error
        else:
            first = None
        try:
            response = await create(model=model, messages=messages)
        except openai.BadRequestError:
            if first is not None:
                raise first from None  # the same 400 either way: report the original request's
            raise
        if first is not None:
            log.info("%s rejected stream_options; not sending it again (%s)", self.label, self._scrub(str(first)))
            self.send_stream_options = False
        return response

    def _read(self, chunk: Any) -> tuple[str, Usage | None]:
        """The text and the usage in one chunk (a parsed `data:` line)."""
        if isinstance(chunk, dict) and "error" in chunk:  # an error sent inside the stream
            raise LLMError("server", MESSAGES["server"], self._scrub(f"error in the stream: {chunk['error']!r}"))
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if not isinstance(choices, list):
            raise LLMError("malformed", MESSAGES["malformed"], self._scrub(f"chunk without choices: {chunk!r}"))
        usage = chunk.get("usage")
        found = None
        if isinstance(usage, dict):
            found = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        if not choices:  # the usage chunk, or a filter-results chunk (Azure)
            return "", found
        delta = choices[0].get("delta") if isinstance(choices[0], dict) else None
        content = delta.get("content") if isinstance(delta, dict) else None
        if content is not None and not isinstance(content, str):
            raise LLMError("malformed", MESSAGES["malformed"], self._scrub(f"content is not text: {chunk!r}"))
        return content or "", found

    def _message(self, kind: str, started: bool) -> str:
        if started and kind in CUT_SHORT:
            return CUT_SHORT[kind]
        return MESSAGES[kind].format(model=self.model)

    def _error(self, error: openai.OpenAIError, started: bool) -> LLMError:
        kind = kind_of(error)
        detail = f"{type(error).__name__}: {error}"
        if isinstance(error, openai.APIStatusError):
            detail += f" (status {error.status_code}, request id {error.request_id}, body {error.body!r})"
        cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        if cause is not None:
            detail += f"; caused by {cause!r}"
        return LLMError(kind, self._message(kind, started), self._scrub(detail), retry_after(error))

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if self._secret else text


class _Deadline:
    """asyncio.timeout for a deadline that moves with every chunk, without a new timer per chunk.

    Moving the deadline later only notes the time. The one timer, when it fires, sets itself again
    for the new deadline if the stream moved on meanwhile, and otherwise trips the timeout
    (TimeoutError as the block exits, as with asyncio.timeout). A new timer per chunk cost more
    than parsing the chunk. While the caller holds a piece (`paused`, set around each yield), the
    time is the caller's, not the model server's: the timeout does not trip then."""

    RECHECK = 0.5  # seconds: how soon to look again when the deadline passed during a pause

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self.when = when
        self.started = False  # the first text has arrived (the caller says so)
        self.paused = False  # the caller holds a piece (the time is not the model server's)
        self._loop = loop
        self._timeout = asyncio.timeout(None)
        self._timer: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> _Deadline:
        await self._timeout.__aenter__()
        self._timer = self._loop.call_at(self.when, self._check)
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        self._timer.cancel()
        return await self._timeout.__aexit__(*exc_info)

    def move(self, when: float) -> None:
        self.when = when
        if when < self._timer.when():  # earlier than the timer: it must go off sooner
            self._timer.cancel()
            self._timer = self._loop.call_at(when, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        if now < self.when:
            self._timer = self._loop.call_at(self.when, self._check)
        elif self.paused:
            self._timer = self._loop.call_at(now + self.RECHECK, self._check)
        else:
            self._timeout.reschedule(now)


# An event bigger than any Chat Completions chunk: the stream is broken (or hostile), not slow.
MAX_EVENT_BYTES = 1 << 20


async def _events(response: httpx2.Response) -> AsyncIterator[Any]:
    """The JSON of each event of an OpenAI-style event stream, until `[DONE]`. The response is
    closed however this ends, so the model server stops generating when we stop reading."""
    try:
        lines = _EventReader()
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


async def _body(response: httpx2.Response) -> AsyncIterator[bytes]:
    """The response body as it arrives. Without a content encoding (the usual case for an event
    stream) it comes straight from the transport, as the SDK's own drain reads it, past httpx2's
    decoding and re-chunking layers: 31-33 instead of 36 µs a token (bench/read_floor.py 50)."""
    if response.headers.get("content-encoding", "identity") != "identity":
        async for data in response.aiter_bytes():
            yield data
        return
    async for data in response.stream:
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


class _EventReader:
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


def make_provider(*, api_key: str | None, base_url: str | None, model: str, connect_timeout: float,
                  first_token_timeout: float, idle_timeout: float, max_retries: int = 2,
                  demo_delay: float = 0.02) -> Provider:
    """No key and no base URL → the offline demo; otherwise the OpenAI-compatible server."""
    if not api_key and not base_url:
        from chatapp.llm_demo import DemoProvider

        return DemoProvider(delay=demo_delay)
    return OpenAIProvider(api_key=api_key or PLACEHOLDER_KEY, base_url=base_url, model=model,
                          connect_timeout=connect_timeout, first_token_timeout=first_token_timeout,
                          idle_timeout=idle_timeout, max_retries=max_retries)
