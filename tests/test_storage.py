"""Storage on a real SQLite file: migrations recorded once, ownership, message lifecycle."""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from chatapp.storage import MIGRATIONS, Store


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
