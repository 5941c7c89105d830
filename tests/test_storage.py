"""Storage on a real SQLite file: migrations recorded once, ownership, message lifecycle."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite

from chatapp.migrations import MIGRATIONS
from chatapp.storage import AlreadySent, Store


async def test_migrations_are_applied_once_and_recorded(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    assert await store.migrate() == []  # already applied by open()
    await store.close()
    async with aiosqlite.connect(tmp_path / "db.sqlite") as db:
        rows = await (await db.execute("SELECT name FROM migrations")).fetchall()
        mode = await (await db.execute("PRAGMA journal_mode")).fetchone()
    assert [name for (name,) in rows] == [name for name, _ in MIGRATIONS]
    assert mode[0] == "wal"


async def test_conversations_belong_to_their_owner(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    await store.create_conversation("c1", "alice", "")
    assert (await store.conversation("c1", "alice")).id == "c1"
    assert await store.conversation("c1", "mallory") is None
    assert (await store.newest_conversation("alice")).id == "c1"
    assert await store.newest_conversation("mallory") is None
    await store.close()


async def test_message_lifecycle(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    await store.create_conversation("c1", "alice", "")
    answer = await store.add_message("c1", "assistant", "", status="streaming", model="m")
    await store.save_partial(answer.id, "half")
    assert (await store.message(answer.id)).content == "half"
    done = await store.finish_message(answer.id, content="whole", html="<p>whole</p>", status="complete",
                                      prompt_tokens=3, completion_tokens=1)
    assert (done.status, done.content, str(done.html), done.completion_tokens) == ("complete", "whole", "<p>whole</p>", 1)
    # A late partial save cannot overwrite a finished answer.
    await store.save_partial(answer.id, "stale")
    assert (await store.message(answer.id)).content == "whole"
    await store.close()


async def test_a_resent_form_never_undoes_another_write(tmp_path: Path) -> None:
    """The connection is shared: a refused duplicate must not roll back anyone else's work."""
    store = await Store.open(tmp_path / "db.sqlite")
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
        store.finish_message(answer.id, content="kept", html="<p>kept</p>", status="complete"), duplicate(),
    )
    await store.close()
    reopened = await Store.open(tmp_path / "db.sqlite")
    messages = await reopened.messages("c1")
    assert [m.content for m in messages if m.role == "user"].count("question") == 1
    assert sum(m.content.startswith("other") for m in messages) == 5
    assert (await reopened.message(answer.id)).status == "complete"
    await reopened.close()


async def test_two_first_messages_racing_create_one_conversation(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    first, second = await asyncio.gather(*(store.create_conversation("c1", "alice", "") for _ in range(2)))
    assert first == second and first.id == "c1"
    assert await store.create_conversation("c1", "mallory", "") is None
    await store.close()


async def test_workers_starting_together_migrate_once(tmp_path: Path) -> None:
    stores = await asyncio.gather(*(Store.open(tmp_path / "db.sqlite") for _ in range(4)))
    async with aiosqlite.connect(tmp_path / "db.sqlite") as db:
        rows = await (await db.execute("SELECT name FROM migrations")).fetchall()
    assert sorted(name for (name,) in rows) == sorted(name for name, _ in MIGRATIONS)
    keys = {await store.setting("secret_key", lambda: str(id(object()))) for store in stores}
    assert len(keys) == 1  # every worker signs with the same generated key
    for store in stores:
        await store.close()
