"""How much one browser, one address, and the whole app may ask of the model.

Checked before anything is stored or sent upstream:
- rate limits on sending (per browser session and per client address) and on sign-in attempts:
  fixed windows counted in the database, so every worker sees the same counts;
- answers streaming at once: per browser session (counted in the database, so across workers)
  and per server process (in memory: it is about this process's load);
- optional daily token budgets, per session and for the app, so a leaked link cannot run up the
  key's bill (summed from the database, too).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from .config import Config, parse_rate
from .errors import Refused
from .storage import Store

TOO_FAST = "You are sending messages too quickly. Wait a little, then try again."


class OverLimit(Refused):
    """Refused for now: too many, too fast, or too much today."""

    status = 429


class StreamSlot:
    """One answer's place among those this process streams at once; given back exactly once.
    It knows the task writing the answer, so a server that stops can end it properly."""

    def __init__(self, quota: Quota):
        self._quota, self._held = quota, True
        self.task = asyncio.current_task()  # the request's task, which also writes its response
        self.interrupted = False  # set when the server stops before the answer is done
        quota.slots.add(self)

    def release(self) -> None:
        if self._held:
            self._held = False
            self._quota.slots.discard(self)

    def settle_if_unused(self, settle: Callable[[], Awaitable[object]]) -> None:
        """If the request ends while the answer still holds its slot (the client left before the
        response started), `settle()` ends the answer: saves it as stopped, rather than leave it
        marked as streaming, and stops the model."""

        def request_done(_: asyncio.Task) -> None:
            if self._held:  # settle() gives the slot back once the answer is saved
                ending = asyncio.ensure_future(settle())
                self._quota.endings.add(ending)
                ending.add_done_callback(self._quota.endings.discard)
                ending.add_done_callback(lambda _: self.release())  # however settle() ended

        if self.task is not None:
            self.task.add_done_callback(request_done)


class Quota:
    def __init__(self, config: Config):
        self._config = config
        self.slots: set[StreamSlot] = set()  # answers this process is streaming now
        self.endings: set[asyncio.Future] = set()  # answers being ended after their request ended

    @property
    def streaming(self) -> int:
        return len(self.slots)

    async def interrupt_all(self, timeout: float = 5.0) -> None:
        """At shutdown, before the database closes: end every answer still streaming, and wait
        (a little) for each to save what it has."""
        for slot in list(self.slots):
            slot.interrupted = True
            if slot.task is not None:
                slot.task.cancel()
        deadline = time.monotonic() + timeout
        while self.slots and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def check_send(self, owner: str, address: str, store: Store) -> StreamSlot:
        """Refuse (OverLimit) or hold a stream slot for one more answer."""
        await _hit(store, self._config.rate_limit_per_session, f"send:session:{owner}", TOO_FAST)
        await _hit(store, self._config.rate_limit_per_address, f"send:address:{address}", TOO_FAST)
        await self._check_budget(owner, store)
        since = datetime.now(UTC) - timedelta(seconds=self._config.silence_limit)
        if await store.answers_streaming(owner, since) >= self._config.max_streams_per_session:
            raise OverLimit(
                "You already have an answer being written. Wait for it to finish, then send again.",
                retry_after=5,
            )
        if self.streaming >= self._config.max_streams:
            raise OverLimit("The server is busy right now. Please try again in a moment.", retry_after=5,
                            status=503)
        return StreamSlot(self)

    async def check_login(self, address: str, store: Store) -> None:
        await _hit(store, self._config.login_rate_limit, f"login:{address}",
                   "Too many sign-in attempts. Wait a minute, then try again.")

    async def _check_budget(self, owner: str, store: Store) -> None:
        per_session, whole_app = self._config.daily_tokens_per_session, self._config.daily_tokens
        if not per_session and not whole_app:
            return
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        retry_after = math.ceil((today + timedelta(days=1) - datetime.now(UTC)).total_seconds())
        if per_session and await store.tokens_used_since(today, owner) >= per_session:
            raise OverLimit(
                f"You have used today's allowance of {per_session:,} tokens. It renews at midnight UTC.",
                retry_after=retry_after,
            )
        if whole_app and await store.tokens_used_since(today) >= whole_app:
            raise OverLimit(
                "This app has used its allowance of tokens for today. It renews at midnight UTC.",
                retry_after=retry_after,
            )


async def _hit(store: Store, rate: str | None, key: str, message: str) -> None:
    """Count a request against a "count/period" rate; refuse it past the count."""
    if rate is None:
        return
    count, period = parse_rate(rate)
    now = time.time()
    window = int(now // period)
    ends = (window + 1) * period
    if await store.hit(f"{key}:{period}", window, ends) > count:
        raise OverLimit(message, retry_after=max(1, math.ceil(ends - now)))
