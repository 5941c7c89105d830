"""People, on both databases: names unique whatever their case, passwords checked without telling
an unknown name from a wrong password, admins never all gone, disabling that ends sessions and
answers, single-use links, sessions tied to people, the audit log, usage and claimed conversations.

Passwords are hashed with cheap parameters here (the real ones are tested in test_passwords.py),
but for the rehash test and the timing test."""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from argon2 import PasswordHasher, extract_parameters

from chatapp.accounts import (HEADER, LOCAL, OIDC, Accounts, BadName, LastAdmin, LinkNotValid, NameTaken,
                              WeakPassword, oidc_subject, owner_key)
from chatapp.db import Retryable
from chatapp.passwords import Passwords
from chatapp.storage import COMPLETE, Final, Store

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORD = "correct horse battery"


@pytest.fixture
async def accounts(store: Store) -> Accounts:
    return Accounts(store.db, Passwords(CHEAP))


@pytest.fixture
async def ada(accounts: Accounts) -> AsyncIterator[str]:
    yield (await accounts.create_person("Ada", PASSWORD, admin=True)).id


async def _stored_hash(accounts: Accounts, person_id: str) -> str:
    [(hashed,)] = await accounts.db.rows("SELECT password_hash FROM people WHERE id = ?", (person_id,))
    return hashed


# --- people and names -----------------------------------------------------------------------------


async def test_a_person_is_found_by_name_whatever_its_case(accounts: Accounts) -> None:
    ada = await accounts.create_person("  Ada Lovelace ", PASSWORD, display_name="Ada")
    assert (ada.name, ada.display_name, ada.source, ada.subject, ada.is_admin) == ("Ada Lovelace", "Ada", LOCAL,
                                                                                   None, False)
    assert ada.owner == owner_key(ada.id) == f"person:{ada.id}"
    assert not ada.disabled and ada.daily_tokens is None and ada.last_seen_at is None
    for spelling in ("Ada Lovelace", "ada lovelace", "  ADA LOVELACE"):
        assert await accounts.find(spelling) == ada
    assert await accounts.person(ada.id) == ada
    assert await accounts.find("Ada") is None
    assert await accounts.person("no such id") is None
    assert (await accounts.create_person("Grace", PASSWORD)).display_name == "Grace"


@pytest.mark.parametrize(("first", "second"), [("Ada", "ada"), ("Ada", "ADA "), ("Straße", "STRASSE"),
                                               ("ﬁne", "FINE")])
async def test_two_names_that_differ_only_in_case_are_one(accounts: Accounts, first: str, second: str) -> None:
    await accounts.create_person(first, PASSWORD)
    with pytest.raises(NameTaken, match="That name is taken."):
        await accounts.create_person(second, "another password here")
    [(count,)] = await accounts.db.rows("SELECT COUNT(*) FROM people")
    assert count == 1


async def test_names_at_once_are_unique_too(accounts: Accounts) -> None:
    results = await asyncio.gather(*(accounts.create_person(name, PASSWORD) for name in ("bob", "BOB", "Bob")),
                                   return_exceptions=True)
    assert sorted(type(result).__name__ for result in results) == ["NameTaken", "NameTaken", "Person"]


@pytest.mark.parametrize(("name", "password", "refusal"), [
    ("", PASSWORD, BadName), ("   ", PASSWORD, BadName), ("x" * 65, PASSWORD, BadName),
    ("ada\x00", PASSWORD, BadName), ("ada\nlovelace", PASSWORD, BadName),
    ("ada", "", WeakPassword), ("ada", "short", WeakPassword), ("ada", "ada", WeakPassword),
])
async def test_bad_names_and_weak_passwords_are_refused(accounts: Accounts, name: str, password: str,
                                                        refusal: type[Exception]) -> None:
    with pytest.raises(refusal):
        await accounts.create_person(name, password)
    assert await accounts.db.rows("SELECT id FROM people") == []


async def test_a_person_named_elsewhere_is_created_once_and_found_after(accounts: Accounts, ada: str) -> None:
    first = await accounts.person_for_subject(HEADER, "ada@example.org", name="ada@example.org")
    again = await accounts.person_for_subject(HEADER, "ada@example.org", name="a new name")
    assert first.id == again.id and (first.source, first.subject, first.name) == (HEADER, "ada@example.org",
                                                                                 "ada@example.org")
    renamed = await accounts.person_for_subject(OIDC, oidc_subject("https://id.example.org", "x"), name="x",
                                                display_name="Old Name")
    renamed = await accounts.person_for_subject(OIDC, oidc_subject("https://id.example.org", "x"), name="x",
                                                display_name="New Name")
    assert (renamed.name, renamed.display_name) == ("x", "New Name")  # the provider's name, kept up to date
    # The same subject from another source is someone else; a taken name gets a number.
    issuer = await accounts.person_for_subject(OIDC, oidc_subject("https://id.example.org", "ada@example.org"),
                                               name="ADA", display_name="Ada L.")
    assert issuer.id != first.id and (issuer.name, issuer.display_name) == ("ADA-2", "Ada L.")
    odd = await accounts.person_for_subject(OIDC, "https://id.example.org 42", name="\x07")
    assert odd.name == "person"
    with pytest.raises(ValueError):
        await accounts.person_for_subject(LOCAL, "ada", name="ada")


async def test_a_subject_signing_in_twice_at_once_is_one_person(accounts: Accounts) -> None:
    people = await asyncio.gather(*(accounts.person_for_subject(OIDC, "issuer sub-1", name="grace")
                                    for _ in range(5)))
    assert len({person.id for person in people}) == 1
    [(count,)] = await accounts.db.rows("SELECT COUNT(*) FROM people")
    assert count == 1


# --- passwords ------------------------------------------------------------------------------------


async def test_a_password_signs_its_person_in_and_nothing_else_does(accounts: Accounts, ada: str) -> None:
    person = await accounts.check_password("ADA", PASSWORD)
    assert person is not None and person.id == ada
    assert (await accounts.person(ada)).last_seen_at is not None  # type: ignore[union-attr]
    assert await accounts.check_password("Ada", "a wrong password") is None
    assert await accounts.check_password("nobody", PASSWORD) is None
    assert await accounts.check_password("x" * 5000, PASSWORD) is None
    header = await accounts.person_for_subject(HEADER, "grace", name="grace")
    assert await accounts.check_password(header.name, "") is None  # no password: no sign-in by one
    await accounts.create_person("bob", PASSWORD)
    await accounts.disable((await accounts.find("bob")).id)  # type: ignore[union-attr]
    assert await accounts.check_password("bob", PASSWORD) is None


async def test_a_hash_with_old_parameters_is_upgraded_at_sign_in(store: Store) -> None:
    old = Accounts(store.db, Passwords(CHEAP))
    ada = await old.create_person("ada", PASSWORD)
    before = await _stored_hash(old, ada.id)
    current = Accounts(store.db, Passwords(PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)))

    assert await current.check_password("ada", "a wrong password") is None
    assert await _stored_hash(old, ada.id) == before  # only the right password upgrades it
    assert await current.check_password("ada", PASSWORD) is not None
    after = await _stored_hash(old, ada.id)
    assert (extract_parameters(before).time_cost, extract_parameters(after).time_cost) == (1, 2)
    assert extract_parameters(after).memory_cost == 2048
    assert await current.check_password("ada", PASSWORD) is not None
    assert await _stored_hash(old, ada.id) == after  # upgraded once


async def test_an_unknown_name_takes_about_as_long_as_a_wrong_password(store: Store) -> None:
    """With the real parameters; loosely (2×, medians of a few interleaved tries)."""
    accounts = Accounts(store.db)
    await accounts.create_person("ada", PASSWORD)
    unknown, wrong = [], []
    for _ in range(4):
        for times, name in ((wrong, "ada"), (unknown, "nobody")):
            started = time.perf_counter()
            assert await accounts.check_password(name, "a wrong password") is None
            times.append(time.perf_counter() - started)
    assert 0.5 < statistics.median(unknown) / statistics.median(wrong) < 2, (unknown, wrong)


async def test_a_new_password_replaces_the_old(accounts: Accounts, ada: str) -> None:
    assert await accounts.set_password(ada, "a brand new password")
    assert await accounts.check_password("ada", PASSWORD) is None
    assert await accounts.check_password("ada", "a brand new password") is not None
    with pytest.raises(WeakPassword):
        await accounts.set_password(ada, "short")
    header = await accounts.person_for_subject(HEADER, "grace", name="grace")
    assert not await accounts.set_password(header.id, "a brand new password")
    assert not await accounts.set_password("no such id", "a brand new password")


# --- admins, disabling, budgets -------------------------------------------------------------------


async def test_the_last_admin_stays_one_and_stays_enabled(accounts: Accounts, ada: str) -> None:
    assert await accounts.admins() == 1
    with pytest.raises(LastAdmin, match="The last admin cannot stop being one."):
        await accounts.set_admin(ada, False)
    with pytest.raises(LastAdmin, match="The last admin cannot be disabled."):
        await accounts.disable(ada)
    grace = (await accounts.create_person("grace", PASSWORD)).id
    assert await accounts.set_admin(grace, True) and await accounts.admins() == 2
    assert await accounts.disable(grace) == 0
    assert await accounts.admins() == 1  # a disabled admin does not count
    with pytest.raises(LastAdmin):
        await accounts.set_admin(ada, False)
    assert await accounts.enable(grace)
    assert await accounts.set_admin(ada, False)
    assert [(p.person.name, p.person.is_admin) for p in await accounts.people()] == [("Ada", False),
                                                                                       ("grace", True)]
    assert not await accounts.set_admin("no such id", True)
    assert await accounts.disable("no such id") is None
    assert await accounts.set_admin(ada, False)  # not an admin: nothing to keep


# Races, tried a few times each: without the transaction's lock, PostgreSQL let both changes
# through in more than half the tries (17 of 30), leaving no admin.
RACES = 10


async def test_two_admins_demoting_each_other_at_once_leave_one(accounts: Accounts, ada: str) -> None:
    grace = (await accounts.create_person("grace", PASSWORD, admin=True)).id
    for _ in range(RACES):
        results = await asyncio.gather(accounts.set_admin(ada, False), accounts.set_admin(grace, False),
                                       return_exceptions=True)
        assert sorted(type(result).__name__ for result in results) == ["LastAdmin", "bool"]
        assert await accounts.admins() == 1
        await accounts.db.rows("UPDATE people SET is_admin = 1")


async def test_two_admins_disabling_each_other_at_once_leave_one(accounts: Accounts, ada: str) -> None:
    grace = (await accounts.create_person("grace", PASSWORD, admin=True)).id
    for _ in range(RACES):
        results = await asyncio.gather(accounts.disable(ada), accounts.disable(grace), return_exceptions=True)
        assert sorted(type(result).__name__ for result in results) == ["LastAdmin", "int"]
        assert await accounts.admins() == 1
        for person_id in (ada, grace):
            await accounts.enable(person_id)


class _GivesUpOnce:
    """The database, but for its first transaction, which it gives up as for a deadlock."""

    def __init__(self, db: Any) -> None:
        self.db, self.tries = db, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)

    async def transaction(self, body: Any, *, lock: str | None = None) -> Any:
        self.tries += 1
        if self.tries == 1:
            body.close()
            raise Retryable("deadlock detected")
        return await self.db.transaction(body, lock=lock)


async def test_a_transaction_given_up_for_another_runs_again(accounts: Accounts, ada: str) -> None:
    flaky = _GivesUpOnce(accounts.db)
    grace = await Accounts(flaky, accounts.passwords).create_person("grace", PASSWORD)
    assert await Accounts(flaky, accounts.passwords).disable(grace.id) == 0
    assert flaky.tries == 2 and (await accounts.person(grace.id)).disabled  # type: ignore[union-attr]


async def test_disabling_ends_the_persons_sessions_and_stops_their_answers(store: Store, accounts: Accounts,
                                                                           ada: str) -> None:
    bob = await accounts.create_person("bob", PASSWORD)
    await store.add_session("bob's laptop")
    await accounts.attach_session("bob's laptop", bob.id)
    await accounts.attach_session("bob's phone", bob.id)
    await accounts.attach_session("ada's laptop", ada)
    await store.add_session("a browser")
    for conversation, owner in (("bob-1", bob.owner), ("bob-2", bob.owner), ("ada-1", owner_key(ada)),
                                ("browser-1", "a browser")):
        await store.create_conversation(conversation, owner, "Title")
    _, finished = await store.add_turn("bob-1", model="m", question="Done?")
    await store.finish_message(finished.id, Final(content="Yes", html="<p>Yes</p>", status=COMPLETE))
    _, writing = await store.add_turn("bob-1", model="m", question="Still?")
    _, also_writing = await store.add_turn("bob-2", model="m", question="And this?")
    _, others = await store.add_turn("ada-1", model="m", question="Mine?")
    _, anonymous = await store.add_turn("browser-1", model="m", question="Mine?")

    assert await accounts.disable(bob.id) == 2
    assert (await accounts.person(bob.id)).disabled  # type: ignore[union-attr]
    for session in ("bob's laptop", "bob's phone"):
        assert not await store.session_alive(session, lifetime=3600)
        assert await accounts.session_person(session, lifetime=3600) is None
    assert await store.session_alive("ada's laptop", lifetime=3600)
    assert await store.session_alive("a browser", lifetime=3600)
    stops = await store.db.rows("SELECT id FROM messages WHERE stop_asked = 1 ORDER BY id")
    assert [row["id"] for row in stops] == [writing.id, also_writing.id]
    assert sorted(await store.heartbeat()) == [writing.id, also_writing.id]  # what the writer reads
    assert others.id not in await store.heartbeat() and anonymous.id not in await store.heartbeat()

    assert await accounts.enable(bob.id)
    assert not (await accounts.person(bob.id)).disabled  # type: ignore[union-attr]
    assert await accounts.sessions(bob.id) == []  # enabling brings no session back


async def test_a_budget_is_set_and_unset(accounts: Accounts, ada: str) -> None:
    assert await accounts.set_budget(ada, 50_000)
    assert (await accounts.person(ada)).daily_tokens == 50_000  # type: ignore[union-attr]
    assert await accounts.set_budget(ada, None)
    assert (await accounts.person(ada)).daily_tokens is None  # type: ignore[union-attr]
    assert not await accounts.set_budget("no such id", 10)
    with pytest.raises(ValueError):
        await accounts.set_budget(ada, -1)


# --- sessions -------------------------------------------------------------------------------------


async def test_sessions_belong_to_a_person_and_end_everywhere(store: Store, accounts: Accounts, ada: str) -> None:
    await store.add_session("passphrase session")
    await store.add_session("laptop")
    [(created,)] = await store.db.rows("SELECT created_at FROM sessions WHERE id = ?",
                                       (hashlib.sha256(b"laptop").hexdigest(),))
    await accounts.attach_session("laptop", ada)
    await accounts.attach_session("phone", ada)
    assert (await accounts.session_person("laptop", lifetime=3600)).id == ada  # type: ignore[union-attr]
    assert await accounts.session_person("passphrase session", lifetime=3600) is None
    assert await accounts.session_person("never made", lifetime=3600) is None
    sessions = await accounts.sessions(ada)
    assert len(sessions) == 2 and created in {session.created_at for session in sessions}
    assert hashlib.sha256(b"laptop").hexdigest() in {session.key for session in sessions}

    assert await accounts.end_sessions(ada, keep="laptop") == 1
    assert await store.session_alive("laptop", lifetime=3600) and not await store.session_alive("phone",
                                                                                                 lifetime=3600)
    assert await accounts.end_sessions(ada) == 1
    assert await accounts.sessions(ada) == []
    assert await store.session_alive("passphrase session", lifetime=3600)


# --- invitations and reset links ------------------------------------------------------------------


async def test_an_invitation_is_used_once(accounts: Accounts, ada: str) -> None:
    token = await accounts.create_invitation(ada)
    assert len(token) == 43 and token.replace("-", "").replace("_", "").isalnum()
    [row] = await accounts.db.rows("SELECT * FROM invitations")
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in [str(value) for value in row]  # only its hash is kept
    assert await accounts.invitation_valid(token)

    grace = await accounts.redeem_invitation(token, "Grace", PASSWORD, display_name="Grace H.")
    assert (grace.name, grace.display_name, grace.is_admin, grace.source) == ("Grace", "Grace H.", False, LOCAL)
    assert await accounts.check_password("grace", PASSWORD) is not None
    [row] = await accounts.db.rows("SELECT used_by, used_at, created_by FROM invitations")
    assert (row["used_by"], row["created_by"]) == (grace.id, ada) and row["used_at"]
    assert not await accounts.invitation_valid(token)
    with pytest.raises(LinkNotValid, match="This invitation has expired or was used already."):
        await accounts.redeem_invitation(token, "Mallory", PASSWORD)
    with pytest.raises(LinkNotValid):
        await accounts.redeem_invitation("made-up", "Mallory", PASSWORD)
    assert await accounts.find("mallory") is None


async def test_an_expired_invitation_is_refused_and_an_admin_one_makes_an_admin(accounts: Accounts,
                                                                               ada: str) -> None:
    expired = await accounts.create_invitation(ada, lifetime=-1)
    assert not await accounts.invitation_valid(expired)
    with pytest.raises(LinkNotValid):
        await accounts.redeem_invitation(expired, "grace", PASSWORD)
    admin = await accounts.create_invitation(ada, makes_admin=True)
    assert (await accounts.redeem_invitation(admin, "grace", PASSWORD)).is_admin
    assert await accounts.admins() == 2


async def test_a_refused_name_leaves_the_invitation_usable(accounts: Accounts, ada: str) -> None:
    token = await accounts.create_invitation(ada)
    with pytest.raises(NameTaken):
        await accounts.redeem_invitation(token, "ADA", PASSWORD)
    with pytest.raises(WeakPassword):
        await accounts.redeem_invitation(token, "grace", "short")
    assert await accounts.invitation_valid(token)
    assert (await accounts.redeem_invitation(token, "grace", PASSWORD)).name == "grace"


async def test_people_joining_by_one_invitation_at_once_make_one(accounts: Accounts, ada: str) -> None:
    for round in range(RACES):
        token = await accounts.create_invitation(ada)
        results = await asyncio.gather(*(accounts.redeem_invitation(token, f"{name} {round}", PASSWORD)
                                         for name in ("grace", "mallory", "eve")), return_exceptions=True)
        assert sorted(type(result).__name__ for result in results) == ["LinkNotValid", "LinkNotValid", "Person"]
        [(count,)] = await accounts.db.rows("SELECT COUNT(*) FROM people")
        assert count == 2 + round


async def test_a_reset_link_sets_a_new_password_once_and_ends_sessions(accounts: Accounts, ada: str) -> None:
    grace = await accounts.create_person("grace", PASSWORD)
    await accounts.attach_session("grace's laptop", grace.id)
    older = await accounts.create_reset(grace.id, ada)
    token = await accounts.create_reset(grace.id, ada)
    assert token not in [str(value) for row in await accounts.db.rows("SELECT * FROM password_resets")
                         for value in row]
    assert await accounts.reset_target(token) == grace

    with pytest.raises(WeakPassword):
        await accounts.reset_password(token, "short")
    assert (await accounts.reset_password(token, "a brand new password")).id == grace.id
    assert await accounts.check_password("grace", "a brand new password") is not None
    assert await accounts.check_password("grace", PASSWORD) is None
    assert await accounts.sessions(grace.id) == []
    for used in (token, older):  # the other link of hers is used up too
        assert await accounts.reset_target(used) is None
        with pytest.raises(LinkNotValid, match="This link has expired or was used already."):
            await accounts.reset_password(used, "yet another password")


async def test_a_reset_link_expires_and_is_for_local_people_only(accounts: Accounts, ada: str) -> None:
    expired = await accounts.create_reset(ada, ada, lifetime=-1)
    assert await accounts.reset_target(expired) is None
    with pytest.raises(LinkNotValid):
        await accounts.reset_password(expired, "a brand new password")
    header = await accounts.person_for_subject(HEADER, "grace", name="grace")
    for person_id in (header.id, "no such id"):
        with pytest.raises(LookupError):
            await accounts.create_reset(person_id, ada)


# --- audit, usage, claimed conversations ----------------------------------------------------------


async def test_the_audit_log_reads_newest_first_a_page_at_a_time(accounts: Accounts, ada: str) -> None:
    await accounts.record("sign-in failed", target="ada", address="192.0.2.1")
    await accounts.record("sign-in", actor=ada, target="Ada", address="192.0.2.1")
    await accounts.record("invite", actor=ada, detail="makes an admin")
    page, more = await accounts.audit_log(limit=2)
    assert [(entry.action, entry.actor_name) for entry in page] == [("invite", "Ada"), ("sign-in", "Ada")]
    assert more and page[0].at >= page[1].at and page[0].detail == "makes an admin"
    page, more = await accounts.audit_log(limit=2, offset=2)
    assert [(e.action, e.actor, e.actor_name, e.target, e.address) for e in page] == [
        ("sign-in failed", None, None, "ada", "192.0.2.1")]
    assert not more


async def test_people_come_with_their_usage_today_and_this_month(store: Store, accounts: Accounts,
                                                                 ada: str) -> None:
    grace = await accounts.create_person("grace", PASSWORD)
    for owner, day, tokens in ((owner_key(ada), "2026-03-15", 100), (owner_key(ada), "2026-03-01", 20),
                               (owner_key(ada), "2026-02-28", 1000), (owner_key(ada), "2026-03-16", 5),
                               ("a browser", "2026-03-15", 7)):
        await store.db.rows("INSERT INTO usage (owner, day, tokens) VALUES (?, ?, ?)", (owner, day, tokens))
    listed = await accounts.people(today=date(2026, 3, 15))
    assert [(p.person.name, p.tokens_today, p.tokens_this_month) for p in listed] == [("Ada", 100, 120),
                                                                                       ("grace", 0, 0)]
    assert listed[1].person == grace
    # Today, by default: what finish_message charged.
    await store.create_conversation("c", grace.owner, "Title")
    _, answer = await store.add_turn("c", model="m", question="?")
    await store.finish_message(answer.id, Final(content="!", html="<p>!</p>", status=COMPLETE, prompt_tokens=3,
                                                completion_tokens=4), owner=grace.owner)
    assert [(p.tokens_today, p.tokens_this_month) for p in await accounts.people()][1] == (7, 7)


async def test_a_browsers_conversations_are_claimed_but_not_its_usage(store: Store, accounts: Accounts,
                                                                      ada: str) -> None:
    for conversation, owner in (("one", "browser a"), ("two", "browser a"), ("other", "browser b"),
                                ("adas", owner_key(ada))):
        await store.create_conversation(conversation, owner, conversation)
    _, answer = await store.add_turn("one", model="m", question="?")
    await store.finish_message(answer.id, Final(content="!", html="", status=COMPLETE, completion_tokens=9),
                               owner="browser a")
    grace = await accounts.create_person("grace", PASSWORD)
    assert await accounts.claim_conversations("browser a", grace.owner) == 2
    assert sorted(c.id for c in await store.conversations(grace.owner)) == ["one", "two"]
    assert await store.conversations("browser a") == []
    assert [c.id for c in await store.conversations("browser b")] == ["other"]
    today = datetime.now(UTC).date()
    assert (await store.tokens_used_on(today, "browser a"), await store.tokens_used_on(today, grace.owner)) == (9, 0)
    assert await accounts.claim_conversations("browser a", grace.owner) == 0
    with pytest.raises(ValueError):
        await accounts.claim_conversations(owner_key(ada), grace.owner)
    assert [c.id for c in await store.conversations(owner_key(ada))] == ["adas"]
