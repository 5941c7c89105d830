"""Message ids as people see them: opaque, so that they do not count the site's messages.

The database numbers messages 1, 2, 3… across every conversation; shown as they are, two ids a
minute apart would tell anyone how busy the site is. Pages, URLs and exports show instead the
number encrypted under a key derived from SECRET_KEY: a keyed permutation of 64-bit numbers (a
four-round Feistel network over HMAC-SHA256), written as 16 hex digits. It needs no column, no
lookup and no state, and any 16 hex digits that do not decrypt to a stored id are simply no
message. (Changing SECRET_KEY changes every shown id; nothing keeps them.)
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable

from quart import Quart, current_app
from werkzeug.routing import BaseConverter, ValidationError

_HALF = (1 << 32) - 1
_ROUNDS = 4
# Ids SQLite can hold (a signed 64-bit integer, above 0).
_LARGEST = (1 << 63) - 1


class MessageIds:
    def __init__(self, secret: str):
        self.secret = secret
        key = hmac.new(secret.encode(), b"chatapp message ids", hashlib.sha256).digest()
        # Keyed once; each round copies it (a fresh HMAC costs several times more), and a page or a
        # stream's frames name the same few messages many times over: each is worked out once.
        self._mac = hmac.new(key, digestmod=hashlib.sha256)
        self.public = functools.lru_cache(maxsize=4096)(self._public)

    def _round(self, number: int, half: int) -> int:
        mac = self._mac.copy()
        mac.update(bytes([number]) + half.to_bytes(4, "big"))
        return int.from_bytes(mac.digest()[:4], "big")

    def _public(self, message_id: int) -> str:
        left, right = message_id >> 32, message_id & _HALF
        for number in range(_ROUNDS):
            left, right = right, left ^ self._round(number, right)
        return f"{(left << 32) | right:016x}"

    def private(self, shown: str) -> int | None:
        """The database id behind a shown id, or None if it is not one."""
        if len(shown) != 16 or not all(c in "0123456789abcdef" for c in shown):
            return None
        number = int(shown, 16)
        left, right = number >> 32, number & _HALF
        for round_number in reversed(range(_ROUNDS)):
            left, right = right ^ self._round(round_number, left), left
        message_id = (left << 32) | right
        return message_id if 0 < message_id <= _LARGEST else None


def message_ids() -> MessageIds:
    """The app's, for its current SECRET_KEY (which may be set only once the app serves)."""
    return _for_secret(current_app.config["SECRET_KEY"])


@functools.lru_cache(maxsize=8)
def _for_secret(secret: str) -> MessageIds:
    # By the key alone: a template names a few ids a dozen times a frame, and each look-up
    # through current_app costs more than the cached id.
    return MessageIds(secret)


def public_id(message_id: int) -> str:
    return message_ids().public(message_id)


def public_ids_of(app: Quart) -> Callable[[int], str]:
    """public_id for `app`'s templates (the `public` filter): the same ids, read with the app's
    own key rather than looked up through current_app for each one."""

    def public(message_id: int) -> str:
        return _for_secret(app.config["SECRET_KEY"]).public(message_id)

    return public


class MessageIdConverter(BaseConverter):
    """`<message_id:name>` in a route: the shown id in the URL, the database id in the view (and
    a 404 for anything else)."""

    regex = "[0-9a-f]{16}"

    def to_python(self, value: str) -> int:
        message_id = message_ids().private(value)
        if message_id is None:
            raise ValidationError()
        return message_id

    def to_url(self, value: int) -> str:
        return public_id(value)
