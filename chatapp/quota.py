"""How much one browser, one address, and the whole app may ask of the model.

Three guards, checked before anything is stored or sent upstream:
- rate limits on sending (per browser session and per client address) and on login attempts,
  with the `limits` library's moving windows;
- caps on answers streaming at once, per session and for the whole process;
- optional daily token budgets, per session and for the app, so a leaked link cannot run up the
  key's bill. Usage is read from the database, so every worker sees the same spending.

Rate-limit windows and stream counts live in this process's memory: with several workers each
enforces its own share (a shared store such as Redis is the step past one machine).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import limits
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from .config import Config
from .errors import Refused
from .storage import Store


class OverLimit(Refused):
    """Refused for now: too many, too fast, or too much today."""

    status = 429


class StreamSlot:
    """One answer's place among those streaming at once; released exactly once."""

    def __init__(self, counts: Counter[str], owner: str):
        self._counts, self._owner, self._held = counts, owner, True
        counts[owner] += 1
        counts[""] += 1  # "" counts them all

    def release(self) -> None:
        if self._held:
            self._held = False
            for key in (self._owner, ""):
                self._counts[key] -= 1
                if self._counts[key] <= 0:
                    del self._counts[key]

    # A response whose body never started (the client left at once) drops its slot unused.
    __del__ = release


class Quota:
    def __init__(self, config: Config):
        self._config = config
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_session = limits.parse(config.rate_limit_per_session) if config.rate_limit_per_session else None
        self._per_address = limits.parse(config.rate_limit_per_address) if config.rate_limit_per_address else None
        self._login = limits.parse(config.login_rate_limit)
        self._streams: Counter[str] = Counter()

    async def check_send(self, owner: str, address: str, store: Store) -> StreamSlot:
        """Refuse (OverLimit) or hold a stream slot for one more answer."""
        await self._hit(self._per_session, "send-session", owner)
        await self._hit(self._per_address, "send-address", address)
        await self._check_budget(owner, store)
        if self._streams[owner] >= self._config.max_streams_per_session:
            raise OverLimit(
                "You already have an answer being written. Wait for it to finish, then send again.",
                retry_after=5,
            )
        if self._streams[""] >= self._config.max_streams:
            raise OverLimit("The server is busy right now. Please try again in a moment.", retry_after=5,
                            status=503)
        return StreamSlot(self._streams, owner)

    async def check_login(self, address: str) -> None:
        await self._hit(self._login, "login", address, "Too many login attempts. Wait a minute, then try again.")

    @property
    def streaming(self) -> int:
        return self._streams[""]

    async def _hit(self, item: limits.RateLimitItem | None, name: str, who: str,
                   message: str = "You are sending messages too quickly. Wait a little, then try again.") -> None:
        if item is None or await self._limiter.hit(item, name, who):
            return
        reset_at, _ = await self._limiter.get_window_stats(item, name, who)
        raise OverLimit(message, retry_after=max(1, math.ceil(reset_at - time.time())))

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
