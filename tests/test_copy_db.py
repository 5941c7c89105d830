"""`chatapp copy-db FROM TO`: a SQLite database filled through the store, copied into PostgreSQL
(and, the copy being generic, into another SQLite file), reads the same through the store; an
interrupted copy run again ends complete, with nothing twice; the command checks and refuses."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from chatapp import db as database
from chatapp.accounts import Accounts
from chatapp.db import copy as copying
from chatapp.db.migrations import MIGRATIONS
from chatapp.passwords import Passwords
from chatapp.storage import COMPLETE, ERROR, STOPPED, Final, Store

from .support.live_server import clean_environment

OWNERS = ("alice", "bob")
SESSION = "alice's signed-in session"
LIFETIME = 30 * 86400
LONG_ANSWER = "A long answer. " * 7000  # about 100 KB
# What _fill stores: 8 conversations of 18 turns, 3 of them regenerated, and a failed one; then a question.
MESSAGES = 8 * (18 * 2 + 3 + 2) + 2


async def _fill(location: Path) -> None:
    """Conversations of two owners, with reasoning, regenerated versions, replaced (hidden)
    messages, a long answer, an answer still being written, usage, the key and a session."""
    store = await Store.open(location)
    try:
        await store.setting("secret_key", lambda: "the-generated-signing-key")
        await store.add_session(SESSION)
        # A person, signed in by the session, who invited another and made a reset link.
        accounts = Accounts(store.db, Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)))
        alice = await accounts.create_person("Alice", "correct horse battery", admin=True)
        await accounts.attach_session(SESSION, alice.id)
        await accounts.redeem_invitation(await accounts.create_invitation(alice.id), "Bob", "correct horse battery")
        await accounts.create_reset(alice.id, alice.id)
        await accounts.record("invite", actor=alice.id, address="192.0.2.1")
        for number in range(8):
            owner = OWNERS[number % 2]
            conversation = f"conversation-{number}"
            await store.create_conversation(conversation, owner, f"Title {number}")
            if number == 1:
                await store.update_conversation(conversation, owner, preset="translate", language="French",
                                                system_prompt="Be brief.", model="big-model")
            for turn in range(18):
                _, answer = await store.add_turn(conversation, model="fake-model", question=f"Question {turn}?",
                                                 send_token=f"form-{number}-{turn}")
                thinking = f"Thinking about {turn}…" if turn % 3 == 0 else ""
                await store.finish_message(answer.id, Final(
                    content=LONG_ANSWER if (number, turn) == (2, 5) else f"Answer **{turn}**",
                    html=f"<p>Answer <strong>{turn}</strong></p>", status=COMPLETE, prompt_tokens=10 + turn,
                    completion_tokens=turn, reasoning=thinking, reasoning_html=f"<p>{thinking}</p>" if thinking else None,
                    thinking_seconds=1.25 if thinking else None, finish_reason="stop"), owner=owner)
                if turn % 5 == 4:  # regenerated: the first answer hidden, a second version shown
                    _, again = await store.add_turn(conversation, model="fake-model", replacing=(answer.id,),
                                                    version_of=answer.id)
                    await store.finish_message(again.id, Final(
                        content="Answer, again", html="<p>Answer, again</p>", status=STOPPED, completion_tokens=3),
                        owner=owner)
            _, failed = await store.add_turn(conversation, model="fake-model", question="And then?")
            await store.finish_message(failed.id, Final(content="", html="", status=ERROR, error="the model is busy"))
        await store.add_turn("conversation-0", model="fake-model", question="Still being answered?")
    finally:
        await store.close()
    with closing(sqlite3.connect(location)) as db, db:
        # An old conversation touched after its last message (as before migration 0004): the copy
        # must keep its time, not take its newest message's.
        db.execute("UPDATE conversations SET updated_at = '2099-01-01T00:00:00.000+00:00' WHERE id = 'conversation-3'")


@pytest.fixture
async def source(tmp_path: Path) -> Path:
    location = tmp_path / "source.db"
    await _fill(location)
    return location


async def _copy(source: Path | str, target: str, **options: object) -> list[copying.Check]:
    from_db, to_db = await database.connect(str(source)), await database.connect(target)
    try:
        await copying.copy(from_db, to_db, **options)  # type: ignore[arg-type]
        return await copying.compare(from_db, to_db)
    finally:
        await from_db.close()
        await to_db.close()


async def _contents(location: Path | str) -> dict[str, object]:
    """Everything the app can read, through the store."""
    store = await Store.open(location, migrate=False)
    accounts = Accounts(store.db)
    try:
        [(largest,)] = await store.db.rows("SELECT MAX(id) FROM messages")
        conversations = {owner: await store.conversations(owner) for owner in OWNERS}
        return {
            "conversations": conversations,
            "messages": {c.id: await store.messages(c.id) for owner in OWNERS for c in conversations[owner]},
            "each message": [await store.message(i) for i in range(1, largest + 1)],
            "usage": {owner: await store.tokens_used_on(datetime.now(UTC).date(), owner) for owner in OWNERS},
            "secret key": await store.setting("secret_key", lambda: "a new key"),
            "session": await store.session_alive(SESSION, lifetime=LIFETIME),
            "signed in": await accounts.session_person(SESSION, lifetime=3600),
            "people": await accounts.people(),
            "audit": await accounts.audit_log(),
            "largest id": largest,
        }
    finally:
        await store.close()


async def test_a_copy_reads_the_same_through_the_store(source: Path, blank_database: str) -> None:
    before = await _contents(source)
    checks = await _copy(source, blank_database)

    assert all(check.equal for check in checks), checks
    assert [check.label for check in checks if not check.label.startswith(" ")] == [
        "settings", "people", "sessions", "usage", "conversations", "messages", "invitations", "password_resets",
        "audit_log"]
    after = await _contents(blank_database)
    assert after == before
    # What the test relies on is there: versions, hidden ones, the long answer, the one being written.
    messages = [message for message in before["each message"] if message is not None]  # type: ignore[attr-defined]
    assert len(messages) == before["largest id"] == MESSAGES
    assert sum(message.hidden for message in messages) == 8 * 3 and max(m.versions for m in messages) == 2
    assert any(message.content == LONG_ANSWER for message in messages)
    assert [message.status for message in messages][-1] == "streaming"
    assert before["conversations"]["bob"][0].id == "conversation-3"  # type: ignore[index]
    assert before["session"] is True and before["secret key"] == "the-generated-signing-key"
    assert before["signed in"].name == "Alice"  # type: ignore[attr-defined]
    assert [usage.person.name for usage in before["people"]] == ["Alice", "Bob"]  # type: ignore[attr-defined]

    store = await Store.open(blank_database)
    try:  # the next message's id comes after the copied ones
        added = await store.add_message("conversation-1", "user", "A new question", status=COMPLETE)
        assert added.id == before["largest id"] + 1  # type: ignore[operator]
    finally:
        await store.close()


async def test_every_table_is_copied_or_left_out_on_purpose(blank_database: str) -> None:
    """A migration that adds a table must say which it is here: history, or short-lived state."""
    store = await Store.open(blank_database)
    try:
        found = await copying.tables(store.db)
    finally:
        await store.close()
    copied = {table.name for table in copying.TABLES}
    assert copied <= found
    assert found - copied - {"migrations"} <= set(copying.NOT_COPIED)


async def test_an_interrupted_copy_goes_on_when_run_again(source: Path, blank_database: str) -> None:
    class Interrupted(Exception):
        pass

    seen: list[tuple[str, int, int]] = []

    def stop_in_the_messages(table: str, done: int, total: int) -> None:
        seen.append((table, done, total))
        if table == "messages" and done >= 100:
            raise Interrupted

    with pytest.raises(Interrupted):
        await _copy(source, blank_database, batch=16, progress=stop_in_the_messages)
    assert seen[-1] == ("messages", 112, MESSAGES)
    partial = await _copy_counts(blank_database)
    assert partial["messages"] == 112 and partial["conversations"] == 8

    # Meanwhile FROM goes on: the answer being written ends, and a new turn is stored.
    store = await Store.open(source)
    try:
        await store.finish_message(MESSAGES, Final(content="Done now", html="<p>Done now</p>", status=COMPLETE))
        await store.add_turn("conversation-5", model="fake-model", question="One more?")
    finally:
        await store.close()

    seen.clear()
    checks = await _copy(source, blank_database, batch=16, progress=lambda *report: seen.append(report))
    assert all(check.equal for check in checks), checks
    assert ("messages", MESSAGES + 2, MESSAGES + 2) in seen
    assert await _contents(blank_database) == await _contents(source)
    assert (await _copy_counts(blank_database))["messages"] == MESSAGES + 2  # nothing twice

    # A third run over a complete copy changes nothing.
    assert await _copy(source, blank_database) == checks


async def _copy_counts(location: str) -> dict[str, int]:
    db = await database.connect(location)
    try:
        return {table.name: (await db.rows(f"SELECT COUNT(*) FROM {table.name}"))[0][0]
                for table in copying.TABLES}
    finally:
        await db.close()


async def test_copied_figures_that_differ_are_reported(source: Path, tmp_path: Path) -> None:
    """The comparison can fail: a message deleted from TO after the copy."""
    target = tmp_path / "target.db"
    await _copy(source, str(target))
    with closing(sqlite3.connect(target)) as db, db:
        db.execute("DELETE FROM messages WHERE id = 7")
    from_db, to_db = await database.connect(str(source)), await database.connect(str(target))
    try:
        differing = [check for check in await copying.compare(from_db, to_db) if not check.equal]
    finally:
        await from_db.close()
        await to_db.close()
    assert [check.label for check in differing] == ["messages", "  characters"]
    assert (differing[0].source, differing[0].target) == (MESSAGES, MESSAGES - 1)


async def test_a_source_at_an_older_migration_is_refused(tmp_path: Path, blank_database: str) -> None:
    older = tmp_path / "older.db"
    with closing(sqlite3.connect(older)) as db:
        db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        for migration in MIGRATIONS[:5]:
            db.executescript(migration.sqlite)
            db.execute("INSERT INTO migrations VALUES (?, '2026-01-01')", (migration.name,))
        db.commit()
    with pytest.raises(copying.Refused, match=f"older.db is at migration {MIGRATIONS[4].name}, this chatapp at "
                                              f"{MIGRATIONS[-1].name}: run `chatapp migrate` on it first"):
        await _copy(older, blank_database)
    db = await database.connect(blank_database)
    try:  # refused before TO was touched
        assert await db.applied_migrations() == []
    finally:
        await db.close()


@pytest.mark.parametrize(("source", "target", "reason"), [
    ("missing.db", "to.db", "missing.db does not exist"),
    ("from.db", "from.db", "FROM and TO are the same database"),
    ("from.db", "./sub/../from.db", "FROM and TO are the same database"),
    ("from.db", "sqlite:from.db", "FROM and TO are the same database"),
    ("from.db", "mysql://user:secret@host/chat", "mysql://user:***@host/chat is neither a SQLite file nor a "
                                                 "postgresql:// URL"),
])
def test_locations_that_cannot_be_copied_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     source: str, target: str, reason: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "from.db").touch()
    with pytest.raises(copying.Refused) as refused:
        copying.check_locations(source, target)
    assert str(refused.value) == reason
    assert sorted(path.name for path in tmp_path.iterdir()) == ["from.db", "sub"]


# --- the command --------------------------------------------------------------------------------


def _copy_db(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chatapp", "copy-db", *args], cwd=cwd, env=clean_environment(),
                          capture_output=True, text=True, timeout=120)


def test_the_command_copies_sqlite_into_postgresql_and_says_so(source: Path, postgres_url: str) -> None:
    # The test server trusts its socket, so a password in the URL is accepted and must not be shown.
    with_password = postgres_url.replace("postgres@", "postgres:hunter2@")
    result = _copy_db(source.parent, source.name, with_password)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"copying source.db into {database.redacted(with_password)}"
    assert f"messages: {MESSAGES} / {MESSAGES}" in lines and "conversations: 8 / 8" in lines
    (left_out,) = [line for line in lines if line.startswith("not copied: ")]
    assert left_out.endswith(" (short-lived state, which starts afresh)")
    assert {"rate_limits", "streams", "sign_in_failures"} <= set(left_out[12:].split(" (")[0].split(", "))
    figures = _table(result.stdout)
    assert figures["messages"] == figures["largest id"] == [str(MESSAGES)] * 2
    assert figures["sessions"] == figures["settings"] == ["1", "1"]
    assert re.fullmatch(r"copied and checked in [\d.]+ s: TO holds what FROM does\. Point chatapp at it: "
                        r"CHATAPP_DATABASE_URL=postgresql://postgres:\*\*\*@/test_\d+\?host=.*", lines[-1]), lines[-1]

    again = _copy_db(source.parent, source.name, with_password)  # run again: nothing twice
    assert again.returncode == 0, again.stderr
    assert _table(again.stdout) == figures


def _table(output: str) -> dict[str, list[str]]:
    """The figures the command printed: {"messages": [FROM, TO], "largest id": [...], ...}."""
    rows = output.split("\n\n")[1].splitlines()[1:]
    return {" ".join(row.split()[:-2]): row.split()[-2:] for row in rows}


def test_the_command_refuses_a_missing_source_in_one_line(tmp_path: Path) -> None:
    result = _copy_db(tmp_path, "missing.db", "target.db")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.splitlines() == ["chatapp: cannot copy missing.db into target.db: missing.db does not exist"]
    assert list(tmp_path.iterdir()) == []


def test_the_command_exits_1_when_the_figures_differ(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "target.db"
    assert _copy_db(tmp_path, source.name, target.name).returncode == 0
    with closing(sqlite3.connect(target)) as db, db:  # TO holds a message of its own
        db.execute("INSERT INTO messages (conversation_id, role, content, status, created_at, updated_at) "
                   "VALUES ('conversation-0', 'user', 'extra', 'complete', '2026', '2026')")
    result = _copy_db(tmp_path, source.name, target.name)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "chatapp: TO differs from FROM (messages, largest id, characters): if FROM was written to during the "
        "copy, run copy-db again; if TO held data of its own, copy into an empty database"]
    assert "messages" in result.stdout and "differs" in result.stdout
