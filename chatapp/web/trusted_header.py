"""CHATAPP_AUTH=header: a sign-in proxy in front of the app (oauth2-proxy, Authelia, nginx's
auth_basic…) names the person in a header (CHATAPP_AUTH_HEADER, X-Forwarded-User by default).

Anyone can send that header; it is believed only on a connection from a trusted proxy
(CHATAPP_TRUSTED_PROXIES, proxies.py), which must overwrite whatever a client sent in it. From
anyone else it is refused and audited. The person is read again from the database on every
request (one query), so a disabled person is out at their next request.

The browser session still carries the CSRF token, the drafts and the browser's id. It remembers
whom the proxy named: a new name starts it fresh, so nothing of the previous person's carries over,
and that moment is the sign-in the audit log records (not every request).
"""

from __future__ import annotations

import unicodedata

from quart import request, session

from .. import accounts as people
from ..accounts import Person
from . import current, identity, proxies, visitor
from .http import AnyResponse, error_response

MAX_LENGTH = 256
DISABLED = "Your account is disabled. Ask an admin."
# The session key of the person the proxy named last on this browser.
NAMED = "header_person"


async def identify() -> Person | None | AnyResponse:
    """The person the trusted proxy names; None when it names no one (the sign-in page then says
    so); a refusal for a header that did not come through the proxy, or that cannot be read."""
    header = current.config().auth_header
    values = [value.strip() for value in request.headers.getlist(header)]
    if not any(values):  # an empty value names no one (a proxy may send one for "not signed in")
        return None
    if not proxies.from_trusted_proxy(request.scope):
        await _audit_forgery(header, values)
        return await error_response(
            403, f"This request names a person in {header} but did not come through the sign-in proxy.")
    subject = _subject(values)
    if subject is None:
        return await error_response(
            400, f"The sign-in proxy named you in a way chatapp cannot read: {header} must hold one name "
                 f"of 1 to {MAX_LENGTH} characters. Tell whoever runs chatapp.")
    person = await current.accounts().person_for_subject(people.HEADER, subject, name=subject[:people.NAME_LENGTH])
    if person.disabled:
        return await error_response(403, DISABLED)
    await _remember(person)
    return person


def _subject(values: list[str]) -> str | None:
    """The one name in the header's lines, or None: several lines or comma-separated values (a
    proxy that appends rather than overwrites, or a list), control characters, or too long."""
    if len(values) != 1 or "," in values[0]:
        return None
    try:
        # Header values arrive as Latin-1; a proxy passes a name's UTF-8 bytes on as they are.
        value = values[0].encode("latin-1").decode("utf-8")
    except UnicodeError:
        return None
    if not 1 <= len(value) <= MAX_LENGTH:
        return None
    # Cc: control characters; Cf: invisible ones (bidi overrides, zero-width); Cs: lone surrogates.
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in value):
        return None
    return value


async def _remember(person: Person) -> None:
    """A person new to this browser session: a fresh session (new CSRF token, drafts and browser
    id, so neither a planted session nor the previous person's drafts or claim offer carry over),
    and a sign-in in the audit log. The browser's anonymous conversations from before any person
    was named on it stay offered to the first one (claim)."""
    if session.get(NAMED) == person.id:
        return
    previous = session.get(NAMED)
    claim_from = None if previous else session.get("claim_from") or session.get("owner")
    visitor.start_fresh()
    if claim_from:
        session["claim_from"] = claim_from
    session[NAMED] = person.id
    await current.accounts().record("sign-in", actor=person.id, address=visitor.address(),
                                    detail="header" if previous is None else "header, after another person")


async def _audit_forgery(header: str, values: list[str]) -> None:
    """Audit a header from someone who is not the proxy: once a minute per address at most."""
    shown = ", ".join(values)[:80]
    await identity.audit_failure("forged header", f"{header}: {shown!r}", most=1)
