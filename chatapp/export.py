"""A conversation as a download: Markdown to read, JSON to keep. The raw text only, never HTML.

Serve either as an attachment (Content-Disposition: attachment; filename="..." from `filename`),
so a browser saves it rather than rendering what the model wrote. Both are written a message at a
time (`markdown_parts`, `json_parts`), so that a long conversation is streamed out in chunks instead
of being built whole on the event loop, holding up every other request meanwhile (measured by
bench/loop_latency.py; see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import json
import re
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import UTC, datetime
from itertools import chain

from .reply import thought_for
from .storage import ERROR, STOPPED, STREAMING, Conversation, Message, Store

_NOTES = {STOPPED: "stopped before it was complete", STREAMING: "still being written when exported"}
_FENCE_OPEN = re.compile(r" {0,3}(?P<fence>`{3,}(?=[^`]*$)|~{3,})")
_SPECIAL = re.compile(r"([\\`*_\[\]<>])")
PAGE_SIZE = 100  # messages read from the database at a time
# The streamed body's pieces are joined into chunks of this size: each chunk sent costs the worker
# CPU of its own, so a chunk per message cost an export of many short messages far more than a
# few large chunks do, which come close to building it whole in one turn of the loop (the export's
# CPU is measured by bench/loop_latency.py; see docs/benchmarks.md).
CHUNK_SIZE = 16 * 1024


def to_markdown(conversation: Conversation, messages: Iterable[Message]) -> str:
    """`# title`, the date it was started, then each message under `## You` or
    `## Assistant (model)`, its raw Markdown as written (a reasoning model's thinking before it, as
    a block quote), with a note if the answer is unfinished."""
    return "".join(markdown_parts(conversation, messages))


def to_json(conversation: Conversation, messages: Iterable[Message],
            shown_id: Callable[[int], int | str] = int) -> str:
    """The conversation and its messages' raw text and metadata (not the owner, not HTML), each
    message's id as `shown_id` gives it."""
    return "".join(json_parts(conversation, messages, shown_id))


def markdown_parts(conversation: Conversation, messages: Iterable[Message]) -> Iterator[str]:
    """to_markdown's text in pieces: the title and date, one piece per message, the last newline."""
    title = _one_line(conversation.title) or "Conversation"
    yield f"# {title}\n\n_Created {_when(conversation.created_at)}_"
    for message in _shown(messages):
        parts = [_heading(message)]
        if reasoning := message.reasoning.strip("\n"):
            parts.append(_quoted(f"**{thought_for(message.thinking_seconds)}**\n\n{_close_fence(reasoning)}"))
        if content := message.content.strip("\n"):
            parts.append(_close_fence(content))
        if note := _note(message):
            parts.append(f"_({note})_")
        yield "\n\n" + "\n\n".join(parts)
    yield "\n"


def json_parts(conversation: Conversation, messages: Iterable[Message],
               shown_id: Callable[[int], int | str] = int) -> Iterator[str]:
    """to_json's text in pieces, one per message: together, what json.dumps(indent=2) makes of
    {"id", "title", "created_at", "messages": [...]}, byte for byte."""
    head = {"id": conversation.id, "title": conversation.title, "created_at": conversation.created_at}
    yield _dumps(head).removesuffix("\n}") + ',\n  "messages": ['
    separator = "\n"
    for m in _shown(messages):
        record: dict[str, object] = {
            "id": shown_id(m.id), "role": m.role, "content": m.content, "status": m.status, "model": m.model,
            "created_at": m.created_at, "prompt_tokens": m.prompt_tokens,
            "completion_tokens": m.completion_tokens, "error": m.error,
        }
        if m.reasoning:  # a reasoning model's thinking, apart from its answer
            record.update(reasoning=m.reasoning, thinking_seconds=m.thinking_seconds)
        # Two levels deep. Only json's own line breaks are indented (one in a string is escaped),
        # not U+2028 or U+0085, which textwrap.indent's str.splitlines would split strings on.
        yield separator + "    " + _dumps(record).replace("\n", "\n    ")
        separator = ",\n"
    yield "]\n}" if separator == "\n" else "\n  ]\n}"


async def read_messages(store: Store, conversation_id: str) -> list[Message]:
    """The visible messages, oldest first, read a page at a time so that no turn of the event loop
    turns a whole long conversation's rows into messages."""
    pages, before, more = [], None, True
    while more:
        page, more = await store.page_of_messages(conversation_id, before=before, size=PAGE_SIZE)
        if not page:
            break
        pages.append(page)
        before = page[0].id
    return list(chain.from_iterable(reversed(pages)))


async def encoded(parts: Iterable[str]) -> AsyncIterator[bytes]:
    """A streamed response's body: pieces joined up to CHUNK_SIZE bytes (a chunk holds at most
    that and one message), each followed by a turn for other requests. Sending a chunk does not
    by itself give the loop up while the socket takes it all."""
    chunk = bytearray()
    for part in parts:
        chunk += part.encode()
        if len(chunk) >= CHUNK_SIZE:
            yield bytes(chunk)
            chunk.clear()
            await asyncio.sleep(0)
    if chunk:
        yield bytes(chunk)


def filename(conversation: Conversation, extension: str) -> str:
    """A safe ASCII file name: the title lowercased to [a-z0-9-] (accents dropped, at most 60
    characters, "conversation" if nothing is left), "-", the id's first 8 characters, ".extension"."""
    ext = extension.removeprefix(".")
    if not re.fullmatch(r"[a-z0-9]{1,10}", ext):
        raise ValueError(f"not a file extension: {extension!r}")
    ascii_title = unicodedata.normalize("NFKD", conversation.title).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")[:60].rstrip("-") or "conversation"
    short_id = re.sub(r"[^A-Za-z0-9_-]", "", conversation.id)[:8]
    return f"{stem}-{short_id}.{ext}" if short_id else f"{stem}.{ext}"


def _shown(messages: Iterable[Message]) -> Iterator[Message]:
    # A regenerated answer or an edited question is kept hidden in the database, not shown.
    return (m for m in messages if not m.hidden)


def _dumps(data: dict) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2)


def _heading(message: Message) -> str:
    if message.role == "user":
        return "## You"
    if message.role == "assistant":
        model = _one_line(message.model)
        return f"## Assistant ({model})" if model else "## Assistant"
    return f"## {message.role.capitalize()}"


def _note(message: Message) -> str | None:
    if message.status == ERROR:
        error = _SPECIAL.sub(r"\\\1", _one_line(message.error))  # its text, not Markdown
        return f"error: {error}" if error else "error"
    return _NOTES.get(message.status)


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _when(timestamp: str) -> str:
    try:
        when = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    return (when.astimezone(UTC) if when.tzinfo else when).strftime("%Y-%m-%d %H:%M UTC")


def _quoted(text: str) -> str:
    """A Markdown block quote of `text` (the reasoning, set apart from the answer)."""
    return "\n".join(f"> {line}" if line else ">" for line in text.split("\n"))


def _close_fence(content: str) -> str:
    """The content, with a closing fence added if it ends inside a code block (an answer cut off
    mid-code), so that the headings after it are not swallowed into the block."""
    fence = None
    for line in content.split("\n"):
        if fence is None:
            if m := _FENCE_OPEN.match(line):
                fence = m["fence"]
        elif re.fullmatch(rf" {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*", line):
            fence = None
    return f"{content}\n{fence}" if fence else content
