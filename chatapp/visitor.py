"""Who is asking: the anonymous browser session (a signed cookie) and its CSRF token."""

from __future__ import annotations

import hmac
import secrets

from quart import request, session

from .storage import new_conversation_id


def owner() -> str:
    """This browser's id; conversations belong to it."""
    if "owner" not in session:
        session["owner"] = secrets.token_urlsafe(18)
    return session["owner"]


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def csrf_ok(form_token: str | None) -> bool:
    """The token must come back in the form field or, from htmx, in the X-CSRF-Token header."""
    expected = session.get("csrf")
    sent = request.headers.get("X-CSRF-Token") or form_token
    return bool(expected and sent) and hmac.compare_digest(expected, sent)


def draft_id(*, fresh: bool = False) -> str:
    """The id the next new conversation will get. Kept in the session, so nothing is written
    to the database until the first message is sent, and no one else can claim it."""
    if fresh or "draft" not in session:
        session["draft"] = new_conversation_id()
    return session["draft"]


def is_draft(conversation_id: str) -> bool:
    return session.get("draft") == conversation_id
