"""Checking what a person typed before it is stored or sent to the model."""

from __future__ import annotations

import re

# Control characters other than tab and newline (and carriage return, which is folded below):
# invisible, and NUL in particular breaks tools downstream.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class InvalidMessage(ValueError):
    """The message cannot be sent; `message` says why, for a person; `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def clean_message(raw: str | None, *, max_chars: int) -> str:
    """Line endings made `\\n`, control characters removed, outer whitespace trimmed, length checked."""
    text = _CONTROL.sub("", (raw or "").replace("\r\n", "\n").replace("\r", "\n")).strip()
    if not text:
        raise InvalidMessage("Please type a message before sending.")
    if len(text) > max_chars:
        raise InvalidMessage(
            f"Your message is {len(text):,} characters long; the limit is {max_chars:,}. "
            "Shorten it and send it again."
        )
    return text
