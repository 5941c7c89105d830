"""Sign-in attempts, counted so that guessing is slow and a guesser cannot lock a team out.

An attempt is counted as a failure before the secret is checked (attempts sent at the same
instant all count), and taken back when it proves right. Who it counts against: a browser that
has signed in before carries a signed "known browser" cookie and is limited on its own; anyone
else is limited per address and, when a name is given, per account too. So a guesser behind the
office's address, or one trying a colleague's name, slows down themselves, not the colleagues
signing in from their own browsers.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer
from quart import current_app, request

from . import current, visitor
from .http import AnyResponse

KNOWN_BROWSER_COOKIE = "chatapp_known"


def stamp(secret: str) -> str:
    """A fingerprint of what a known browser signed in to (a passphrase, or a mode): when it
    changes, browsers known before are strangers again."""
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class Attempt:
    keys: tuple[str, ...]
    known: str | None  # the known browser's id, if it is one


async def take(stamp: str, account: str | None = None) -> Attempt:
    """Count one attempt (raises quota.OverLimit while a back-off runs)."""
    known = _known_browser(stamp)
    if known:
        keys: tuple[str, ...] = (f"browser:{known}",)
    else:
        keys = (f"address:{visitor.address()}",) + ((f"account:{account}",) if account else ())
    for key in keys:
        await current.quota().take_sign_in_attempt(key, current.store())
    return Attempt(keys, known)


async def succeeded(attempt: Attempt, response: AnyResponse, stamp: str) -> None:
    """The attempt was right: it was no failure. A known browser starts afresh; an address or an
    account keeps the failures of whoever else guesses there. The browser is known from now on."""
    for key in attempt.keys:
        await current.store().sign_in_succeeded(key, forget=bool(attempt.known))
    _remember_browser(response, attempt.known or secrets.token_urlsafe(12), stamp)


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="chatapp-known-browser")


def _known_browser(stamp: str) -> str | None:
    """This browser's id if it has signed in before to the same `stamp` (a signed cookie that
    outlives signing out), else None."""
    try:
        known = _serializer().loads(request.cookies.get(KNOWN_BROWSER_COOKIE, ""))
    except BadSignature:
        return None
    if not isinstance(known, dict) or not hmac.compare_digest(str(known.get("gate", "")), stamp):
        return None
    return str(known.get("id", "")) or None


def _remember_browser(response: AnyResponse, browser_id: str, stamp: str) -> None:
    cookie = _serializer().dumps({"id": browser_id, "gate": stamp})
    response.set_cookie(KNOWN_BROWSER_COOKIE, cookie, max_age=int(current_app.permanent_session_lifetime.total_seconds()),
                        httponly=True, samesite="Lax", secure=current_app.config["SESSION_COOKIE_SECURE"])
