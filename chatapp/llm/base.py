"""What every model provider is: a stream of pieces of the answer (`str`) and, before them, of
the model's reasoning (`Thought`), then at most one `Ending` and one `Usage` (and, before the first
piece, a `Retrying` notice for each try that failed). A provider raises one error family,
`LLMError` (errors.py), whose message is written for the person at the keyboard.

The order, exactly: any `Retrying` notices; then `Thought` and `str` pieces as the model sent them
(reasoning usually all first, but a consumer must accept them interleaved); then, once the stream
has ended, the `Ending` if the server said why it stopped, and after it the `Usage` if the server
counted. Nothing follows the `Usage`. A stream that fails raises after the pieces before it, with
no `Ending`. No piece of text is empty.

Consume a stream with `contextlib.aclosing` (or let the task be cancelled): leaving the generator
closes the upstream HTTP response, so the model server stops generating too.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True, slots=True)
class Thought:
    """A piece of the model's reasoning, apart from the answer: from a `reasoning_content` or
    `reasoning` field, or from a `<think>` block at the start of the answer's text."""

    text: str


@dataclass(frozen=True)
class Ending:
    """Why the model stopped, when it says: "stop" (done), "length" (cut at the token limit),
    "content_filter" (withheld by the server's filter), or another server's word."""

    reason: str


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


# What a provider's stream yields.
Piece = str | Thought | Ending | Usage | Retrying


class Stream(AsyncIterable[T_co], Protocol[T_co]):
    """An async iterator that can be closed before its end (contextlib.aclosing): an async
    generator, or a pacing.Paced. (AsyncIterable, not AsyncIterator: only the former may be a
    protocol's base at run time in Python 3.11.)"""

    def __aiter__(self) -> AsyncIterator[T_co]: ...

    async def __anext__(self) -> T_co: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    label: str
    is_demo: bool

    def stream(self, messages: list[dict[str, str]], model: str | None = None) -> Stream[Piece]: ...

    async def check(self) -> None: ...  # raises LLMError if the model server cannot be reached

    async def models(self) -> list[str]: ...  # the ids the server lists ([] if it has no list), or LLMError

    async def aclose(self) -> None: ...
