"""Pacing an answer: its text goes out gathered, at most once per interval, not piece by piece.

A model sends a piece (about a token) many times a second. Writing each one out costs a system
call, a trip through Hypercorn and h11, and an update of the page in the browser (where the
worker's CPU goes: bench/profile.py; see docs/benchmarks.md). Gathering what arrives within an
interval (CHATAPP_STREAM_INTERVAL_MS; by default more updates a second than anyone reads) into one
write saves most of that, and the person sees the same text at the same pace. The intervals are the ticks of
one clock for every answer, so answers streaming at once are written in the same turn of the
event loop instead of each waking it on its own.

Reasoning (`Thought` pieces) is text here too: it is paced and gathered the same way, each kind
on its own (a piece of reasoning is never joined with a piece of the answer), in order.

Nothing waits for no reason: the first text after a quiet moment goes at once (so time to the
first token is not paced), whatever is not text (the ending, usage, retry notices) goes at once
after the text before it, and the end of the answer goes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Generic, TypeVar

from .base import Ending, Provider, Retrying, Stream, Thought, Usage

T = TypeVar("T")


class Paced(Generic[T]):
    """`source`'s items, in order, with consecutive text pieces joined so that text is handed on at
    most once per `interval` seconds (on the ticks of a clock shared by every Paced). Text is `str`
    and `Thought`: a run of either is joined into one piece of its kind; everything else is `T`.

    `source` is read in a task of its own, started at once: the request to the model goes out
    while the caller writes the page's first frame, and text gathers while the caller waits.
    Close it with `aclose()` (contextlib.aclosing): that cancels the reading and closes `source`,
    as does cancelling the task that iterates it. An error of `source` is raised here after the
    items that came before it."""

    def __init__(self, source: Stream[str | Thought | T], interval: float) -> None:
        self._source, self._interval = source, interval
        self._loop = asyncio.get_running_loop()
        self._waiting: list[str | Thought | T] = []  # read, not yet handed on
        self._ready: list[str | Thought | T] = []  # to hand on next, in order
        self._urgent = False  # waiting holds something that must not wait: not text, or the end
        self._text_due = self._loop.time()  # text is not handed on before this time
        self._wakeup: asyncio.Future[None] | None = None  # what the caller waits on, if it waits
        self._timed = False  # ... until the text waiting is due (else until anything comes)
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async with contextlib.aclosing(self._source):
                async for item in self._source:
                    self._waiting.append(item)
                    if type(item) is not str and type(item) is not Thought:
                        self._urgent = True
                    if self._urgent or not self._timed:
                        self._ring()
        finally:
            self._urgent = True  # the end, or an error: the caller must look now
            self._ring()

    def _ring(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def __aiter__(self) -> Paced[T]:
        return self

    async def __anext__(self) -> str | Thought | T:
        if not self._ready:
            try:
                await self._gather()
            except asyncio.CancelledError:  # the caller is being cancelled: so is the reading
                await self.aclose()
                raise
            if not self._ready:  # the end
                self._reader.result()  # the source's error, if it had one
                raise StopAsyncIteration
        item = self._ready.pop(0)
        if (type(item) is str or type(item) is Thought) and self._interval:
            # The next tick of a clock shared by every answer, rather than `interval` from now:
            # answers streaming at once then write in the same turn of the event loop, for less CPU
            # a token when streams start apart (measured by bench/load.py --ramp 2; see
            # docs/benchmarks.md, the relay's ramp table).
            self._text_due = (self._loop.time() // self._interval + 1) * self._interval
        return item

    async def _gather(self) -> None:
        """Wait until something may be handed on (or the source has ended), then make it ready."""
        while not (self._waiting and (self._urgent or self._loop.time() >= self._text_due)):
            if self._reader.done():
                return
            self._wakeup = self._loop.create_future()
            self._timed = bool(self._waiting)  # only text, not yet due: more may join it
            timer = self._loop.call_at(self._text_due, self._ring) if self._timed else None
            try:
                await self._wakeup
            finally:
                self._wakeup = None
                if timer is not None:
                    timer.cancel()
        self._ready = _joined(self._waiting)
        self._waiting = []
        self._urgent = self._reader.done()

    async def aclose(self) -> None:
        if not self._reader.done():
            self._reader.cancel()
            await asyncio.wait([self._reader])
        elif not self._reader.cancelled():
            self._reader.exception()  # retrieved (raised by __anext__, or the caller left first)


def _joined(items: list[str | Thought | T]) -> list[str | Thought | T]:
    """Runs of answer text joined into one `str`, runs of reasoning into one `Thought`; everything
    else as it is, in order (so a Thought next to a str stays apart from it)."""
    out: list[str | Thought | T] = []
    run: list[str] = []
    thinking = False  # the run is of Thought pieces (else of str)
    for item in items:
        if type(item) is str:
            if run and thinking:
                out.append(Thought("".join(run)))
                run = []
            thinking = False
            run.append(item)
            continue
        if type(item) is Thought:
            if run and not thinking:
                out.append("".join(run))
                run = []
            thinking = True
            run.append(item.text)
            continue
        if run:
            out.append(Thought("".join(run)) if thinking else "".join(run))
            run = []
        out.append(item)
    if run:
        out.append(Thought("".join(run)) if thinking else "".join(run))
    return out


class PacedProvider:
    """A provider (llm.Provider) whose text comes out paced; everything else is the provider's."""

    def __init__(self, provider: Provider, interval: float) -> None:
        self._provider, self.interval = provider, interval
        self.label, self.is_demo = provider.label, provider.is_demo

    def stream(self, messages: list[dict[str, str]], model: str | None = None) -> Paced[Ending | Usage | Retrying]:
        return Paced(self._provider.stream(messages, model), self.interval)

    async def check(self) -> None:
        await self._provider.check()

    async def models(self) -> list[str]:
        return await self._provider.models()

    async def aclose(self) -> None:
        await self._provider.aclose()
