"""People (accounts) in the database, beside the store (chatapp.storage) and written the same way:
`?` placeholders, the same SQL for SQLite and PostgreSQL, transactions as generators.

A person is local (a name and a password), or named by a trusted proxy's header or an OpenID
provider (a `subject`, found or created at each sign-in). Their conversations and usage belong to
`owner_key(person.id)`. Invitation and password-reset links carry 32 random bytes; only their
SHA-256 is stored, so a copy of the database opens no door. Nothing here knows about requests:
the web layer rate-limits, audits what it decides to, and rotates session ids.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from .db import Database, Many, Row, Statement, Transaction, first, run_transaction
from .passwords import Passwords, problem

LOCAL, HEADER, OIDC = "local", "header", "oidc"
NAME_LENGTH = 64
INVITATION_LIFETIME = 7 * 86400.0
RESET_LIFETIME = 86400.0

T = TypeVar("T")
log = logging.getLogger("chatapp.audit")


class Refused(Exception):
    """What was asked cannot be done; the message says why, written for the person."""


class BadName(Refused):
    pass


class NameTaken(Refused):
    pass


class WeakPassword(Refused):
    pass


class LastAdmin(Refused):
    pass


class LinkNotValid(Refused):
    """An invitation or reset link that is unknown, used or expired: the same answer for each."""


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    display_name: str
    source: str  # LOCAL, HEADER or OIDC
    subject: str | None  # the header's value, or the OpenID issuer and sub; None for a local person
    is_admin: bool
    disabled_at: str | None
    daily_tokens: int | None  # None: the operator's default budget
    created_at: str
    last_seen_at: str | None

    @property
    def owner(self) -> str:
        return owner_key(self.id)

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


@dataclass(frozen=True)
class PersonUsage:
    person: Person
    tokens_today: int
    tokens_this_month: int


@dataclass(frozen=True)
class SessionInfo:
    key: str  # the stored hash of the session id (the id itself is only in the cookie)
    created_at: float
    seen_at: float


@dataclass(frozen=True)
class AuditEntry:
    id: str
    at: float  # Unix time
    actor: str | None  # a person's id; None: the command line, or nobody known
    actor_name: str | None
    action: str
    target: str | None
    address: str | None
    detail: str | None


def owner_key(person_id: str) -> str:
    """The owner of a person's conversations, streams and usage (a browser's are other strings)."""
    return f"person:{person_id}"


def oidc_subject(issuer: str, sub: str) -> str:
    """An OpenID person's subject: `sub` is unique only within its issuer (a URL, without spaces)."""
    return f"{issuer} {sub}"


def name_key(name: str) -> str:
    """What makes two names the same: Unicode-normalised and casefolded ("Ada" is "ADA")."""
    return unicodedata.normalize("NFKC", name.strip()).casefold()


def name_problem(name: str) -> str | None:
    name = name.strip()
    if not name:
        return "The name is empty."
    if len(name) > NAME_LENGTH:
        return f"A name can have at most {NAME_LENGTH} characters."
    if any(unicodedata.category(c).startswith("C") for c in name):
        return "A name cannot hold control characters."
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _token() -> tuple[str, str]:
    """A new link token and the hash that is stored."""
    token = secrets.token_urlsafe(32)
    return token, _hashed(token)


def _hashed(token: str) -> str:
    # The same hash as the store keeps for session ids.
    return hashlib.sha256(token.encode()).hexdigest()


_PERSON = ("id, name, display_name, source, subject, is_admin, disabled_at, daily_tokens, created_at, "
           "last_seen_at")
_PEOPLE_P = ", ".join(f"p.{column}" for column in _PERSON.split(", "))  # the same, from `people p`
_ADD_PERSON = (
    "INSERT INTO people (id, name, name_key, display_name, password_hash, source, subject, is_admin, created_at) "
    f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING {_PERSON}"
)
# Whether a person is the last admin still enabled: then they stay one, and enabled.
_OTHER_ADMINS = "SELECT COUNT(*) FROM people WHERE is_admin = 1 AND disabled_at IS NULL AND id <> ?"


def _person(row: Row) -> Person:
    values = {key: row[key] for key in _PERSON.split(", ")}
    return Person(**{**values, "is_admin": bool(values["is_admin"])})


class Accounts:
    """The people of the app's database."""

    def __init__(self, db: Database, passwords: Passwords | None = None):
        self.db = db
        self.passwords = passwords or Passwords()

    async def _row(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        return first(await self.db.rows(sql, parameters))

    async def _transaction(self, body: Callable[[], Transaction[T]], *, lock: str | None = None) -> T:
        return await run_transaction(self.db, body, lock=lock)

    # people

    async def create_person(self, name: str, password: str, *, display_name: str | None = None,
                            admin: bool = False) -> Person:
        """A local person. Raises BadName, WeakPassword, NameTaken (whatever its case)."""
        hashed = await self._new_hash(name, password)
        row = await self._row(_ADD_PERSON, self._new_person(name, display_name, hashed, LOCAL, None, admin))
        if row is None:
            raise NameTaken("That name is taken.")
        return _person(row)

    async def person_for_subject(self, source: str, subject: str, *, name: str,
                                 display_name: str | None = None) -> Person:
        """The person a proxy's header or an OpenID provider names, created at their first sign-in
        (disabled ones too: the caller checks). Their name is the one given, or, when another
        person has it, the first of name-2, name-3… that is free."""
        if source not in (HEADER, OIDC):
            raise ValueError(f"not a source of subjects: {source!r}")
        known = f"SELECT {_PERSON} FROM people WHERE source = ? AND subject = ?"
        if row := await self._row(known, (source, subject)):
            return await self._seen(_person(row), display_name)
        base = name.strip()[:NAME_LENGTH - 4] if name_problem(name) is None else "person"
        for number in range(1, 1000):
            candidate = base if number == 1 else f"{base}-{number}"
            row = await self._row(_ADD_PERSON, self._new_person(candidate, display_name, None, source, subject, False))
            if row is None:  # the name is taken, or the subject was created at this instant
                row = await self._row(known, (source, subject))
            if row is not None:
                return _person(row)
        raise NameTaken("No free name was found for this person.")

    async def _seen(self, person: Person, display_name: str | None) -> Person:
        """A person named again by their provider or proxy: the name it shows now, and when they
        were last here, written at most once a minute (the header mode names them on every request)."""
        shown = (display_name or "").strip()[:NAME_LENGTH] or person.display_name
        now = datetime.now(UTC)
        last = datetime.fromisoformat(person.last_seen_at or person.created_at)
        if shown == person.display_name and (now - last).total_seconds() < 60:
            return person
        row = await self._row(f"UPDATE people SET display_name = ?, last_seen_at = ? WHERE id = ? RETURNING {_PERSON}",
                              (shown, _now(), person.id))
        return _person(row) if row else person

    def _new_person(self, name: str, display_name: str | None, hashed: str | None, source: str,
                    subject: str | None, admin: bool) -> tuple[Any, ...]:
        name = name.strip()
        if (trouble := name_problem(name)) is not None:
            raise BadName(trouble)
        shown = (display_name or "").strip()[:NAME_LENGTH] or name
        return (secrets.token_urlsafe(9), name, name_key(name), shown, hashed, source, subject, int(admin), _now())

    async def _new_hash(self, name: str, password: str) -> str:
        if (trouble := name_problem(name)) is not None:
            raise BadName(trouble)
        if (trouble := problem(password, name)) is not None:
            raise WeakPassword(trouble)
        return await self.passwords.hash(password)

    async def person(self, person_id: str) -> Person | None:
        row = await self._row(f"SELECT {_PERSON} FROM people WHERE id = ?", (person_id,))
        return _person(row) if row else None

    async def find(self, name: str) -> Person | None:
        """The person of that name, whatever its case."""
        row = await self._row(f"SELECT {_PERSON} FROM people WHERE name_key = ?", (name_key(name),))
        return _person(row) if row else None

    async def check_password(self, name: str, password: str) -> Person | None:
        """The person, if `name` is a local person's, enabled, and `password` is theirs; else None,
        after the same work (one verification) whichever it was. A hash made with older
        parameters is replaced by one made with the current ones."""
        row = await self._row(f"SELECT {_PERSON}, password_hash FROM people WHERE name_key = ?", (name_key(name),))
        hashed = row["password_hash"] if row is not None else None
        right = await self.passwords.verify(hashed, password)
        if not right or row is None or hashed is None or row["disabled_at"] is not None:
            return None
        if self.passwords.needs_rehash(hashed):
            # Only if it was not changed meanwhile (a reset, on another replica).
            await self.db.rows("UPDATE people SET password_hash = ? WHERE id = ? AND password_hash = ?",
                               (await self.passwords.hash(password), row["id"], hashed))
        await self.db.rows("UPDATE people SET last_seen_at = ? WHERE id = ?", (_now(), row["id"]))
        return _person(row)

    async def set_password(self, person_id: str, password: str) -> bool:
        """A local person's new password; False if there is no such person. The caller decides
        whether their other sessions end (end_sessions)."""
        person = await self.person(person_id)
        if person is None or person.source != LOCAL:
            return False
        hashed = await self._new_hash(person.name, password)
        return bool(await self.db.rows("UPDATE people SET password_hash = ? WHERE id = ? RETURNING id",
                                       (hashed, person_id)))

    async def set_admin(self, person_id: str, admin: bool) -> bool:
        """Make the person an admin, or no longer one; False if there is no such person. Raises
        LastAdmin rather than leave no enabled admin."""

        def change() -> Transaction[bool]:
            if not admin:
                yield from self._keep_an_admin(person_id, "The last admin cannot stop being one.")
            return bool((yield Statement("UPDATE people SET is_admin = ? WHERE id = ? RETURNING id",
                                         (int(admin), person_id))))

        return await self._transaction(change, lock="admins")

    def _keep_an_admin(self, person_id: str, refusal: str) -> Transaction[None]:
        """Refuse a change that would leave no enabled admin, in the transaction that makes it
        (two admins demoting each other at once: one of them wins)."""
        row = first((yield Statement("SELECT is_admin, disabled_at FROM people WHERE id = ?", (person_id,))))
        if row is not None and row["is_admin"] and row["disabled_at"] is None:
            [(others,)] = yield Statement(_OTHER_ADMINS, (person_id,))
            if others == 0:
                raise LastAdmin(refusal)

    async def admins(self) -> int:
        """How many enabled admins there are."""
        [(count,)] = await self.db.rows("SELECT COUNT(*) FROM people WHERE is_admin = 1 AND disabled_at IS NULL")
        return count

    async def disable(self, person_id: str) -> int | None:
        """Disable the person: their sessions end, and each answer being written for them is asked
        to stop (its writer reads that within a second). The number of answers asked to stop; None
        if there is no such person. Raises LastAdmin for the last enabled admin."""

        def disable() -> Transaction[int | None]:
            yield from self._keep_an_admin(person_id, "The last admin cannot be disabled.")
            if not (yield Statement("UPDATE people SET disabled_at = COALESCE(disabled_at, ?) WHERE id = ? "
                                    "RETURNING id", (_now(), person_id))):
                return None
            yield Statement("DELETE FROM sessions WHERE person = ?", (person_id,))
            writing = yield Statement("SELECT id FROM messages WHERE status = 'streaming' AND conversation_id IN "
                                      "(SELECT id FROM conversations WHERE owner = ?) ORDER BY id",
                                      (owner_key(person_id),))
            # One by one, in id order, as the store's writes lock answers: no deadlock with them.
            yield Many("UPDATE messages SET stop_asked = 1 WHERE id = ? AND status = 'streaming'",
                       [(row["id"],) for row in writing])
            return len(writing)

        return await self._transaction(disable, lock="admins")

    async def enable(self, person_id: str) -> bool:
        return bool(await self.db.rows("UPDATE people SET disabled_at = NULL WHERE id = ? RETURNING id",
                                       (person_id,)))

    async def set_budget(self, person_id: str, daily_tokens: int | None) -> bool:
        """The person's tokens a day (UTC); None: the operator's default."""
        if daily_tokens is not None and daily_tokens < 0:
            raise ValueError("a budget is a number of tokens, 0 or more")
        return bool(await self.db.rows("UPDATE people SET daily_tokens = ? WHERE id = ? RETURNING id",
                                       (daily_tokens, person_id)))

    async def people(self, today: date | None = None) -> list[PersonUsage]:
        """Everyone, by name, with the tokens they spent today and this month (UTC), from the
        usage ledger."""
        today = today or datetime.now(UTC).date()
        # CAST: PostgreSQL sums BIGINTs as NUMERIC.
        spent = ("CAST(COALESCE((SELECT SUM(tokens) FROM usage u WHERE u.owner = 'person:' || p.id "
                 "AND u.day >= ? AND u.day <= ?), 0) AS BIGINT)")
        rows = await self.db.rows(
            f"SELECT {_PERSON}, {spent} AS tokens_today, {spent} AS tokens_this_month FROM people p "
            "ORDER BY name_key",
            (today.isoformat(), today.isoformat(), today.replace(day=1).isoformat(), today.isoformat()))
        return [PersonUsage(_person(row), row["tokens_today"], row["tokens_this_month"]) for row in rows]

    async def claim_conversations(self, from_owner: str, to_owner: str) -> int:
        """Give a browser's anonymous conversations to a person (offered at their first sign-in);
        how many. The tokens they cost stay in the usage ledger under the browser: spent before,
        by whoever held it. Another person's conversations are never moved."""
        if from_owner.startswith("person:"):
            raise ValueError("only a browser's own conversations can be claimed")
        return len(await self.db.rows("UPDATE conversations SET owner = ? WHERE owner = ? RETURNING id",
                                      (to_owner, from_owner)))

    # sessions (the store creates, checks and ends each one; these tie them to people)

    async def attach_session(self, session_id: str, person_id: str) -> None:
        """The session (created if new) signs in this person from now on."""
        now = time.time()
        await self.db.rows("INSERT INTO sessions (id, created_at, seen_at, person) VALUES (?, ?, ?, ?) "
                           "ON CONFLICT (id) DO UPDATE SET person = excluded.person",
                           (_hashed(session_id), now, now, person_id))

    async def session_person(self, session_id: str, *, lifetime: float) -> Person | None:
        """The enabled person this session signs in, if it was used within `lifetime` seconds;
        marks it used (at most once a minute: a write per request would be a write per page view)."""
        now = time.time()
        row = await self._row(f"SELECT {_PEOPLE_P}, s.seen_at AS session_seen_at FROM sessions s "
                              "JOIN people p ON p.id = s.person WHERE s.id = ? AND p.disabled_at IS NULL",
                              (_hashed(session_id),))
        if row is None or row["session_seen_at"] < now - lifetime:
            return None
        if row["session_seen_at"] < now - 60:
            await self.db.rows("UPDATE sessions SET seen_at = ? WHERE id = ?", (now, _hashed(session_id)))
        return _person(row)

    async def sessions(self, person_id: str) -> list[SessionInfo]:
        rows = await self.db.rows("SELECT id, created_at, seen_at FROM sessions WHERE person = ? "
                                  "ORDER BY seen_at DESC", (person_id,))
        return [SessionInfo(*row) for row in rows]

    async def end_sessions(self, person_id: str, *, keep: str | None = None) -> int:
        """Sign the person out everywhere (but the session `keep`, if given); how many ended."""
        return len(await self.db.rows("DELETE FROM sessions WHERE person = ? AND id <> ? RETURNING id",
                                      (person_id, _hashed(keep) if keep is not None else "")))

    # links: invitations and password resets

    async def create_invitation(self, created_by: str | None, *, makes_admin: bool = False,
                                lifetime: float = INVITATION_LIFETIME) -> str:
        """A new invitation's token, to put in its link: given here once, never stored."""
        token, hashed = _token()
        await self.db.rows("INSERT INTO invitations (token_hash, created_by, created_at, expires_at, makes_admin) "
                           "VALUES (?, ?, ?, ?, ?)", (hashed, created_by, _now(), time.time() + lifetime,
                                                      int(makes_admin)))
        return token

    async def invitation_valid(self, token: str) -> bool:
        """Whether the invitation can still be used (to show its form, or say it cannot)."""
        return await self._row("SELECT 1 FROM invitations WHERE token_hash = ? AND used_at IS NULL "
                               "AND expires_at > ?", (_hashed(token), time.time())) is not None

    async def redeem_invitation(self, token: str, name: str, password: str, *,
                                display_name: str | None = None) -> Person:
        """Join by invitation: the new person, and the invitation used, in one transaction (two
        joins with one link at once: one wins). Raises LinkNotValid, BadName, WeakPassword, and
        NameTaken (the invitation stays usable)."""
        hashed = await self._new_hash(name, password)
        values = self._new_person(name, display_name, hashed, LOCAL, None, False)

        def join() -> Transaction[Row]:
            invitation = first((yield Statement(
                "UPDATE invitations SET used_at = ? WHERE token_hash = ? AND used_at IS NULL AND expires_at > ? "
                "RETURNING makes_admin", (_now(), _hashed(token), time.time()))))
            if invitation is None:
                raise LinkNotValid("This invitation has expired or was used already.")
            person = first((yield Statement(_ADD_PERSON, (*values[:7], invitation["makes_admin"], values[8]))))
            if person is None:  # the transaction rolls back: the invitation is not used
                raise NameTaken("That name is taken.")
            yield Statement("UPDATE invitations SET used_by = ? WHERE token_hash = ?", (person["id"], _hashed(token)))
            return person

        return _person(await self._transaction(join, lock=f"link {_hashed(token)}"))

    async def create_reset(self, person_id: str, created_by: str | None, *,
                           lifetime: float = RESET_LIFETIME) -> str:
        """A password-reset link's token for a local person (given once, never stored). Raises
        LookupError for anyone else."""
        person = await self.person(person_id)
        if person is None or person.source != LOCAL:
            raise LookupError(f"no local person {person_id!r}")
        token, hashed = _token()
        await self.db.rows("INSERT INTO password_resets (token_hash, person, created_by, created_at, expires_at) "
                           "VALUES (?, ?, ?, ?, ?)", (hashed, person_id, created_by, _now(), time.time() + lifetime))
        return token

    async def reset_target(self, token: str) -> Person | None:
        """The person a valid reset link is for (to greet them on its form); None if not valid."""
        row = await self._row(f"SELECT {_PEOPLE_P} FROM password_resets r "
                              "JOIN people p ON p.id = r.person WHERE r.token_hash = ? AND r.used_at IS NULL "
                              "AND r.expires_at > ?", (_hashed(token), time.time()))
        return _person(row) if row else None

    async def reset_password(self, token: str, password: str) -> Person:
        """Set a new password by a reset link, in one transaction: the link, and any other of the
        person's, used; their sessions ended. Raises LinkNotValid, WeakPassword."""
        person = await self.reset_target(token)
        if person is None:
            raise LinkNotValid("This link has expired or was used already.")
        hashed = await self._new_hash(person.name, password)

        def reset() -> Transaction[None]:
            if not (yield Statement("UPDATE password_resets SET used_at = ? WHERE token_hash = ? AND used_at IS NULL "
                                    "AND expires_at > ? RETURNING person", (_now(), _hashed(token), time.time()))):
                raise LinkNotValid("This link has expired or was used already.")
            yield Statement("UPDATE password_resets SET used_at = ? WHERE person = ? AND used_at IS NULL",
                            (_now(), person.id))
            yield Statement("UPDATE people SET password_hash = ? WHERE id = ?", (hashed, person.id))
            yield Statement("DELETE FROM sessions WHERE person = ?", (person.id,))

        await self._transaction(reset, lock=f"link {_hashed(token)}")
        return person

    # audit

    async def record(self, action: str, *, actor: str | None = None, target: str | None = None,
                     address: str | None = None, detail: str | None = None) -> None:
        """Add an entry to the audit log (and a line to the log)."""
        await self.db.rows("INSERT INTO audit_log (id, at, actor, action, target, address, detail) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (secrets.token_urlsafe(9), time.time(), actor, action, target, address, detail))
        log.info("audit: %s by %s on %s from %s%s", action, actor or "-", target or "-", address or "-",
                 f": {detail}" if detail else "")

    async def audit_log(self, *, limit: int = 50, offset: int = 0) -> tuple[list[AuditEntry], bool]:
        """A page of the audit log, newest first, and whether there are older entries."""
        rows = await self.db.rows(
            "SELECT a.id, a.at, a.actor, p.name AS actor_name, a.action, a.target, a.address, a.detail "
            "FROM audit_log a LEFT JOIN people p ON p.id = a.actor ORDER BY a.at DESC, a.id DESC LIMIT ? OFFSET ?",
            (limit + 1, offset))
        return [AuditEntry(*row) for row in rows[:limit]], len(rows) > limit
