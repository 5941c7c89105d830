"""Who is asking: the person signed in (identity.py puts them in `g.person`), or else the
anonymous browser session (a signed cookie); its CSRF token; its address."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from datetime import UTC, datetime
from urllib.parse import urlsplit

from quart import g, request, session

from ..accounts import Person
from ..storage import Conversation, new_conversation_id
from . import current


def person() -> Person | None:
    """The person signed in, in the modes that have people (CHATAPP_AUTH accounts, header, oidc)."""
    return g.get("person")


def owner() -> str:
    """Whose conversations, usage and limits these are: the person's, or else this browser's."""
    if (signed_in := person()) is not None:
        _keep_alive()
        return signed_in.owner
    return browser_owner()


def browser_owner() -> str:
    """This browser's own id, whoever is signed in on it (its anonymous conversations belong to it)."""
    if "owner" not in session:
        session["owner"] = secrets.token_urlsafe(18)
    _keep_alive()
    return session["owner"]


def limited_address() -> str | None:
    """The address that sending is limited by: none for a person signed in (a team behind one
    office address is limited per person, not as one address), else the client's."""
    return None if person() is not None else address()


def daily_tokens() -> int | None:
    """The budget an admin set for the person signed in; None: the operator's default."""
    signed_in = person()
    return signed_in.daily_tokens if signed_in is not None else None


async def own_conversation(conversation_id: str) -> Conversation | None:
    """This browser's conversation with that id, or None: another browser's is as missing as one
    that never was (every route with a conversation id asks here)."""
    return await current.store().conversation(conversation_id, owner())


def _keep_alive() -> None:
    """A session in use never runs out: its cookie is signed again the first time it is used each
    day, with its whole lifetime (PERMANENT_SESSION_LIFETIME) ahead of it again. Once a day, not
    on every response: the cookie is sent again only when it changes."""
    today = datetime.now(UTC).date().isoformat()
    if session.get("day") != today:
        session.permanent = True
        session["day"] = today


def address() -> str:
    """The client's address, as limits per address count it: the connecting one, or, on a
    connection from a trusted proxy (CHATAPP_TRUSTED_PROXIES), the one that proxy vouches for
    (proxies.py). An IPv6 address counts as its /64: one subscriber is given all 2^64 of those at
    once, and would otherwise have as many fresh allowances."""
    remote = request.remote_addr or "unknown"
    try:
        parsed = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def start_fresh() -> None:
    """A new identity and token for this browser (at login: no session fixation)."""
    session.clear()
    owner()
    csrf_token()


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def request_trusted(form_token: str | None) -> bool:
    """A state-changing request came from our own page: same origin, and the session's CSRF token in
    the form field or, from htmx, in the X-CSRF-Token header."""
    if not _same_origin():
        return False
    expected = session.get("csrf")
    sent = request.headers.get("X-CSRF-Token") or form_token
    if not (expected and sent):
        return False
    return hmac.compare_digest(expected.encode(), sent.encode())


def _same_origin() -> bool:
    # Browsers say where a request comes from: Sec-Fetch-Site (all current ones), else Origin.
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is not None:
        return urlsplit(origin).netloc == request.host
    return True  # neither header (an old browser or a script): the token alone decides


# How many new, still empty conversations a browser may have open at once (in several tabs).
MAX_DRAFTS = 8


def draft_id(*, fresh: bool = False) -> str:
    """The id a new conversation will get. Kept in the session, so nothing is written to the
    database until its first message is sent, and no one else can claim it."""
    drafts = session.get("drafts", [])
    if fresh or not drafts:
        drafts = [*drafts, new_conversation_id()][-MAX_DRAFTS:]
        session["drafts"] = drafts
    return drafts[-1]


def is_draft(conversation_id: str) -> bool:
    return conversation_id in session.get("drafts", [])


def forget_draft(conversation_id: str) -> None:
    """A deleted conversation's id is no draft either: it is not offered again. (A draft's id
    stays in the session once its first message is stored: is_draft is asked only of ids with no
    conversation of this browser's, and so sending a new conversation's first message does not
    sign the session cookie again.)"""
    drafts = session.get("drafts", [])
    if conversation_id in drafts:
        session["drafts"] = [d for d in drafts if d != conversation_id]
