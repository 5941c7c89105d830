"""Who is signed in, in the modes where conversations belong to people (CHATAPP_AUTH accounts,
header, oidc); the passphrase mode is gate.py, and `none` needs neither.

Before each request the person is found, and put in `g.person` (visitor.person() reads it): from
the session's id, kept on the server (accounts, oidc), or from the trusted proxy's header (header,
identify_by_header). A disabled person's sessions are deleted, so they are out at their next
request; the answers being written for them stop within a second (Accounts.disable).

A sign-in (start_session) starts a fresh session: a new session id, CSRF token and browser id, so
a session planted before sign-in is worth nothing after it. The browser's anonymous conversations
from before are offered to the person (claim), never moved without asking.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from quart import Quart, current_app, g, redirect, request, session, url_for

from ..accounts import Accounts, Person
from ..config import PEOPLE_MODES, Config
from . import current, visitor
from .http import AnyResponse, error_response, is_htmx

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

# View functions anyone may reach without signing in (marked with @public), besides these
# endpoints: the operators' (metrics has a token of its own) and the static files.
_PUBLIC: set[Callable[..., Any]] = set()
OPEN_ENDPOINTS = {"ops.healthz", "ops.readyz", "ops.metrics_page", "ops.favicon", "static"}

NOT_SIGNED_IN = "You are not signed in. Reload the page and sign in."
ADMINS_ONLY = "This page is for admins only."

# How a mode finds the person of a request without a session (the header mode sets this).
Identify = Callable[[], Awaitable["Person | None | AnyResponse"]]


def public(view: F) -> F:
    """Mark a view as reachable without signing in (a sign-in page, a link's form)."""
    _PUBLIC.add(view)
    return view


def install(app: Quart, config: Config, identify: Identify | None = None) -> None:
    """In the modes with people: find the person before each request; send anyone else to sign in.
    `identify` replaces the session lookup (the header mode names the person on every request)."""
    if config.auth not in PEOPLE_MODES:
        return

    @app.before_serving
    async def _open_accounts() -> None:
        app.extensions["accounts"] = Accounts(current.store().db)

    @app.before_request
    async def _who_is_asking() -> AnyResponse | None:
        if request.endpoint in OPEN_ENDPOINTS:  # static files and health checks: no one to look up
            g.person = None
            return None
        found = await (identify or _session_person)()
        if found is not None and not isinstance(found, Person):
            return found  # a refusal the mode wrote (a header from someone who is not the proxy)
        g.person = found
        if found is not None or _is_public():
            return None
        if is_htmx() or request.method != "GET":
            return await error_response(401, NOT_SIGNED_IN)
        return redirect(sign_in_url(request.full_path if request.query_string else request.path))


def _is_public() -> bool:
    if request.endpoint in OPEN_ENDPOINTS:
        return True
    view = current_app.view_functions.get(request.endpoint or "")
    return view in _PUBLIC


async def _session_person() -> Person | None:
    session_id = session.get("sid")
    if not session_id:
        return None
    lifetime = current_app.permanent_session_lifetime.total_seconds()
    return await current.accounts().session_person(session_id, lifetime=lifetime)


def sign_in_url(next_url: str | None = None) -> str:
    """The sign-in page (account.sign_in_page serves every mode that has one), coming back to
    `next_url` afterwards."""
    if next_url and safe_next(next_url) != "/":
        return url_for("account.sign_in_page", next=safe_next(next_url))
    return url_for("account.sign_in_page")


def safe_next(url: str | None) -> str:
    """Where to go after signing in: a path on this site, never elsewhere (no open redirect).
    `//evil.example`, `/\\evil.example`, `https://…` and anything with a scheme or host become `/`."""
    if not url or not url.startswith("/") or url.startswith(("//", "/\\")):
        return "/"
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or any(c in url for c in "\\\r\n\t") or len(url) > 2000:
        return "/"
    return url


async def start_session(person: Person, *, how: str) -> None:
    """Sign `person` in on this browser: a fresh session (id, CSRF token, browser id), its id kept
    on the server beside the person, the sign-in audited. The browser's anonymous conversations
    from before stay offered to the person (claimable) until they bring them in."""
    accounts = current.accounts()
    claim_from = session.get("claim_from") or session.get("owner")
    if session.get("sid"):  # signing in again, or as someone else: the session it had ends
        await current.store().end_session(session["sid"])
    visitor.start_fresh()
    if claim_from:
        session["claim_from"] = claim_from
    session["sid"] = secrets.token_urlsafe(24)
    session.permanent = True
    await accounts.attach_session(session["sid"], person.id)
    g.person = person
    await accounts.record("sign-in", actor=person.id, address=visitor.address(), detail=how)


async def end_session() -> None:
    """Sign this browser out: its session ends on the server (a copied cookie is worth nothing
    after). The offer of the browser's anonymous conversations outlives it."""
    person, claim_from = visitor.person(), session.get("claim_from")
    if session.get("sid"):
        await current.store().end_session(session["sid"])
    session.clear()
    if claim_from:
        session["claim_from"] = claim_from
    g.person = None
    if person is not None:
        await current.accounts().record("sign-out", actor=person.id, address=visitor.address())


async def claimable() -> int:
    """How many anonymous conversations this browser had before the person signed in."""
    claim_from = session.get("claim_from")
    if not claim_from or visitor.person() is None:
        return 0
    return len(await current.store().conversations(claim_from))


async def claim() -> int:
    """Bring the browser's anonymous conversations into the person's account; how many."""
    claim_from, person = session.pop("claim_from", None), visitor.person()
    if not claim_from or person is None:
        return 0
    return await current.accounts().claim_conversations(claim_from, person.owner)


# Failures a stranger can cause at will (a made-up OpenID callback, a forged header) are audited
# at most this often per address and minute: a flood cannot fill the disk.
AUDITED_FAILURES_A_MINUTE = 10


async def audit_failure(action: str, detail: str, *, target: str | None = None, most: int = AUDITED_FAILURES_A_MINUTE) -> None:
    """Record a failed sign-in (or a forgery) in the audit log, unless this address already had
    `most` recorded this minute (counted with the store's rate-limit counter, shared by every process)."""
    address = visitor.address()
    window = int(time.time() // 60)
    if await current.store().hit(f"audit:{action}:{address}", window, (window + 1) * 60) <= most:
        await current.accounts().record(action, target=target, address=address, detail=detail)


def admin_only(view: F) -> F:
    """A view for admins: anyone else gets a 403 with a sentence (a person not signed in never
    gets here: _who_is_asking sent them to sign in)."""

    @functools.wraps(view)
    async def checked(*args: Any, **kwargs: Any) -> Any:
        person = visitor.person()
        if person is None or not person.is_admin:
            return await error_response(403, ADMINS_ONLY)
        return await view(*args, **kwargs)

    return checked  # type: ignore[return-value]
