"""Passwords: hashed with argon2id (argon2-cffi, whose comparison is constant-time), with the
library's parameters (RFC 9106's low-memory choice: 3 passes over 64 MiB, 4 lanes) unless the
caller gives others. A hash made with older parameters verifies still and `needs_rehash` says so,
so that sign-in can store a new one.

A hash takes a fifth of a second or more of CPU, and 64 MiB: it runs on a thread, off the event loop,
and only a few run at once (a semaphore), so that a flood of sign-ins queues behind them instead
of starving the answers being streamed or the memory.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

T = TypeVar("T")

MIN_LENGTH = 12
MAX_LENGTH = 1024  # a form field, not a file: longer is a mistake or an attack


def problem(password: str, name: str = "") -> str | None:
    """What is wrong with `password` as a new password (for the person called `name`), in one
    sentence written for them; None if nothing. Length is what makes a password hard to guess
    (NIST SP 800-63B): no rules of character classes."""
    if not password.strip():
        return "The password is empty."
    if len(password) < MIN_LENGTH:
        return f"A password needs at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"A password can have at most {MAX_LENGTH} characters."
    if len(set(password)) == 1:
        return "A password of one character repeated is too easy to guess."
    if name and password.casefold() == name.strip().casefold():
        return "A password cannot be the name it signs in."
    return None


def _default_at_once() -> int:
    # Each hash already uses several lanes: half the CPUs at most, so the event loop keeps one.
    return max(1, (os.cpu_count() or 2) // 2)


class Passwords:
    """Hashes and checks passwords, off the event loop, `at_once` at most at a time."""

    def __init__(self, hasher: PasswordHasher | None = None, *, at_once: int | None = None):
        self.hasher = hasher or PasswordHasher()
        self.at_once = at_once or _default_at_once()
        self._slots = asyncio.Semaphore(self.at_once)
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        return await self._off_loop(self.hasher.hash, password)

    async def verify(self, hashed: str | None, password: str) -> bool:
        """Whether `password` is the one `hashed` was made from. With no hash (a name nobody has,
        a person who signs in elsewhere), it is checked against a dummy hash made with the same
        parameters, and False: both answers take the time of one verification."""
        dummy = await self._dummy_hash()  # made before either kind of check: the first costs the same
        if hashed is None:
            await self._off_loop(self._verify, dummy, password)
            return False
        return await self._off_loop(self._verify, hashed, password)

    def needs_rehash(self, hashed: str) -> bool:
        """Whether `hashed` was made with other parameters than this hasher's."""
        return self.hasher.check_needs_rehash(hashed)

    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return self.hasher.verify(hashed, password)
        except (VerificationError, InvalidHashError):  # a wrong password, or a hash that is none
            return False

    async def _dummy_hash(self) -> str:
        if self._dummy is None:
            dummy = await self.hash(secrets.token_urlsafe(16))
            self._dummy = self._dummy or dummy  # two first calls at once: keep one
        return self._dummy

    async def _off_loop(self, work: Callable[..., T], *args: str) -> T:
        """Run `work` on a thread, holding a slot until it ends: a caller that leaves (a client
        gone mid-sign-in) does not free its slot while its hash still runs."""
        async with self._slots:
            running = asyncio.ensure_future(asyncio.to_thread(work, *args))
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                await asyncio.wait([running])
                raise
