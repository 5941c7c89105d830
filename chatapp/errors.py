"""A request refused for a reason the person can act on."""

from __future__ import annotations


class Refused(Exception):
    """`message` is written for the person; `status` is the HTTP status; `retry_after` in seconds."""

    status = 400

    def __init__(self, message: str, *, status: int | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status or self.status
        self.retry_after = retry_after
