"""Any OpenAI-compatible Chat Completions server, through the official `openai` SDK."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, Callable
from typing import Any

import httpx2
import openai

from .base import Ending, Piece, Retrying, Thought, Usage
from .deadline import Deadline
from .errors import CUT_SHORT, MESSAGES, RETRYABLE, LLMError, kind_of, retry_after
from .thinking import InlineThinking
from .wire import events

log = logging.getLogger(__name__)

# Local servers (Ollama, llama.cpp, vLLM) ignore the key, but the SDK insists on one.
PLACEHOLDER_KEY = "no-key-needed"
# Headers the SDK adds to every request that the model server has no need of: this machine's OS,
# CPU and Python version, and the SDK's own retry state (its retries are off). Left out, each
# answer's request is smaller, and so is what every open stream keeps of it (memory per open stream:
# bench/memory_floor.py; see docs/benchmarks.md).
SDK_TELEMETRY_HEADERS = ("X-Stainless-Lang", "X-Stainless-Package-Version", "X-Stainless-OS", "X-Stainless-Arch",
                         "X-Stainless-Runtime", "X-Stainless-Runtime-Version", "X-Stainless-Async")
SDK_REQUEST_HEADERS = ("X-Stainless-Retry-Count", "X-Stainless-Read-Timeout")
# The longest pause between tries, whatever a Retry-After header asks for.
MAX_RETRY_WAIT = 20.0


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
                # answer through it costs far less CPU than through the default transport
                # (measured by bench/read_floor.py; see docs/benchmarks.md).
                http_client=openai.DefaultAioHttpClient(),
                # The SDK takes Omit in default_headers (and drops the header: its own
                # default_headers property is typed str | Omit), though the parameter says str.
                default_headers=dict.fromkeys(SDK_TELEMETRY_HEADERS, openai.omit),  # type: ignore[arg-type]
            )
        except openai.OpenAIError as error:
            raise LLMError("config", "The model connection is not configured correctly.",
                           self._scrub(repr(error))) from None

    async def aclose(self) -> None:
        await self._client.close()

    async def check(self) -> None:
        """The model server answers (its model list; a server without one still answered)."""
        await self.models()

    async def models(self) -> list[str]:
        """The model ids the server lists (GET /models, its first page), [] for a server without
        the endpoint; an LLMError if it cannot be asked."""
        try:
            listed = await self._client.with_options(timeout=self.connect_timeout, max_retries=0).models.list()
        except openai.NotFoundError:
            return []
        except openai.OpenAIError as error:
            raise self._error(error, False) from None
        return [model.id for model in listed.data if isinstance(model.id, str) and model.id]

    async def stream(self, messages: list[dict[str, str]], model: str | None = None) -> AsyncGenerator[Piece, None]:
        """Reasoning and answer pieces, then the Ending and the Usage if the server sent them (the
        order is base.py's). A busy, failing or unreachable server is tried again (max_retries
        times, with backoff or as long as it asks, within the first-token deadline), but only before
        the first piece of reasoning or answer: after it, a retry would repeat text already shown."""
        loop = asyncio.get_running_loop()
        # One deadline from the request to the first piece, retries included; after that, each
        # chunk must follow the previous one within idle_timeout.
        first_deadline = loop.time() + self.first_token_timeout
        attempt = 1
        while True:
            started = False
            try:
                async with contextlib.aclosing(self._attempt(messages, model or self.model, first_deadline)) as pieces:
                    async for piece in pieces:
                        started = started or type(piece) is str or type(piece) is Thought
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

    async def _attempt(self, messages: list[dict[str, str]], model: str,
                       first_deadline: float) -> AsyncGenerator[str | Thought | Ending | Usage, None]:
        """One try: open the stream and relay it, every failure as an LLMError."""
        loop = asyncio.get_running_loop()
        deadline = Deadline(loop, first_deadline)
        try:
            async with deadline:
                response = await self._open(messages, model)
                reader = Chunks(self._scrub)
                async with contextlib.aclosing(events(response)) as received:
                    async for chunk in received:
                        pieces = reader.read(chunk)
                        del chunk  # not kept while the next one is awaited: memory per open stream
                        # Any text, reasoning or answer (even what the inline splitter holds back
                        # for a moment), is the model's sign of life.
                        if reader.alive:
                            deadline.started = True
                        if deadline.started:  # from the first text on, each chunk has idle_timeout
                            deadline.move(loop.time() + self.idle_timeout)
                        if pieces:
                            deadline.paused = True
                            for piece in pieces:
                                yield piece
                            deadline.paused = False
                    last = reader.finish()
                    if last:
                        deadline.paused = True
                        for end in last:
                            yield end
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
        _events parses. Two of the SDK's steps are skipped: building its objects for every chunk
        cost more CPU than the rest of the relay (bench/direct.py's client builds them, the app
        does not: bench/relay_table.py sets the two side by side; see docs/benchmarks.md); and
        `chat.completions.create` runs the whole history through a type-directed transform on the
        event loop, longer the longer the conversation, that leaves plain text messages as they
        are (no bench times it alone). `post` is the SDK's documented way to send a request body as given."""

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
        text = text.replace("\x00", "\ufffd")  # as in answers (Chunks.read): kept in the log and the database
        return text.replace(self._secret, "[redacted]") if self._secret else text


class Chunks:
    """What one stream's chunks (parsed `data:` events) say, read one at a time.

    `read` gives a chunk's reasoning and answer pieces, in that order: reasoning from
    `delta.reasoning_content` or `delta.reasoning` (one of them: servers that send both send the
    same text twice; OpenRouter's `reasoning_details` repeats it too and is never read), answer
    from `delta.content`, split by InlineThinking while the server has sent no reasoning field. A
    `null`, `""` or missing field is nothing. The last `finish_reason` given and the last usage
    (wherever it comes: a chunk of its own with empty `choices`, a chunk with one empty choice, or
    the finishing chunk) are kept for `finish`, which gives what the splitter held back, then the
    Ending, then the Usage. The work per chunk does not grow with the answer."""

    __slots__ = ("_scrub", "_inline", "alive", "ending", "usage")

    def __init__(self, scrub: Callable[[str], str]) -> None:
        self._scrub = scrub
        self._inline: InlineThinking | None = InlineThinking()  # None: content is answer as it is
        self.alive = False  # the last chunk read carried text (reasoning or answer)
        self.ending: str | None = None
        self.usage: Usage | None = None

    def read(self, chunk: Any) -> list[str | Thought]:
        self.alive = False
        if isinstance(chunk, dict) and "error" in chunk:  # an error sent inside the stream
            raise LLMError("server", MESSAGES["server"], self._scrub(f"error in the stream: {chunk['error']!r}"))
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if not isinstance(choices, list):
            raise LLMError("malformed", MESSAGES["malformed"], self._scrub(f"chunk without choices: {chunk!r}"))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        if not choices:  # the usage chunk, or a filter-results chunk (Azure)
            return []
        choice = choices[0]
        if not isinstance(choice, dict):
            return []
        reason = choice.get("finish_reason")
        if reason and isinstance(reason, str):  # a later chunk's null does not undo it (OpenRouter's usage)
            self.ending = reason
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return []
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            raise LLMError("malformed", MESSAGES["malformed"], self._scrub(f"content is not text: {chunk!r}"))
        thought = delta.get("reasoning_content")
        if thought is None or thought == "":  # one field, never both (they repeat each other)
            thought = delta.get("reasoning")
        if thought is not None and not isinstance(thought, str):
            raise LLMError("malformed", MESSAGES["malformed"], self._scrub(f"reasoning is not text: {chunk!r}"))
        if not thought and not content:
            return []
        # NUL means nothing in text, and PostgreSQL cannot store it: the replacement character
        # shows where the server sent one.
        if content and "\x00" in content:
            content = content.replace("\x00", "\ufffd")
        if thought and "\x00" in thought:
            thought = thought.replace("\x00", "\ufffd")
        self.alive = True
        if content and not thought and self._inline is None:  # the usual chunk: a piece of the answer
            return [content]
        pieces: list[str | Thought] = []
        if thought:
            if self._inline is not None:  # a server that parses reasoning: content is all answer
                pieces += self._inline.finish()
                self._inline = None
            pieces.append(Thought(thought))
        if content:
            if self._inline is None:
                pieces.append(content)
            else:
                pieces += self._inline.feed(content)
                if self._inline.passing:
                    self._inline = None
        return pieces

    def finish(self) -> list[str | Thought | Ending | Usage]:
        """What is left at the end of the stream, in order: held text, the Ending, the Usage."""
        out: list[str | Thought | Ending | Usage] = []
        if self._inline is not None:
            out += self._inline.finish()
            self._inline = None
        if self.ending is not None:
            out.append(Ending(self.ending))
        if self.usage is not None:
            out.append(self.usage)
        return out
