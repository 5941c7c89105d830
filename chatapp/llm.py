"""The model boundary: the only module that knows the `openai` SDK.

A provider streams a reply as text pieces, then at most one `Usage`, and raises one error family,
`LLMError`, whose message is written for the person at the keyboard; details are for the log.

Consume a stream with `contextlib.aclosing` (or let the task be cancelled): leaving the generator
closes the upstream HTTP response, so the model server stops generating too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import openai

log = logging.getLogger(__name__)

# Local servers (Ollama, llama.cpp, vLLM) ignore the key, but the SDK insists on one.
PLACEHOLDER_KEY = "no-key-needed"


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


class LLMError(Exception):
    """Anything that went wrong talking to the model. `str(e)` is for the person; `detail` for the log."""

    def __init__(self, kind: str, user_message: str, detail: str = "") -> None:
        super().__init__(user_message)
        self.kind = kind
        self.user_message = user_message
        self.detail = detail

    def __repr__(self) -> str:
        return f"LLMError(kind={self.kind!r}, user_message={self.user_message!r}, detail={self.detail!r})"


class Provider(Protocol):
    label: str
    is_demo: bool

    def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str | Usage]: ...

    async def aclose(self) -> None: ...


MESSAGES = {
    "auth": "The model server refused our API key. An administrator needs to check OPENAI_API_KEY.",
    "not_found": "The model server does not know the model “{model}”. An administrator needs to check "
                 "OPENAI_MODEL.",
    "bad_request": "The model server rejected this request, perhaps because the conversation is too "
                   "long. Try starting a new chat.",
    "rate_limit": "The model server is busy; try again in a minute.",
    "server": "The model server had a problem answering; try again in a moment.",
    "connection": "Could not reach the model server. Check that it is running and that OPENAI_BASE_URL "
                  "is right.",
    "timeout": "The model server took too long to answer; try again in a moment.",
    "malformed": "The model server sent a reply this app could not understand.",
}
# Once text has been shown, a failure means the answer was cut short, not that nothing came.
CUT_SHORT = {
    "connection": "The connection to the model server broke off before the answer was finished; "
                  "try again.",
    "timeout": "The model server stopped sending in the middle of the answer; try again.",
}


class OpenAIProvider:
    """Any OpenAI-compatible Chat Completions server, through the official SDK."""

    is_demo = False

    def __init__(self, *, api_key: str, base_url: str | None, model: str, connect_timeout: float,
                 first_token_timeout: float, idle_timeout: float, max_retries: int = 2) -> None:
        self.label = model
        self.model = model
        self.first_token_timeout = first_token_timeout
        self.idle_timeout = idle_timeout
        self.send_stream_options = True
        self._secret = api_key if api_key != PLACEHOLDER_KEY else ""
        # The SDK's read timeout covers the wait for response headers; the chunk deadlines below
        # are tighter and speak in terms a person understands (first token, then silence).
        read = max(first_token_timeout, idle_timeout)
        try:
            self._client = openai.AsyncOpenAI(
                api_key=api_key, base_url=base_url, max_retries=max_retries,
                timeout=openai.Timeout(read, connect=connect_timeout),
            )
        except openai.OpenAIError as error:
            raise LLMError("config", "The model connection is not configured correctly.",
                           self._scrub(repr(error))) from None

    async def aclose(self) -> None:
        await self._client.close()

    async def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str | Usage]:
        started = False
        loop = asyncio.get_running_loop()
        # One deadline from the request to the first text piece (SDK retries included); after
        # that, each chunk must follow the previous one within idle_timeout.
        first_deadline = loop.time() + self.first_token_timeout
        try:
            async with self._deadline(first_deadline, started):
                chunks = await self._open(messages)
            async with chunks:
                usage: Usage | None = None
                while True:
                    when = loop.time() + self.idle_timeout if started else first_deadline
                    try:
                        async with self._deadline(when, started):
                            chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    text, chunk_usage = self._read(chunk)
                    usage = chunk_usage or usage
                    if text:
                        started = True
                        yield text
                if usage is not None:
                    yield usage
        except openai.OpenAIError as error:
            raise self._error(error, started) from None
        except ValueError as error:  # the SDK's json.loads of a `data:` line that is not JSON
            raise LLMError("malformed", MESSAGES["malformed"], self._scrub(repr(error))) from None

    @contextlib.asynccontextmanager
    async def _deadline(self, when: float, started: bool) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout_at(when):
                yield
        except TimeoutError:
            if started:
                detail = f"no data from the model server for {self.idle_timeout} s mid-answer"
            else:
                detail = f"no text from the model server within {self.first_token_timeout} s"
            raise LLMError("timeout", self._message("timeout", started), detail) from None

    async def _open(self, messages: list[dict[str, str]]) -> Any:
        """Start the stream; a server that rejects `stream_options` gets one retry without it."""
        create = self._client.chat.completions.create
        if self.send_stream_options:
            try:
                return await create(model=self.model, messages=messages, stream=True,
                                    stream_options={"include_usage": True})
            except openai.BadRequestError as error:
                first = error
        else:
            first = None
        try:
            chunks = await create(model=self.model, messages=messages, stream=True)
        except openai.BadRequestError:
            if first is not None:
                raise first from None  # the same 400 either way: report the original request's
            raise
        if first is not None:
            log.info("%s rejected stream_options; not sending it again (%s)", self.label, self._scrub(str(first)))
            self.send_stream_options = False
        return chunks

    def _read(self, chunk: Any) -> tuple[str, Usage | None]:
        choices = getattr(chunk, "choices", None)
        if not isinstance(choices, list):
            raise LLMError("malformed", MESSAGES["malformed"], self._scrub(f"chunk without choices: {chunk!r}"))
        usage = getattr(chunk, "usage", None)
        found = None
        if usage is not None:
            found = Usage(int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0))
        if not choices:  # the usage chunk, or a filter-results chunk (Azure)
            return "", found
        delta = getattr(choices[0], "delta", None)
        content = getattr(delta, "content", None) if delta is not None else None
        if content is not None and not isinstance(content, str):
            raise LLMError("malformed", MESSAGES["malformed"], self._scrub(f"content is not text: {chunk!r}"))
        return content or "", found

    def _message(self, kind: str, started: bool) -> str:
        if started and kind in CUT_SHORT:
            return CUT_SHORT[kind]
        return MESSAGES[kind].format(model=self.model)

    def _error(self, error: openai.OpenAIError, started: bool) -> LLMError:
        kind = _kind(error)
        detail = f"{type(error).__name__}: {error}"
        if isinstance(error, openai.APIStatusError):
            detail += f" (status {error.status_code}, request id {error.request_id}, body {error.body!r})"
        cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        if cause is not None:
            detail += f"; caused by {cause!r}"
        return LLMError(kind, self._message(kind, started), self._scrub(detail))

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if self._secret else text


def _kind(error: openai.OpenAIError) -> str:
    """Sort an SDK exception into one of the kinds a person can act on."""
    if isinstance(error, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return "auth"
    if isinstance(error, openai.NotFoundError):
        return "not_found"
    if isinstance(error, openai.RateLimitError):
        return "rate_limit"
    if isinstance(error, openai.APIResponseValidationError):
        return "malformed"
    if isinstance(error, openai.APIStatusError):
        return "bad_request" if 400 <= error.status_code < 500 and error.status_code != 408 else "server"
    if isinstance(error, openai.APITimeoutError):  # before APIConnectionError: it is a subclass
        return "timeout"
    if isinstance(error, openai.APIConnectionError):
        return "connection"
    return "server"  # an error event inside the stream, or another SDK failure


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
