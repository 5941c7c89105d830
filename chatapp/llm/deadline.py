"""A deadline that moves with every chunk of a stream, at the cost of one timer."""

from __future__ import annotations

import asyncio
from typing import Any


class Deadline:
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

    async def __aenter__(self) -> Deadline:
        await self._timeout.__aenter__()
        self._timer = self._loop.call_at(self.when, self._check)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self._timeout.__aexit__(*exc_info)  # raises the TimeoutError; never swallows an error

    def move(self, when: float) -> None:
        self.when = when
        if self._timer is None:
            raise RuntimeError("Deadline.move outside its `async with` block")
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
