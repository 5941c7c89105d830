"""How much one browser, one address, and the whole app may ask of the model.

Checked before anything is stored or sent upstream:
- rate limits on sending (per browser session and per client address): fixed windows counted in
  the database, so every worker sees the same counts;
- sign-in attempts: a back-off that doubles with each failure, per address, or per browser that
  has signed in before (so a guesser behind the same address does not lock the team out);
- answers streaming at once: per browser session (places claimed in the database, so across
  workers, counted and taken in one transaction) and per server process (in memory: it is about
  this process's load);
- optional daily token budgets, per session and for the app, so a leaked link cannot run up the
  key's bill (from the usage ledger, which deleting conversations does not touch).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from .config import Config, parse_rate
from .errors import Refused
from .storage import Store

log = logging.getLogger(__name__)

TOO_FAST = "You are sending messages too quickly. Wait a little, then try again."
# Seconds between two "still alive" marks of this process (storage.WRITER_SILENCE is how long a
# silence means it died); also how soon a Stop asked on another process reaches this one.
HEARTBEAT = 0.5


class OverLimit(Refused):
    """Refused for now: too many, too fast, or too much today."""

    status = 429


class StreamSlot:
    """One answer's place among those this process streams at once, and among its owner's (a
    row in the database, `id`); given back exactly once. It knows the task writing the answer,
    so a server that stops, or a deleted conversation, can end it properly."""

    def __init__(self, quota: Quota, owner: str, store: Store):
        self._quota, self._store, self._held = quota, store, True
        self.id, self.owner = secrets.token_urlsafe(12), owner
        self.conversation_id: str | None = None  # known once the request is checked
        self.message_id: int | None = None  # the answer's, once the turn has started
        self.task = asyncio.current_task()  # the request's task, which also writes its response
        self.interrupted = False  # set when the server stops before the answer is done
        self.claimed = False  # the owner's place is held in the database
        quota.slots.add(self)

    def release(self) -> None:
        if self._held:
            self._held = False
            self._quota.slots.discard(self)
            if self.claimed:  # the answer never saved (which gives the place back): give it back here
                self._quota.run_to_end(self._store.release_stream(self.id))

    def settle_if_unused(self, settle: Callable[[], Awaitable[object]]) -> None:
        """If the request ends while the answer still holds its slot (the client left before the
        response started), `settle()` ends the answer: saves it as stopped, rather than leave it
        marked as streaming, and stops the model."""

        def request_done(_: asyncio.Task) -> None:
            if self._held:  # settle() gives the slot back once the answer is saved
                ending = self._quota.run_to_end(settle())
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

    def run_to_end(self, work: Awaitable[object]) -> asyncio.Future:
        """Run `work` apart from the request that started it, kept until it is done."""
        ending = asyncio.ensure_future(work)
        self.endings.add(ending)
        ending.add_done_callback(self.endings.discard)
        return ending

    async def keep_alive(self, store: Store) -> None:
        """Runs while the app serves. Twice a second, says this process is alive (so that its
        answers are not taken for abandoned ones, and a killed process's are, at once) and stops
        the answers someone asked to stop on another process. Every third of the silence limit,
        marks its answers as still being written (their places, and their messages), and frees
        the places of processes that died."""
        last_kept = time.monotonic()
        while True:
            await asyncio.sleep(min(HEARTBEAT, self._config.silence_limit / 3))
            try:
                self.stop_answers(await store.heartbeat())
                if time.monotonic() - last_kept >= self._config.silence_limit / 3:
                    last_kept = time.monotonic()
                    live = [slot for slot in self.slots if slot.claimed]
                    await store.keep_alive([slot.id for slot in live],
                                           [slot.message_id for slot in live if slot.message_id is not None],
                                           silent_for=self._config.silence_limit)
            except Exception:  # a busy or failing database: try again next time, keep running
                log.exception("could not mark the answers being written as alive")

    def stop_answers(self, message_ids: list[int]) -> bool:
        """End the answers with these ids that this process is writing, as a client leaving
        would (each saves what it has, as stopped); whether there was one."""
        stopping = {slot.message_id: slot.task for slot in self.slots if slot.message_id in message_ids}
        for message_id, task in stopping.items():
            log.info("stopping an answer on request message_id=%s", message_id)
            if task is not None:
                task.cancel()
        return bool(stopping)

    async def stop_answers_in(self, conversation_id: str, owner: str, timeout: float = 5.0) -> None:
        """End the answers this process is writing in the conversation, and wait (a little) until
        each is saved, with its tokens counted, before the conversation is deleted. (An answer
        written by another process stops by itself within a second: saving finds it gone.)"""
        await self._end([slot for slot in self.slots if slot.conversation_id == conversation_id
                         and slot.owner == owner], timeout)

    async def interrupt_all(self, timeout: float = 5.0) -> None:
        """At shutdown, before the database closes: end every answer still streaming, and wait
        (a little) for each to save what it has."""
        for slot in self.slots:
            slot.interrupted = True
        await self._end(list(self.slots), timeout)

    async def _end(self, slots: list[StreamSlot], timeout: float) -> None:
        """Cancel the answers holding `slots`; wait up to `timeout` seconds until each has saved
        what it has (which gives its slot back)."""
        for slot in slots:
            if slot.task is not None:
                slot.task.cancel()
        deadline = time.monotonic() + timeout
        while any(slot in self.slots for slot in slots) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def check_send(self, owner: str, address: str | None, store: Store, *,
                         daily_tokens: int | None = None) -> StreamSlot:
        """Refuse (OverLimit) or hold a stream slot for one more answer. `owner` is a browser's or a
        person's; `address` is None for a person signed in (a team behind one office address is
        limited per person, not as one); `daily_tokens` is the owner's own budget, if an admin set
        one, instead of the operator's default."""
        await _hit(store, self._config.rate_limit_per_session, f"send:session:{owner}", TOO_FAST)
        if address is not None:
            await _hit(store, self._config.rate_limit_per_address, f"send:address:{address}", TOO_FAST)
        await self._check_budget(owner, store, daily_tokens)
        if self.streaming >= self._config.max_streams:
            raise OverLimit("The server is busy right now. Please try again in a moment.", retry_after=5,
                            status=503)
        slot = StreamSlot(self, owner, store)  # this process's place, taken before any await
        try:
            slot.claimed = await store.claim_stream(slot.id, owner, most=self._config.max_streams_per_session,
                                                    silent_for=self._config.silence_limit)
        except BaseException:
            # Cancelled (the client left) while the claim ran, which goes on without us: it may be
            # taken all the same, so release() gives it back either way.
            slot.claimed = True
            slot.release()
            raise
        if not slot.claimed:
            slot.release()
            raise OverLimit(
                "You already have an answer being written. Wait for it to finish, then send again.",
                retry_after=5,
            )
        return slot

    async def check_sign_up(self, address: str, store: Store) -> None:
        """Open sign-up: at most SIGN_UPS new accounts an hour from one address (a stranger
        cannot fill the database with people)."""
        await _hit(store, SIGN_UPS, f"sign-up:address:{address}",
                   "Too many accounts were made from here in the last hour. Try again later.")

    async def take_sign_in_attempt(self, key: str, store: Store) -> None:
        """Count a sign-in attempt from `key` (an address, or a browser known to have signed in) as
        a failure until it proves right (`sign_in_succeeded`), or refuse it while the back-off since
        the last failure runs: the login rate's count of failures is free, then each failure
        doubles the wait, from the rate's period up to a day."""
        free, period = parse_rate(self._config.login_rate_limit)

        def wait_after(failures: int) -> float:
            return 0 if failures < free else min(period * 2 ** (failures - free), DAY)

        waiting = await store.take_sign_in_attempt(key, wait_after, forget_before=time.time() - DAY)
        if waiting > 0:
            retry_after = math.ceil(waiting)
            raise OverLimit(f"Too many sign-in attempts. Wait {_duration(retry_after)}, then try again.",
                            retry_after=retry_after)

    async def _check_budget(self, owner: str, store: Store, daily_tokens: int | None) -> None:
        # A person's own budget, if an admin set one (0, like the operator's, means no limit).
        per_session = self._config.daily_tokens_per_session if daily_tokens is None else daily_tokens
        whole_app = self._config.daily_tokens
        if not per_session and not whole_app:
            return
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        retry_after = math.ceil((today + timedelta(days=1) - datetime.now(UTC)).total_seconds())
        if per_session and await store.tokens_used_on(today.date(), owner) >= per_session:
            raise OverLimit(
                f"You have used today's allowance of {per_session:,} tokens. It renews at midnight UTC.",
                retry_after=retry_after,
            )
        if whole_app and await store.tokens_used_on(today.date()) >= whole_app:
            raise OverLimit(
                "This app has used its allowance of tokens for today. It renews at midnight UTC.",
                retry_after=retry_after,
            )


DAY = 86400
SIGN_UPS = "10/hour"


def _duration(seconds: int) -> str:
    """"about 3 minutes", for a person."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        # From 59.5 minutes on, "about 1 hour" rather than "about 60 minutes".
        if seconds >= size - (size // 120 if unit == "hour" else 0):
            count = round(seconds / size)
            return f"about {count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


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
