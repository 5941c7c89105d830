"""Conversations, messages, and the state every process shares (limits, places, sessions), in
the database (chatapp.db: SQLite or PostgreSQL, the same SQL for both). Nothing else in the app
writes SQL.

Rendered HTML of finished messages is stored beside the raw markdown, so a page load never re-runs
markdown; the raw text is what goes back to the model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar, overload

from markupsafe import Markup

from . import db as database
from .db import Database, Many, MissingParent, Row, Statement, Transaction, as_dict, first, run_transaction

STREAMING, COMPLETE, STOPPED, ERROR = "streaming", "complete", "stopped", "error"
# A process silent this long (seconds) is gone: it says it is alive every second (`heartbeat`),
# and a busy event loop or a slow database can delay that by a few.
WRITER_SILENCE = 5.0

T = TypeVar("T")


class AlreadySent(Exception):
    """This form submission was stored before (a reload or a double click re-sent it)."""


class ConversationGone(Exception):
    """The conversation was deleted while a message was being added to it."""


class StillWriting(Exception):
    """One of the versions of this answer is being written: the shown one cannot change yet."""


@dataclass(frozen=True)
class Conversation:
    id: str
    owner: str
    title: str
    created_at: str
    preset: str | None = None
    language: str | None = None
    system_prompt: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: str
    role: str
    content: str
    html: Markup | None
    status: str
    error: str | None
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    created_at: str
    updated_at: str
    hidden: bool = False
    reasoning: str = ""  # a reasoning model's thinking, as it wrote it (markdown)
    reasoning_html: Markup | None = None
    thinking_seconds: float | None = None  # from its first thought to its first word of answer
    finish_reason: str | None = None  # as the model server said: "stop", "length", "content_filter"
    version_of: int | None = None  # the first answer to the same question, once there are several
    writer: str | None = None  # the process writing it, while it is written (Store.writer)
    version: int = 1  # this answer's place among its question's answers, oldest first
    versions: int = 1

    @property
    def busy(self) -> bool:
        return self.status == STREAMING


@dataclass(frozen=True)
class Final:
    """An answer's final state, as finish_message saves it (each field a column of `messages`)."""

    content: str
    html: str
    status: str
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning: str = ""
    reasoning_html: str | None = None
    thinking_seconds: float | None = None
    finish_reason: str | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_conversation_id() -> str:
    """128 random bits: a conversation id cannot be guessed."""
    return secrets.token_urlsafe(16)


class Store:
    """The app's one database (a connection, or a pool of them), shared by every request."""

    def __init__(self, db: Database):
        self.db = db
        self._finishing: set[asyncio.Task] = set()
        # This process, among those that write answers to the same database (workers, replicas):
        # it says it is alive (`heartbeat`), and its answers and places carry its name.
        self.writer = secrets.token_hex(8)

    async def _rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        return await self.db.rows(sql, parameters)

    async def _row(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        return first(await self.db.rows(sql, parameters))

    async def _one(self, sql: str, parameters: Sequence[Any] = ()) -> Row:
        """The row of a statement that always returns one (an aggregate, an upsert's RETURNING)."""
        row = await self._row(sql, parameters)
        if row is None:
            raise LookupError(f"no row where one was certain: {sql[:60]}")
        return row

    async def _transaction(self, body: Callable[[], Transaction[T]], *, lock: str | None = None) -> T:
        return await run_transaction(self.db, body, lock=lock)

    @classmethod
    async def open(cls, location: str | Path, *, pool_size: int = 10, migrate: bool = True) -> Store:
        """The store on the database at `location` (a PostgreSQL URL, or a SQLite file), with its
        schema brought up to date."""
        store = cls(await database.connect(location, pool_size=pool_size))
        if migrate:
            await store.migrate()
        return store

    async def close(self) -> None:
        # Answers being saved as the server stops are written before the connection closes.
        await asyncio.gather(*self._finishing, return_exceptions=True)
        await self.db.close()

    async def migrate(self) -> list[str]:
        return await self.db.migrate()

    async def check_writable(self) -> None:
        """Raises if the database cannot take a write now (read-only, full, unreachable)."""
        await self.db.check_writable()

    async def setting(self, name: str, make: Callable[[], str]) -> str:
        """The stored value, or `make()`'s, stored first: every worker gets the same one."""
        await self._rows("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING", (name, make()))
        return (await self._one("SELECT value FROM settings WHERE name = ?", (name,)))["value"]

    async def hit(self, key: str, window: int, ends: float) -> int:
        """Count one more request for `key` in its time window number `window` (which ends at the
        Unix time `ends`); returns the count so far in that window."""
        (hits,) = await self._one(
            'INSERT INTO rate_limits (key, "window", hits, ends) VALUES (?, ?, 1, ?) ON CONFLICT (key) DO UPDATE '
            'SET hits = CASE WHEN rate_limits."window" = excluded."window" THEN rate_limits.hits + 1 ELSE 1 END, '
            '"window" = excluded."window", ends = excluded.ends RETURNING hits',
            (key, window, ends),
        )
        if random.random() < 0.01:  # now and then, forget the counters of windows gone by
            await self._rows("DELETE FROM rate_limits WHERE ends < ?", (time.time(),))
        return hits

    async def claim_stream(self, stream_id: str, owner: str, *, most: int, silent_for: float) -> bool:
        """Take one of this owner's `most` places for answers being written, if one is free: the
        count and the claim are one transaction. Places not kept alive (`keep_alive`) for
        `silent_for` seconds, or whose process has stopped saying it is alive (`heartbeat`), were
        abandoned (a process that died) and are free again."""
        now = time.time()

        def claim() -> Transaction[bool]:
            yield Statement("DELETE FROM streams WHERE owner = ? AND (seen_at < ? OR writer IN "
                            "(SELECT id FROM writers WHERE seen_at < ?))",
                            (owner, now - silent_for, now - WRITER_SILENCE))
            [(taken,)] = yield Statement("SELECT COUNT(*) FROM streams WHERE owner = ?", (owner,))
            if taken >= most:
                return False
            yield Statement("INSERT INTO streams (id, owner, seen_at, writer) VALUES (?, ?, ?, ?)",
                            (stream_id, owner, now, self.writer))
            return True

        return await self._transaction(claim, lock=f"streams {owner}")

    async def release_stream(self, stream_id: str) -> None:
        await self._rows("DELETE FROM streams WHERE id = ?", (stream_id,))

    # sessions and sign-in failures

    async def add_session(self, session_id: str) -> None:
        now = time.time()
        await self._rows("INSERT INTO sessions (id, created_at, seen_at) VALUES (?, ?, ?)", (_hashed(session_id), now, now))

    async def session_alive(self, session_id: str, *, lifetime: float) -> bool:
        """Whether the session exists and was used within `lifetime` seconds; marks it used (at
        most once an hour: a write per request would be a write per page view)."""
        now = time.time()
        row = await self._row("SELECT seen_at FROM sessions WHERE id = ?", (_hashed(session_id),))
        if row is None or row["seen_at"] < now - lifetime:
            return False
        if row["seen_at"] < now - 3600:
            await self._rows("UPDATE sessions SET seen_at = ? WHERE id = ?", (now, _hashed(session_id)))
            await self._rows("DELETE FROM sessions WHERE seen_at < ?", (now - lifetime,))
        return True

    async def end_session(self, session_id: str) -> None:
        await self._rows("DELETE FROM sessions WHERE id = ?", (_hashed(session_id),))

    async def take_sign_in_attempt(self, key: str, wait_after: Callable[[int], float], *, forget_before: float) -> float:
        """Count a sign-in attempt for `key` as failed, before the passphrase is checked (so that
        attempts sent at the same instant all count), unless `wait_after(failures so far)` seconds
        have not passed since the last: then the seconds still to wait, and nothing is counted.
        Failures older than `forget_before` are forgotten. `sign_in_succeeded` takes it back."""
        now = time.time()

        def attempt() -> Transaction[float]:
            row = first((yield Statement("SELECT failures, last_at FROM sign_in_failures WHERE key = ? AND last_at >= ?",
                                         (key, forget_before))))
            failures, last_at = (row["failures"], row["last_at"]) if row else (0, 0.0)
            if (waiting := last_at + wait_after(failures) - now) > 0:
                return waiting
            yield Statement("INSERT INTO sign_in_failures (key, failures, last_at) VALUES (?, ?, ?) ON CONFLICT (key) "
                            "DO UPDATE SET failures = excluded.failures, last_at = excluded.last_at",
                            (key, failures + 1, now))
            if random.random() < 0.01:
                yield Statement("DELETE FROM sign_in_failures WHERE last_at < ?", (forget_before,))
            return 0.0

        return float(await self._transaction(attempt, lock=f"sign-in {key}"))

    async def sign_in_succeeded(self, key: str, *, forget: bool) -> None:
        """The attempt just taken was right: it is not a failure (and with `forget`, none are)."""
        if forget:
            await self._rows("DELETE FROM sign_in_failures WHERE key = ?", (key,))
        else:
            await self._rows("UPDATE sign_in_failures SET failures = CASE WHEN failures > 0 THEN failures - 1 "
                             "ELSE 0 END WHERE key = ?", (key,))

    # conversations

    async def create_conversation(self, conversation_id: str, owner: str, title: str) -> Conversation | None:
        """Create it, or return it if this owner's two first messages raced to create it."""
        draft = self.draft(conversation_id, owner, title)
        row = await self._row(_CREATE_CONVERSATION + f" RETURNING {_CONVERSATION}", _creation(draft))
        return Conversation(**row) if row else await self.conversation(conversation_id, owner)

    @staticmethod
    def draft(conversation_id: str, owner: str, title: str) -> Conversation:
        """A conversation not stored yet: ask(new=...) stores it with its first question."""
        return Conversation(conversation_id, owner, title, created_at=_now())

    async def conversation(self, conversation_id: str, owner: str) -> Conversation | None:
        """The conversation if this owner has it; another owner's looks exactly like a missing one."""
        row = await self._row(
            f"SELECT {_CONVERSATION} FROM conversations WHERE id = ? AND owner = ?", (conversation_id, owner))
        return Conversation(**row) if row else None

    async def newest_conversation(self, owner: str) -> Conversation | None:
        row = await self._row(
            f"SELECT {_CONVERSATION} FROM conversations WHERE owner = ? ORDER BY updated_at DESC LIMIT 1", (owner,))
        return Conversation(**row) if row else None

    async def conversations(self, owner: str, limit: int = 200) -> list[Conversation]:
        """This owner's conversations, the one with the newest message first."""
        rows = await self._rows(
            f"SELECT {_CONVERSATION} FROM conversations WHERE owner = ? ORDER BY updated_at DESC LIMIT ?",
            (owner, limit))
        return [Conversation(**row) for row in rows]

    async def update_conversation(self, conversation_id: str, owner: str, **changes: str | None) -> None:
        """Change some of: title, preset, language, system_prompt, model."""
        if not changes or not set(changes) <= {"title", "preset", "language", "system_prompt", "model"}:
            raise ValueError(f"not conversation settings: {sorted(changes)}")
        assignments = ", ".join(f"{name} = ?" for name in changes)
        await self._rows(
            f"UPDATE conversations SET {assignments} WHERE id = ? AND owner = ?",
            (*changes.values(), conversation_id, owner),
        )

    async def delete_conversation(self, conversation_id: str, owner: str) -> bool:
        """Delete it and its messages; False if this owner has no such conversation."""
        return bool(await self._rows(
            "DELETE FROM conversations WHERE id = ? AND owner = ? RETURNING id", (conversation_id, owner)))

    async def tokens_in_conversation(self, conversation_id: str) -> int:
        """Prompt and answer tokens of every answer in the conversation, replaced ones included."""
        (total,) = await self._one(
            "SELECT COALESCE(SUM(COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0)), 0) "
            "FROM messages WHERE conversation_id = ?", (conversation_id,),
        )
        return total

    async def tokens_used_on(self, day: date, owner: str | None = None) -> int:
        """Prompt and answer tokens spent on `day` (UTC), by one owner or by all: from the usage
        ledger, which deleting conversations does not touch."""
        # CAST: PostgreSQL sums BIGINTs as NUMERIC.
        query = "SELECT CAST(COALESCE(SUM(tokens), 0) AS BIGINT) FROM usage WHERE day = ?"
        params: tuple[str, ...] = (day.isoformat(),)
        if owner is not None:
            query, params = query + " AND owner = ?", (*params, owner)
        (total,) = await self._one(query, params)
        return total

    # messages

    async def messages(self, conversation_id: str) -> list[Message]:
        """The visible messages, oldest first (replaced ones are kept but left out)."""
        rows = await self._rows(
            f"SELECT {_MESSAGE} FROM messages m WHERE conversation_id = ? AND hidden = 0 ORDER BY id",
            (conversation_id,))
        return [_message(row) for row in rows]

    async def page_of_messages(self, conversation_id: str, *, before: int | None, size: int) -> tuple[list[Message], bool]:
        """The newest `size` visible messages (older than message `before`, if given), oldest first,
        and whether there are earlier ones."""
        rows = [_message(row) for row in await self._rows(
            f"SELECT {_MESSAGE} FROM messages m WHERE conversation_id = ? AND hidden = 0 AND id < ? "
            "ORDER BY id DESC LIMIT ?",
            (conversation_id, before if before is not None else 2**62, size + 1),
        )]
        return rows[:size][::-1], len(rows) > size

    async def message(self, message_id: int) -> Message | None:
        row = await self._row(f"SELECT {_MESSAGE} FROM messages m WHERE id = ?", (message_id,))
        return _message(row) if row else None

    async def show_version(self, conversation_id: str, message_id: int, step: int) -> Message | None:
        """Show the version of this shown answer `step` places away (-1: the one before, 1: the
        one after; at either end, the same one), hiding the others, in one transaction. None if
        the conversation has no such answer shown. Raises StillWriting while a version is written."""

        def show() -> Transaction[int | None]:
            row = first((yield Statement(
                "SELECT version_of FROM messages WHERE id = ? AND conversation_id = ? AND hidden = 0",
                (message_id, conversation_id))))
            if row is None or row["version_of"] is None:
                return None if row is None else message_id
            versions = yield Statement("SELECT id, status FROM messages WHERE version_of = ? ORDER BY id",
                                       (row["version_of"],))
            if any(version["status"] == STREAMING for version in versions):
                raise StillWriting(message_id)
            ids = [version["id"] for version in versions]
            shown = ids[min(max(ids.index(message_id) + step, 0), len(ids) - 1)]
            yield Statement("UPDATE messages SET hidden = CASE WHEN id = ? THEN 0 ELSE 1 END WHERE version_of = ?",
                            (shown, row["version_of"]))
            return shown

        shown = await self._transaction(show, lock=f"versions {conversation_id}")
        return await self.message(shown) if shown is not None else None

    async def add_message(
        self,
        conversation_id: str,
        role: str,
        content: str,
        *,
        status: str,
        html: str | None = None,
        model: str | None = None,
        send_token: str | None = None,
    ) -> Message:
        """Raises AlreadySent if this conversation has a message with this send_token, and
        ConversationGone if it was deleted meanwhile. (A trigger
        moves the conversation's updated_at, which orders the side list.)"""
        now = _now()
        try:
            row = await self._row(_ADD_MESSAGE, (conversation_id, role, content, html, status, model, send_token,
                                                 self.writer if status == STREAMING else None, now, now))
        except MissingParent:
            raise ConversationGone(conversation_id) from None
        if row is None:
            raise AlreadySent(send_token)
        return _message(row)

    async def ask(self, conversation_id: str, *, model: str, question: str, send_token: str | None = None,
                  new: Conversation | None = None) -> tuple[list[Message], Message, Message]:
        """A new question: the visible messages before it (as `messages` reads them), then
        add_turn's writes, in one transaction (one trip to the database). With `new` (a draft's
        first question, see draft()), the conversation is created in the same transaction; if its
        first two questions race, the second joins it. Raises as add_turn does, and
        ConversationGone if another owner has the id."""
        earlier, user, answer = await self._add_turn(conversation_id, model=model, question=question,
                                                     send_token=send_token, read_earlier=True, new=new)
        assert user is not None
        return earlier, user, answer

    @overload
    async def add_turn(self, conversation_id: str, *, model: str, question: str, send_token: str | None = None,
                       replacing: tuple[int, ...] = ()) -> tuple[Message, Message]: ...

    @overload
    async def add_turn(self, conversation_id: str, *, model: str, question: None = None,
                       send_token: str | None = None, replacing: tuple[int, ...] = (),
                       version_of: int | None = None) -> tuple[None, Message]: ...

    async def add_turn(self, conversation_id: str, *, model: str, question: str | None = None,
                       send_token: str | None = None, replacing: tuple[int, ...] = (),
                       version_of: int | None = None) -> tuple[Message | None, Message]:
        """One turn's writes, all or nothing: the messages it replaces hidden, the question stored
        (unless the answer is written again for the same one: then it is a new version of the
        answer `version_of`), and its answer, empty and `streaming`. Raises AlreadySent (this form
        submission was stored before) and ConversationGone as add_message does, with nothing
        written."""
        _, user, answer = await self._add_turn(conversation_id, model=model, question=question, send_token=send_token,
                                               replacing=replacing, version_of=version_of)
        return user, answer

    async def _add_turn(self, conversation_id: str, *, model: str, question: str | None = None,
                        send_token: str | None = None, replacing: tuple[int, ...] = (),
                        version_of: int | None = None, read_earlier: bool = False,
                        new: Conversation | None = None) -> tuple[list[Message], Message | None, Message]:
        now = _now()

        def write() -> Transaction[tuple[list[Row], Row | None, Row]]:
            earlier: list[Row] = []
            created = False
            if new is not None:
                created = bool((yield Statement(_CREATE_CONVERSATION + " RETURNING id", _creation(new))))
                if not created and not (yield Statement("SELECT 1 FROM conversations WHERE id = ? AND owner = ?",
                                                        (conversation_id, new.owner))):
                    raise ConversationGone(conversation_id)  # another owner's (128 random bits: never)
            if read_earlier and not created:
                earlier = yield Statement(f"SELECT {_MESSAGE} FROM messages m WHERE conversation_id = ? AND hidden = 0 "
                                          "ORDER BY id", (conversation_id,))
            if replacing:
                yield Many("UPDATE messages SET hidden = 1 WHERE id = ? AND conversation_id = ?",
                           [(message_id, conversation_id) for message_id in replacing])
            user = None
            if question is not None:
                user = first((yield Statement(_ADD_MESSAGE, (conversation_id, "user", question, None, COMPLETE, None,
                                                             send_token, None, now, now))))
                if user is None:
                    raise AlreadySent(send_token)
            [answer] = yield Statement(_ADD_MESSAGE, (conversation_id, "assistant", "", None, STREAMING, model,
                                                      None, self.writer, now, now))
            if version_of is not None:  # the first answer to the question names the versions
                yield Statement("UPDATE messages SET version_of = COALESCE(version_of, id) "
                                "WHERE id = ? AND conversation_id = ?", (version_of, conversation_id))
                [answer] = yield Statement("UPDATE messages SET version_of = (SELECT version_of FROM messages "
                                           "WHERE id = ?) WHERE id = ? RETURNING *", (version_of, answer["id"]))
            return earlier, user, answer

        writing = asyncio.ensure_future(self._transaction(write))
        try:
            earlier, user, answer = await asyncio.shield(writing)
        except MissingParent:
            raise ConversationGone(conversation_id) from None
        except asyncio.CancelledError:
            # The caller left (a client gone as its message arrived) while the turn was written:
            # it lands all the same, but nothing will write its answer. Saved as stopped at once,
            # rather than left "streaming" until a page load finds it abandoned.
            self._keep_until_closed(self._stop_unwritten_answer(writing))
            raise
        return [_message(row) for row in earlier], (_message(user) if user is not None else None), _message(answer)

    async def _stop_unwritten_answer(self, writing: asyncio.Future[tuple[list[Row], Row | None, Row]]) -> None:
        try:
            *_, answer = await writing
        except Exception:  # nothing was written
            return
        await self._finish_message(answer["id"], Final(content="", html="", status=STOPPED))

    def _keep_until_closed(self, work: Awaitable[T]) -> asyncio.Task[T]:
        """Run `work` to the end whatever happens to its caller; close() waits for it."""
        task = asyncio.ensure_future(work)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        return task

    async def save_partial(self, message_id: int, content: str, reasoning: str = "") -> bool:
        """Keep the text (and reasoning) so far while an answer streams, so a crash or a reload
        loses little. False if the answer is no longer being written (its conversation was deleted
        meanwhile)."""
        return bool(await self._rows(
            "UPDATE messages SET content = ?, reasoning = ?, updated_at = ? WHERE id = ? AND status = 'streaming' "
            "RETURNING id", (content, reasoning, _now(), message_id)))

    async def keep_alive(self, stream_ids: list[str], message_ids: list[int], *, silent_for: float) -> None:
        """This process's answers are still being written, whether or not their text moves (a model
        thinking, a reader that stopped reading): their places and their messages stay live. Places
        no process has kept alive for `silent_for` seconds are freed."""
        now = time.time()

        def touch() -> Transaction[None]:
            # Rows in one order, streams before messages, as finish_message takes them too: two
            # transactions that lock the same rows in opposite orders deadlock on PostgreSQL.
            yield Many("UPDATE streams SET seen_at = ? WHERE id = ?", [(now, i) for i in sorted(stream_ids)])
            yield Many("UPDATE messages SET updated_at = ? WHERE id = ? AND status = 'streaming'",
                       [(_now(), i) for i in sorted(message_ids)])
            yield Statement("DELETE FROM streams WHERE seen_at < ?", (now - silent_for,))

        await self._transaction(touch)

    async def heartbeat(self) -> list[int]:
        """Say that this process is alive (every second or so, while it serves), and learn which
        of its answers someone asked to stop (`ask_stop`, on any process)."""
        now = time.time()

        def beat() -> Transaction[list[int]]:
            yield Statement("INSERT INTO writers (id, seen_at) VALUES (?, ?) "
                            "ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at", (self.writer, now))
            if random.random() < 0.001:  # now and then, forget the processes long gone
                yield Statement("DELETE FROM writers WHERE seen_at < ?", (now - 86400,))
            stops = yield Statement("SELECT id FROM messages WHERE writer = ? AND stop_asked = 1 "
                                    "AND status = 'streaming'", (self.writer,))
            return [row["id"] for row in stops]

        return await self._transaction(beat)

    async def ask_stop(self, conversation_id: str, message_id: int) -> bool:
        """Ask the process writing this answer to stop it (it reads this with its next heartbeat);
        False if the answer is not being written."""
        return bool(await self._rows(
            "UPDATE messages SET stop_asked = 1 WHERE id = ? AND conversation_id = ? AND status = 'streaming' "
            "RETURNING id", (message_id, conversation_id)))

    async def writer_gone(self, writer: str) -> bool:
        """Whether the process that was writing an answer has stopped saying it is alive (killed,
        or its host lost): then nobody will finish the answer."""
        row = await self._row("SELECT seen_at FROM writers WHERE id = ?", (writer,))
        return row is None or row["seen_at"] < time.time() - WRITER_SILENCE

    async def finish_message(self, message_id: int, final: Final, *, owner: str | None = None,
                             stream_id: str | None = None, restore: Sequence[int] = ()) -> Message | None:
        """Save an answer's final state, charge its tokens to `owner` in the usage ledger, give
        back its place (`stream_id`) and show the messages it was to replace again (`restore`: the
        answer then is a failed try, which says why but is not counted as a version), in one
        transaction. None if the answer is gone (its conversation was deleted): the tokens are
        charged all the same. This runs to the end even if the caller is cancelled meanwhile (a
        client leaving mid-save must not lose the answer), and close() waits for it."""
        return await asyncio.shield(self._keep_until_closed(self._finish_message(
            message_id, final, owner=owner, stream_id=stream_id, restore=restore)))

    async def _finish_message(self, message_id: int, final: Final, *, owner: str | None = None,
                              stream_id: str | None = None, restore: Sequence[int] = ()) -> Message | None:
        tokens = (final.prompt_tokens or 0) + (final.completion_tokens or 0)

        def finish() -> Transaction[Row | None]:
            if stream_id is not None:  # its place first: keep_alive locks streams before messages
                yield Statement("DELETE FROM streams WHERE id = ?", (stream_id,))
            values = dataclasses.asdict(final)
            updated = yield Statement(
                f"UPDATE messages SET {', '.join(f'{name} = ?' for name in values)}, updated_at = ?, "
                "stop_asked = 0 WHERE id = ? RETURNING id",
                (*values.values(), _now(), message_id),
            )
            if owner is not None and tokens:
                yield Statement(
                    "INSERT INTO usage (owner, day, tokens) VALUES (?, ?, ?) "
                    "ON CONFLICT (owner, day) DO UPDATE SET tokens = usage.tokens + excluded.tokens",
                    (owner, datetime.now(UTC).date().isoformat(), tokens),
                )
            if not updated:
                return None
            if restore:
                yield Many("UPDATE messages SET hidden = 0 WHERE id = ?", [(i,) for i in restore])
                yield Statement("UPDATE messages SET version_of = NULL WHERE id = ?", (message_id,))
            return first((yield Statement(f"SELECT {_MESSAGE} FROM messages m WHERE id = ?", (message_id,))))

        row = await self._transaction(finish)
        return _message(row) if row is not None else None


_CONVERSATION = "id, owner, title, created_at, preset, language, system_prompt, model"
# A message, with its place among its question's answers (counted only where there are several).
_MESSAGE = (
    "m.*, CASE WHEN m.version_of IS NULL THEN 1 ELSE (SELECT COUNT(*) FROM messages v "
    "WHERE v.version_of = m.version_of AND v.id <= m.id) END AS version, "
    "CASE WHEN m.version_of IS NULL THEN 1 ELSE (SELECT COUNT(*) FROM messages v "
    "WHERE v.version_of = m.version_of) END AS versions"
)
_CREATE_CONVERSATION = (
    "INSERT INTO conversations (id, owner, title, created_at, updated_at, preset, language, system_prompt, model) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)


def _creation(conversation: Conversation) -> tuple[Any, ...]:
    c = conversation
    return c.id, c.owner, c.title, c.created_at, c.created_at, c.preset, c.language, c.system_prompt, c.model


_ADD_MESSAGE = (
    "INSERT INTO messages (conversation_id, role, content, html, status, model, send_token, writer, created_at, "
    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING *"
)


def _hashed(session_id: str) -> str:
    # Only a hash is stored: a copy of the database does not give away live sessions.
    return hashlib.sha256(session_id.encode()).hexdigest()


def _message(row: Row) -> Message:
    values = as_dict(row)
    del values["send_token"], values["stop_asked"]
    values["hidden"] = bool(values["hidden"])
    # Stored HTML was produced by rendering.render_markdown (or escaped by a template) and is
    # only ever written by finish_message, so it is marked safe again as it comes back.
    for name in ("html", "reasoning_html"):
        values[name] = Markup(values[name]) if values[name] is not None else None
    return Message(**values)
