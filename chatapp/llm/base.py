"""What every model provider is: a stream of text pieces, then at most one `Usage` (and, before the
first piece, a `Retrying` notice for each try that failed). A provider raises one error family,
`LLMError` (errors.py), whose message is written for the person at the keyboard.

Consume a stream with `contextlib.aclosing` (or let the task be cancelled): leaving the generator
closes the upstream HTTP response, so the model server stops generating too.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

T_co = TypeVar("T_co", covariant=True)


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

    def stream(self, messages: list[dict[str, str]], model: str | None = None) -> Stream[str | Usage | Retrying]: ...

    async def check(self) -> None: ...  # raises LLMError if the model server cannot be reached

    async def aclose(self) -> None: ...
