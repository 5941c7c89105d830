"""The store on a real database, each test on a SQLite file and on PostgreSQL: migrations recorded
once, ownership, the message lifecycle, transactions whole or not at all, places claimed
atomically across workers."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, date, datetime
from pathlib import Path

import aiosqlite
import pytest

from chatapp.db.migrations import MIGRATIONS
from chatapp.storage import AlreadySent, ConversationGone, Final, StillWriting, Store
from tests.support.faults import fail_writes, stop_failing_writes


async def test_migrations_are_applied_once_and_recorded(blank_database: str) -> None:
    store = await Store.open(blank_database, migrate=False)
    assert await store.db.applied_migrations() == []
    assert await store.migrate() == [m.name for m in MIGRATIONS]
    assert await store.migrate() == []
    assert await store.db.applied_migrations() == [m.name for m in MIGRATIONS]
    await store.close()


@pytest.mark.sqlite_only
async def test_a_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    await (await Store.open(tmp_path / "db.sqlite")).close()
    async with aiosqlite.connect(tmp_path / "db.sqlite") as db:
        mode = await (await db.execute("PRAGMA journal_mode")).fetchone()
    assert mode[0] == "wal"


async def test_conversations_belong_to_their_owner(store: Store) -> None:
    await store.create_conversation("c1", "alice", "")
    assert (await store.conversation("c1", "alice")).id == "c1"
    assert await store.conversation("c1", "mallory") is None
    assert (await store.newest_conversation("alice")).id == "c1"
    assert await store.newest_conversation("mallory") is None


async def test_message_lifecycle(store: Store) -> None:
    await store.create_conversation("c1", "alice", "")
    answer = await store.add_message("c1", "assistant", "", status="streaming", model="m")
    await store.save_partial(answer.id, "half")
    assert (await store.message(answer.id)).content == "half"
    done = await store.finish_message(answer.id, Final(content="whole", html="<p>whole</p>", status="complete", prompt_tokens=3, completion_tokens=1))
    assert (done.status, done.content, str(done.html), done.completion_tokens) == ("complete", "whole", "<p>whole</p>", 1)
    # A late partial save cannot overwrite a finished answer.
    await store.save_partial(answer.id, "stale")
    assert (await store.message(answer.id)).content == "whole"


async def test_a_resent_form_never_undoes_another_write(database: str) -> None:
    """The connection is shared: a refused duplicate must not roll back anyone else's work."""
    store = await Store.open(database)
    await store.create_conversation("c1", "alice", "")
    await store.add_message("c1", "user", "question", status="complete", send_token="t1")
    answer = await store.add_message("c1", "assistant", "", status="streaming")

    async def duplicate() -> None:
        try:
            await store.add_message("c1", "user", "question", status="complete", send_token="t1")
        except AlreadySent:
            return
        raise AssertionError("the duplicate was stored")

    others = [store.add_message("c1", "user", f"other {i}", status="complete") for i in range(5)]
    await asyncio.gather(
        duplicate(), *others,
        store.finish_message(answer.id, Final(content="kept", html="<p>kept</p>", status="complete")), duplicate(),
    )
    await store.close()
    reopened = await Store.open(database)
    messages = await reopened.messages("c1")
    assert [m.content for m in messages if m.role == "user"].count("question") == 1
    assert sum(m.content.startswith("other") for m in messages) == 5
    assert (await reopened.message(answer.id)).status == "complete"
    await reopened.close()


async def test_two_first_messages_racing_create_one_conversation(store: Store) -> None:
    first, second = await asyncio.gather(*(store.create_conversation("c1", "alice", "") for _ in range(2)))
    assert first == second and first.id == "c1"
    assert await store.create_conversation("c1", "mallory", "") is None


async def test_workers_starting_together_migrate_once(blank_database: str) -> None:
    stores = await asyncio.gather(*(Store.open(blank_database, migrate=False) for _ in range(4)))
    applied = await asyncio.gather(*(store.migrate() for store in stores))
    assert sorted(name for names in applied for name in names) == sorted(m.name for m in MIGRATIONS)
    assert await stores[0].db.applied_migrations() == [m.name for m in MIGRATIONS]
    keys = {await store.setting("secret_key", lambda: str(id(object()))) for store in stores}
    assert len(keys) == 1  # every worker signs with the same generated key
    for store in stores:
        await store.close()


async def test_usage_is_a_ledger_that_deleting_does_not_touch(store: Store) -> None:
    today = datetime.now(UTC).date()
    await store.create_conversation("c1", "alice", "")
    answer = await store.add_message("c1", "assistant", "", status="streaming")
    await store.finish_message(answer.id, Final(content="a", html="<p>a</p>", status="complete", prompt_tokens=30, completion_tokens=12), owner="alice")
    assert await store.delete_conversation("c1", "alice")
    assert await store.tokens_used_on(today, "alice") == 42
    assert await store.tokens_used_on(today, "bob") == 0
    assert await store.tokens_used_on(today) == 42


async def test_an_answer_whose_conversation_was_deleted_is_still_charged(store: Store) -> None:
    await store.create_conversation("c1", "alice", "")
    answer = await store.add_message("c1", "assistant", "", status="streaming")
    assert await store.claim_stream("s1", "alice", most=1, silent_for=60)
    assert await store.save_partial(answer.id, "so far")
    await store.delete_conversation("c1", "alice")
    assert not await store.save_partial(answer.id, "more")  # gone: the writer stops
    finished = await store.finish_message(answer.id, Final(content="more", html="", status="stopped", prompt_tokens=5, completion_tokens=5), owner="alice", stream_id="s1")
    assert finished is None
    assert await store.tokens_used_on(datetime.now(UTC).date(), "alice") == 10
    assert await store.claim_stream("s2", "alice", most=1, silent_for=60)  # the place was given back


async def test_stream_places_are_claimed_atomically_across_workers(database: str) -> None:
    workers = [await Store.open(database) for _ in range(2)]
    claims = await asyncio.gather(*(worker.claim_stream(f"{n}-{i}", "alice", most=2, silent_for=60)
                                    for n, worker in enumerate(workers) for i in range(10)))
    assert sum(claims) == 2
    # An abandoned place (its process died: never kept alive) is free again after the silence.
    assert await workers[0].claim_stream("late", "alice", most=3, silent_for=60)
    assert not await workers[0].claim_stream("later", "alice", most=3, silent_for=60)
    await asyncio.sleep(0.05)
    assert await workers[1].claim_stream("after-silence", "alice", most=1, silent_for=0.01)
    for worker in workers:
        await worker.close()


@pytest.mark.sqlite_only  # the ledger came after the first PostgreSQL migration
async def test_the_usage_ledger_starts_from_the_answers_already_kept(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "db.sqlite") as db:  # a database from before the ledger
        for script in (m.sqlite for m in MIGRATIONS[:4]):
            await db.executescript(script)
        await db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        await db.executemany("INSERT INTO migrations VALUES (?, '2026-11-01')", [(m.name,) for m in MIGRATIONS[:4]])
        await db.execute("INSERT INTO conversations VALUES ('c1', 'alice', '', '2026-11-30', '2026-11-30', "
                         "NULL, NULL, NULL, NULL)")
        for day, tokens in [("2026-11-30T10:00:00.000+00:00", 7), ("2026-12-01T09:00:00.000+00:00", 20),
                            ("2026-12-01T11:00:00.000+00:00", 3)]:
            await db.execute("INSERT INTO messages (conversation_id, role, content, status, prompt_tokens, "
                             "completion_tokens, created_at, updated_at) VALUES ('c1', 'assistant', '', "
                             "'complete', ?, 0, ?, ?)", (tokens, day, day))
        await db.commit()
    store = await Store.open(tmp_path / "db.sqlite")
    assert await store.tokens_used_on(date(2026, 12, 1), "alice") == 23
    assert await store.tokens_used_on(date(2026, 11, 30)) == 7
    await store.close()


async def test_answers_kept_alive_hold_their_places_and_stay_busy(store: Store) -> None:
    await store.create_conversation("c1", "alice", "")
    answer = await store.add_message("c1", "assistant", "", status="streaming")
    assert await store.claim_stream("live", "alice", most=2, silent_for=60)
    assert await store.claim_stream("dead", "alice", most=2, silent_for=60)
    await store.db.rows("UPDATE streams SET seen_at = seen_at - 100")
    await store.db.rows("UPDATE messages SET updated_at = '2000-01-01T00:00:00.000+00:00'")
    # A model thinking, or a reader that stopped reading: no text moves, the process still writes.
    await store.keep_alive(["live"], [answer.id], silent_for=60)
    assert (await store.message(answer.id)).updated_at > "2026"  # not settled as abandoned
    assert await store.claim_stream("new", "alice", most=2, silent_for=60)  # "dead" was freed…
    assert not await store.claim_stream("newer", "alice", most=2, silent_for=60)  # …"live" was not


async def test_a_turn_is_written_whole_or_not_at_all(store: Store) -> None:
    await store.create_conversation("c1", "alice", "")
    await store.add_message("c1", "user", "first question", status="complete")
    await store.add_message("c1", "assistant", "first answer", status="complete")
    before = await store.messages("c1")
    # The disk fills up as the new answer is stored: after the old turn was hidden and the edited
    # question written, in the same transaction.
    await fail_writes(store, "BEFORE INSERT ON messages", when="NEW.role = 'assistant'")
    with pytest.raises(Exception, match="disk is full"):
        await store.add_turn("c1", model="m", question="edited question", replacing=tuple(m.id for m in before))
    assert await store.messages("c1") == before  # nothing hidden, nothing added
    await stop_failing_writes(store)
    user, answer = await store.add_turn("c1", model="m", question="edited question",
                                        replacing=tuple(m.id for m in before))
    assert [m.id for m in await store.messages("c1")] == [user.id, answer.id] and answer.status == "streaming"


async def test_an_answer_and_the_one_it_brings_back_are_saved_together_or_not_at_all(store: Store) -> None:
    """A regeneration that gave nothing shows the old answer again in the same transaction that
    saves the new one (which says why it failed, but is not a version to switch to): never a
    question left with no answer."""
    await store.create_conversation("c1", "alice", "")
    question = await store.add_message("c1", "user", "question", status="complete")
    old = await store.add_message("c1", "assistant", "old answer", status="complete")
    _, new = await store.add_turn("c1", model="m", replacing=(old.id,), version_of=old.id)
    await fail_writes(store, "BEFORE UPDATE OF hidden ON messages")
    with pytest.raises(Exception, match="disk is full"):
        await store.finish_message(new.id, Final(content="", html="", status="error", error="failed"), restore=[old.id])
    assert (await store.message(new.id)).status == "streaming" and (await store.message(old.id)).hidden
    await stop_failing_writes(store)
    await store.finish_message(new.id, Final(content="", html="", status="error", error="failed"), restore=[old.id])
    assert [m.id for m in await store.messages("c1")] == [question.id, old.id, new.id]
    assert [(await store.message(i)).versions for i in (old.id, new.id)] == [1, 1]


async def test_a_turn_sent_twice_is_stored_once(store: Store) -> None:
    await store.create_conversation("c1", "alice", "")
    await store.add_turn("c1", model="m", question="hello", send_token="form-1")
    with pytest.raises(AlreadySent):
        await store.add_turn("c1", model="m", question="hello", send_token="form-1")
    assert [m.role for m in await store.messages("c1")] == ["user", "assistant"]  # no second empty answer


async def test_a_question_comes_back_with_the_conversation_before_it(store: Store) -> None:
    """ask: the visible messages as `messages` read them, and the turn written, in one transaction."""
    await store.create_conversation("c1", "alice", "")
    _, first = await store.add_turn("c1", model="m", question="first")
    await store.finish_message(first.id, Final(content="an answer", html="<p>an answer</p>", status="complete"))
    await store.add_turn("c1", model="m", replacing=(first.id,), version_of=first.id)  # first is hidden now
    before = await store.messages("c1")
    earlier, user, answer = await store.ask("c1", model="m", question="second", send_token="form-2")
    assert earlier == before and first.id not in [m.id for m in earlier]
    assert (user.role, user.content, answer.status) == ("user", "second", "streaming")
    assert await store.messages("c1") == [*before, user, answer]
    with pytest.raises(AlreadySent):
        await store.ask("c1", model="m", question="second", send_token="form-2")
    assert await store.messages("c1") == [*before, user, answer]
    with pytest.raises(ConversationGone):
        await store.ask("never-was", model="m", question="hello")


async def test_a_drafts_first_question_stores_the_conversation_with_it(store: Store) -> None:
    """ask(new=draft): the conversation, its choices, the question and the empty answer in one
    transaction; the same owner's second first question, racing it, joins it; another owner's id,
    or a question that cannot be stored, leaves nothing behind."""
    draft = dataclasses.replace(store.draft("c1", "alice", "a title"), preset="concise", model="m2")
    asked = await asyncio.gather(*(store.ask("c1", model="m2", question=q, new=draft) for q in ("one", "two")))
    (before, *earliest), (joined, *latest) = sorted(asked, key=lambda turn: turn[1].id)  # as they were stored
    assert before == [] and earliest[0].content in ("one", "two") and earliest[1].status == "streaming"
    assert [m.id for m in joined] == [m.id for m in earliest]  # the second saw the first's turn before it
    assert [m.id for m in await store.messages("c1")] == [m.id for m in [*earliest, *latest]]
    assert await store.conversation("c1", "alice") == draft
    with pytest.raises(ConversationGone):
        await store.ask("c1", model="m", question="hello", new=store.draft("c1", "mallory", "mine"))
    assert await store.conversation("c1", "mallory") is None and len(await store.messages("c1")) == 4
    await fail_writes(store, "BEFORE INSERT ON messages", when="NEW.role = 'assistant'")
    with pytest.raises(Exception, match="disk is full"):
        await store.ask("c2", model="m", question="hello", new=store.draft("c2", "alice", ""))
    assert await store.conversation("c2", "alice") is None and await store.messages("c2") == []


async def test_a_turn_in_a_deleted_conversation_is_refused(store: Store) -> None:
    with pytest.raises(ConversationGone):
        await store.add_turn("never-was", model="m", question="hello")


async def test_a_turn_whose_caller_left_while_it_was_written_is_not_left_streaming(store: Store) -> None:
    await store.create_conversation("c1", "alice", "")
    adding = asyncio.ensure_future(store.add_turn("c1", model="m", question="hello"))
    for _ in range(3):  # until the write is queued on the database thread, where it runs to the end
        await asyncio.sleep(0)
    adding.cancel()  # the client left as its message arrived
    with pytest.raises(asyncio.CancelledError):
        await adding
    for _ in range(100):
        statuses = [m.status for m in await store.messages("c1") if m.role == "assistant"]
        if statuses and "streaming" not in statuses:
            break
        await asyncio.sleep(0.01)
    assert statuses == ["stopped"]  # stored, and settled at once: nothing will write it


async def test_each_regenerated_answer_is_a_version_the_person_can_switch_back_to(store: Store) -> None:
    await store.create_conversation("c1", "alice", "")
    question, first = await store.add_turn("c1", model="m", question="question")
    answers = [first]
    for text in ("first", "second", "third"):
        await store.finish_message(answers[-1].id, Final(content=text, html=text, status="complete"))
        if text != "third":
            _, new = await store.add_turn("c1", model="m", replacing=(answers[-1].id,), version_of=answers[-1].id)
            answers.append(new)
    shown = await store.messages("c1")
    assert [(m.id, m.version, m.versions) for m in shown] == [(question.id, 1, 1), (answers[2].id, 3, 3)]
    assert {answer.id: (await store.message(answer.id)).version_of for answer in answers} == dict.fromkeys(
        (a.id for a in answers), first.id)

    back = await store.show_version("c1", answers[2].id, -1)
    assert (back.id, back.content, back.version, back.versions) == (answers[1].id, "second", 2, 3)
    assert [m.id for m in await store.messages("c1")] == [question.id, answers[1].id]  # what the model sees next
    assert (await store.show_version("c1", answers[1].id, -1)).id == first.id
    assert (await store.show_version("c1", first.id, -1)).id == first.id  # the first stays first
    assert (await store.show_version("c1", first.id, 1)).id == answers[1].id
    # Only the shown answer of this conversation can be switched from.
    assert await store.show_version("c1", first.id, 1) is None  # hidden now
    assert await store.show_version("c2", answers[1].id, 1) is None
    assert await store.show_version("c1", question.id, 1) == await store.message(question.id)  # nothing to switch


async def test_versions_do_not_switch_while_one_is_being_written(store: Store) -> None:
    await store.create_conversation("c1", "alice", "")
    _, first = await store.add_turn("c1", model="m", question="question")
    await store.finish_message(first.id, Final(content="one", html="one", status="complete"))
    _, second = await store.add_turn("c1", model="m", replacing=(first.id,), version_of=first.id)
    with pytest.raises(StillWriting):
        await store.show_version("c1", second.id, -1)
    assert [m.id for m in await store.messages("c1")][-1] == second.id
    finished = await store.finish_message(second.id, Final(content="two", html="two", status="complete"))
    assert (finished.version, finished.versions) == (2, 2)  # the closing frame shows the switch at once
    assert (await store.show_version("c1", second.id, -1)).id == first.id


async def test_keeping_answers_alive_and_finishing_them_at_once_never_deadlock(database: str) -> None:
    """Two transactions that lock a place and its answer must take them in the same order: on
    PostgreSQL, opposite orders deadlock (the heartbeat's keep_alive against an answer's save)."""
    stores = [await Store.open(database) for _ in range(2)]
    await stores[0].create_conversation("c1", "alice", "")
    for round_ in range(30):
        stream = f"s{round_}"
        assert await stores[0].claim_stream(stream, "alice", most=100, silent_for=60)
        answer = await stores[0].add_message("c1", "assistant", "", status="streaming")
        await asyncio.gather(
            stores[0].keep_alive([stream], [answer.id], silent_for=60),
            stores[1].finish_message(answer.id, Final(content="done", html="<p>done</p>", status="complete"),
                                     stream_id=stream),
            stores[0].keep_alive([stream], [answer.id], silent_for=60),
        )
        assert (await stores[0].message(answer.id)).status == "complete"
    for store in stores:
        await store.close()


async def test_a_transaction_the_database_gave_up_is_run_again(store: Store) -> None:
    """Retryable (a deadlock's victim, a lock held too long) means nothing was written: the store
    runs the transaction again, from the start."""
    from chatapp.db import Retryable

    real, given_up = store.db.transaction, []

    async def gives_up_once(body, *, lock=None):  # the database's answer, the first time
        if not given_up:
            given_up.append(lock)
            body.close()
            raise Retryable("deadlock detected")
        return await real(body, lock=lock)

    store.db.transaction = gives_up_once  # type: ignore[method-assign]
    try:
        assert await store.claim_stream("s1", "alice", most=1, silent_for=60)
    finally:
        store.db.transaction = real  # type: ignore[method-assign]
    assert given_up == ["streams alice"]
    assert not await store.claim_stream("s2", "alice", most=1, silent_for=60)  # claimed once, not twice
