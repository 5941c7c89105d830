"""The database schema, built by named migrations: each applied once, in order, and recorded in
the `migrations` table. A new migration goes at the end; an applied one is never edited.
(Named SQL scripts rather than functions: each runs in one transaction with its record.)"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import aiosqlite

MIGRATIONS: list[tuple[str, str]] = [
    ("0001_conversations_and_messages", """
        CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX conversations_by_owner ON conversations (owner, updated_at);
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            content TEXT NOT NULL,
            html TEXT,
            status TEXT NOT NULL CHECK (status IN ('streaming', 'complete', 'stopped', 'error')),
            error TEXT,
            model TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            send_token TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX messages_by_conversation ON messages (conversation_id, id);
        -- One message per form submission: a re-sent form (reload, double click) is recognised.
        CREATE UNIQUE INDEX messages_by_send_token ON messages (conversation_id, send_token)
            WHERE send_token IS NOT NULL;
        """),
    ("0002_settings_and_rate_limits", """
        -- Values every worker must agree on, such as a generated session-signing key.
        CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        -- Fixed-window counters, shared by every worker through the database.
        CREATE TABLE rate_limits (
            key TEXT PRIMARY KEY, window INTEGER NOT NULL, hits INTEGER NOT NULL, ends REAL NOT NULL
        );
        """),
    ("0003_presets_models_and_replaced_messages", """
        -- Per conversation: the task preset (presets.toml), its target language, a custom system
        -- prompt, and the model chosen from the allowlist.
        ALTER TABLE conversations ADD COLUMN preset TEXT;
        ALTER TABLE conversations ADD COLUMN language TEXT;
        ALTER TABLE conversations ADD COLUMN system_prompt TEXT;
        ALTER TABLE conversations ADD COLUMN model TEXT;
        -- A regenerated answer or an edited question is kept, hidden, rather than deleted.
        ALTER TABLE messages ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0;
        """),
    ("0004_new_message_touches_its_conversation", """
        -- The side list is ordered by each conversation's newest message: kept by the database,
        -- so storing a message is one statement.
        CREATE TRIGGER message_added_touches_conversation AFTER INSERT ON messages BEGIN
            UPDATE conversations SET updated_at = NEW.created_at WHERE id = NEW.conversation_id;
        END;
        """),
    ("0005_usage_ledger_stream_claims_sessions_sign_in_failures", """
        -- Tokens spent, per owner and UTC day. A ledger apart from the messages, so that deleting
        -- a conversation cannot give a budget back. Filled from the answers kept so far.
        CREATE TABLE usage (
            owner TEXT NOT NULL, day TEXT NOT NULL, tokens INTEGER NOT NULL, PRIMARY KEY (owner, day)
        );
        CREATE INDEX usage_by_day ON usage (day);
        INSERT INTO usage (owner, day, tokens)
            SELECT c.owner, substr(m.created_at, 1, 10),
                   SUM(COALESCE(m.prompt_tokens, 0) + COALESCE(m.completion_tokens, 0))
            FROM messages m JOIN conversations c ON c.id = m.conversation_id
            WHERE m.role = 'assistant' GROUP BY 1, 2;
        -- Answers being written, per owner: a place is claimed in the same transaction that counts
        -- the places taken, and kept alive while the answer saves its text (seen_at, Unix time).
        CREATE TABLE streams (id TEXT PRIMARY KEY, owner TEXT NOT NULL, seen_at REAL NOT NULL);
        CREATE INDEX streams_by_owner ON streams (owner);
        -- Signed-in sessions, kept on the server (by a hash of their id): signing out deletes the
        -- row, after which the cookie that carried it is worth nothing.
        CREATE TABLE sessions (id TEXT PRIMARY KEY, created_at REAL NOT NULL, seen_at REAL NOT NULL);
        -- Failed sign-ins per address or per known browser, for the back-off between attempts.
        CREATE TABLE sign_in_failures (key TEXT PRIMARY KEY, failures INTEGER NOT NULL, last_at REAL NOT NULL);
        """),
    ("0006_reasoning_and_finish_reason", """
        -- A reasoning model's thinking, apart from its answer: never sent back to the model.
        ALTER TABLE messages ADD COLUMN reasoning TEXT NOT NULL DEFAULT '';
        ALTER TABLE messages ADD COLUMN reasoning_html TEXT;
        ALTER TABLE messages ADD COLUMN thinking_seconds REAL;
        -- Why the model stopped, when it said: "length" and "content_filter" are told to the person.
        ALTER TABLE messages ADD COLUMN finish_reason TEXT;
    """),
    ("0007_answer_versions", """
        -- The answers written for one question (the first and each regenerated one) are versions
        -- of each other: all carry the first one's id here (NULL for an answer never regenerated).
        -- The version shown is the one not hidden; the person switches between them.
        ALTER TABLE messages ADD COLUMN version_of INTEGER;
        CREATE INDEX messages_by_version ON messages (version_of) WHERE version_of IS NOT NULL;
    """),
]


async def apply(db: aiosqlite.Connection) -> list[str]:
    """Apply the migrations not yet recorded; returns the names applied. Safe when several
    workers start at once: each migration runs in a write transaction, and one that another
    worker has just applied fails harmlessly and is skipped."""
    await db.execute(
        "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    applied = []
    for name, script in MIGRATIONS:
        if name in await _applied(db):
            continue
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        record = f"INSERT INTO migrations (name, applied_at) VALUES ('{name}', '{now}');"
        try:
            await db.executescript(f"BEGIN IMMEDIATE;\n{script}\n{record}\nCOMMIT;")
        except sqlite3.Error:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            if name not in await _applied(db):
                raise
            continue
        applied.append(name)
    return applied


async def _applied(db: aiosqlite.Connection) -> set[str]:
    return {row["name"] for row in await db.execute_fetchall("SELECT name FROM migrations")}
