"""Pacing an answer: its text goes out gathered, at most once per interval, not piece by piece.

A model sends a piece (about a token) every 10 to 30 ms. Writing each one out costs a system call
and a trip through the HTTP stack (together about 70 µs of CPU on a small server, more than
everything else done per token) and an update of the page in the browser. Gathering what arrives
within an interval (50 ms: 20 updates a second, faster than anyone reads) into one write saves
most of that, and the person sees the same text at the same pace.

Nothing waits for no reason: the first text after a quiet moment goes at once (so time to the
first token is not paced), whatever is not text (usage, retry notices) goes at once after the text
before it, and the end of the answer goes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")


async def paced(source: AsyncIterator[str | T], interval: float) -> AsyncIterator[str | T]:
    """`source`'s items, in order, with consecutive text pieces joined so that text is handed on
    at most once per `interval` seconds. `source` is read in a task of its own (so text can be
    gathered while the caller waits); closing this generator cancels that task and closes
    `source`, and an error of `source` is raised here after the items before it."""
    loop = asyncio.get_running_loop()
    waiting: list[str | T] = []
    arrived = asyncio.Event()

    async def read() -> None:
        try:
            async with contextlib.aclosing(source):
                async for item in source:
                    waiting.append(item)
                    arrived.set()
        finally:
            arrived.set()  # the end, or an error: the writer must look

    reader = asyncio.ensure_future(read())
    text_due = loop.time()  # text is not handed on before this time
    try:
        while True:
            await arrived.wait()
            if not reader.done() and all(type(item) is str for item in waiting):
                delay = text_due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)  # more text may come meanwhile: it goes together
            arrived.clear()
            items = waiting[:]
            waiting.clear()
            for item in _joined(items):
                if type(item) is str:
                    text_due = loop.time() + interval
                yield item
            if reader.done() and not waiting:
                reader.result()  # the source's error, if it had one
                return
    finally:
        if not reader.done():
            reader.cancel()
            await asyncio.wait([reader])
        elif not reader.cancelled():
            reader.exception()  # retrieved (raised above, or the caller left first)


def _joined(items: list[str | T]) -> list[str | T]:
    """Runs of text joined into one piece; everything else as it is, in order."""
    out: list[str | T] = []
    run: list[str] = []
    for item in items:
        if type(item) is str:
            run.append(item)
            continue
        if run:
            out.append("".join(run))
            run = []
        out.append(item)
    if run:
        out.append("".join(run))
    return out


class PacedProvider:
    """A provider (llm.Provider) whose text comes out paced; everything else is the provider's."""

    def __init__(self, provider, interval: float) -> None:
        self._provider, self.interval = provider, interval
        self.label, self.is_demo = provider.label, provider.is_demo

    def stream(self, messages: list[dict[str, str]], model: str | None = None) -> AsyncIterator[object]:
        return paced(self._provider.stream(messages, model), self.interval)

    async def check(self) -> None:
        await self._provider.check()

    async def aclose(self) -> None:
        await self._provider.aclose()
