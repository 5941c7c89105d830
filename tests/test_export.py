"""Exports: the raw Markdown, never HTML; JSON that parses; file names that are safe anywhere;
a long conversation streamed a message at a time."""

from __future__ import annotations

import asyncio
import json
import re
from functools import partial

import pytest
from markupsafe import Markup
from quart import Quart
from quart.testing import QuartClient
from werkzeug.datastructures import Headers

from chatapp.export import CHUNK_SIZE, encoded, filename, to_json, to_markdown
from chatapp.storage import COMPLETE, ERROR, STOPPED, STREAMING, Conversation, Message
from tests.conftest import open_chat, shown_id
from tests.support.client import send_form

CONVERSATION = Conversation(id="AbC_d-12xyzXYZ", owner="alice-secret-owner", title="Sorting in Python",
                            created_at="2025-03-04T05:06:07.890+00:00")


def _message(id: int, role: str, content: str, *, status: str = COMPLETE, error: str | None = None,
             model: str | None = None, hidden: bool = False) -> Message:
    return Message(
        id=id, conversation_id=CONVERSATION.id, role=role, content=content,
        html=Markup(f"<p>RENDERED {id}</p>"), status=status, error=error, model=model,
        prompt_tokens=11 if role == "assistant" else None, completion_tokens=22 if role == "assistant" else None,
        created_at=f"2025-03-04T05:06:{id:02d}.000+00:00", updated_at=f"2025-03-04T05:07:{id:02d}.000+00:00",
        hidden=hidden,
    )


QUESTION = "How do I sort a list of *dicts* by a key? <b>not html</b>"
ANSWER = "Use `sorted`:\n\n```python\nsorted(rows, key=lambda r: r[\"age\"])\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |"
MESSAGES = [
    _message(1, "user", QUESTION),
    _message(2, "assistant", ANSWER, model="gpt-4o-mini"),
    _message(3, "user", "And in reverse?"),
    _message(4, "assistant", "Pass `reverse=True`, and", status=STOPPED, model="gpt-4o-mini"),
    _message(5, "user", "Again?"),
    _message(6, "assistant", "", status=ERROR, error="The model is busy_now; try *again*.", model="m"),
]


def test_markdown_has_title_date_and_each_messages_raw_text() -> None:
    text = to_markdown(CONVERSATION, MESSAGES)
    lines = text.split("\n")
    assert lines[0] == "# Sorting in Python"
    assert "2025-03-04 05:06 UTC" in "\n".join(lines[1:3])
    for message in MESSAGES:
        if message.content:
            assert message.content in text
    assert "RENDERED" not in text and "<p>" not in text
    headings = [line for line in lines if line.startswith("## ")]
    assert headings == ["## You", "## Assistant (gpt-4o-mini)"] * 2 + ["## You", "## Assistant (m)"]
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_markdown_notes_unfinished_answers() -> None:
    text = to_markdown(CONVERSATION, MESSAGES)
    assert "Pass `reverse=True`, and\n\n_(stopped before it was complete)_\n" in text
    assert text.endswith("## Assistant (m)\n\n_(error: The model is busy\\_now; try \\*again\\*.)_\n")
    assert text.count("_(") == 2  # complete answers and questions get no note
    streaming = to_markdown(CONVERSATION, [_message(1, "assistant", "half", status=STREAMING)])
    assert "## Assistant\n\nhalf\n\n_(still being written when exported)_" in streaming
    no_text = to_markdown(CONVERSATION, [_message(1, "assistant", "", status=ERROR, error=None)])
    assert no_text.endswith("## Assistant\n\n_(error)_\n")


def test_markdown_closes_a_code_block_cut_off_mid_answer() -> None:
    cut = "Here:\n\n````python\nprint('```')\nx = 1"
    text = to_markdown(CONVERSATION, [_message(1, "assistant", cut, status=STOPPED), _message(2, "user", "Next")])
    assert f"{cut}\n````\n\n_(stopped before it was complete)_\n\n## You\n\nNext\n" in text
    closed = "```\ncode\n```"
    assert to_markdown(CONVERSATION, [_message(1, "assistant", closed)]).endswith(f"\n\n{closed}\n")


def test_markdown_title_fallback_and_one_line() -> None:
    untitled = Conversation(id="c1", owner="o", title="  ", created_at="not a date")
    text = to_markdown(untitled, [])
    assert text.startswith("# Conversation\n\n") and "not a date" in text
    multi = Conversation(id="c1", owner="o", title="two\nlines\n## You", created_at="2025-01-01T00:00:00+00:00")
    assert to_markdown(multi, []).split("\n")[0] == "# two lines ## You"


def test_hidden_messages_are_not_exported() -> None:
    messages = [*MESSAGES, _message(7, "assistant", "OLD ANSWER REGENERATED", hidden=True)]
    assert "OLD ANSWER" not in to_markdown(CONVERSATION, messages)
    assert "OLD ANSWER" not in to_json(CONVERSATION, messages)


def test_json_has_the_raw_text_and_no_html() -> None:
    text = to_json(CONVERSATION, MESSAGES)
    data = json.loads(text)
    assert set(data) == {"id", "title", "created_at", "messages"}
    assert (data["id"], data["title"], data["created_at"]) == (
        CONVERSATION.id, CONVERSATION.title, CONVERSATION.created_at)
    assert [m["content"] for m in data["messages"]] == [m.content for m in MESSAGES]
    for exported, message in zip(data["messages"], MESSAGES, strict=True):
        assert set(exported) == {"id", "role", "content", "status", "model", "created_at",
                                 "prompt_tokens", "completion_tokens", "error"}
        assert exported == {key: getattr(message, key) for key in exported}
    assert all("html" not in m for m in data["messages"])
    assert "RENDERED" not in text and "<p>" not in text and "alice-secret-owner" not in text
    assert text.startswith('{\n  "id"')  # indented for people to read


def test_json_keeps_unicode_readable() -> None:
    conversation = Conversation(id="c1", owner="o", title="Café ☕", created_at="2025-01-01T00:00:00+00:00")
    text = to_json(conversation, [_message(1, "user", "日本語 </script>")])
    assert "Café ☕" in text and "日本語 </script>" in text
    assert json.loads(text)["messages"][0]["content"] == "日本語 </script>"


def _as_json_dumps_writes_it(conversation: Conversation, messages: list[Message], shown_id=int) -> str:
    """The export as it was made before it was streamed: one json.dumps of the whole."""
    keys = ["role", "content", "status", "model", "created_at", "prompt_tokens", "completion_tokens", "error"]
    data = {"id": conversation.id, "title": conversation.title, "created_at": conversation.created_at,
            "messages": [{"id": shown_id(m.id)} | {key: getattr(m, key) for key in keys}
                         for m in messages if not m.hidden]}
    return json.dumps(data, ensure_ascii=False, indent=2)


@pytest.mark.parametrize("messages", [
    MESSAGES,
    [],
    [_message(1, "user", "line\u2028separator, next\x85line, \r\n\t \"quoted\" \\ \x00 ☕\n    indented\n")],
    [_message(1, "user", "hidden", hidden=True)],
])
def test_json_is_what_one_json_dumps_of_the_whole_gives(messages: list[Message]) -> None:
    assert to_json(CONVERSATION, messages) == _as_json_dumps_writes_it(CONVERSATION, messages)


async def test_the_stream_lets_other_tasks_run_between_chunks() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    big = "é" * (CHUNK_SIZE // 2)  # CHUNK_SIZE bytes in UTF-8
    seen = [(chunk, ticks) async for chunk in encoded(["a", "b", big, big, "c", "d"])]
    task.cancel()
    assert [chunk for chunk, _ in seen] == [f"ab{big}".encode(), big.encode(), b"cd"]  # small pieces joined
    assert seen[0][1] < seen[1][1] < seen[2][1]


async def _long_conversation(app: Quart) -> tuple[QuartClient, str]:
    """A client and a conversation of 251 visible messages (more than two pages of the store's),
    one of them hidden among them."""
    client = app.test_client()
    action, csrf = await open_chat(client)
    await send_form(client, action, csrf, "start")
    conversation_id = action.split("/")[2]
    store = app.extensions["store"]
    for i in range(125):
        await store.add_message(conversation_id, "user", f"Question {i}?\n\n```\ncode", status=COMPLETE)
        answer = await store.add_message(conversation_id, "assistant", f"Answer *{i}* " + "é" * 400, status=COMPLETE,
                                         html=f"<p>RENDERED {i}</p>", model="demo")
        if i == 60:
            await store.db.rows("UPDATE messages SET hidden = 1 WHERE id = ?", (answer.id,))  # a replaced answer
    return client, conversation_id


async def _chunks(client: QuartClient, url: str) -> tuple[Headers, list[bytes]]:
    """The response's headers and its body as the pieces the app sent, up to the closing empty one."""
    async with client.request(url) as connection:
        await connection.send_complete()
        chunks = []
        while chunk := await asyncio.wait_for(connection.receive(), 5):
            chunks.append(chunk)
    return connection.headers, chunks


def _assert_streamed(chunks: list[bytes]) -> None:
    """Not the whole in one piece: chunks of CHUNK_SIZE and at most one message (here under 1 KB) more."""
    assert len(chunks) > 5
    assert all(CHUNK_SIZE <= len(chunk) < CHUNK_SIZE + 1024 for chunk in chunks[:-1])


async def test_a_long_conversation_is_exported_as_a_stream(demo_app: Quart) -> None:
    client, conversation_id = await _long_conversation(demo_app)
    messages = await demo_app.extensions["store"].messages(conversation_id)
    assert len(messages) == 251

    headers, chunks = await _chunks(client, f"/c/{conversation_id}/export.json")
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Disposition"] == f'attachment; filename="start-{conversation_id[:8]}.json"'
    _assert_streamed(chunks)
    text = b"".join(chunks).decode()
    data = json.loads(text)
    assert data["id"] == conversation_id and data["title"] == "start"
    conversation = Conversation(id=conversation_id, owner="", title="start", created_at=data["created_at"])
    assert text == _as_json_dumps_writes_it(conversation, messages, partial(shown_id, demo_app))
    assert "RENDERED" not in text and "Answer *60*" not in text  # no HTML, no hidden answer

    headers, chunks = await _chunks(client, f"/c/{conversation_id}/export.md")
    assert headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert headers["Content-Disposition"] == f'attachment; filename="start-{conversation_id[:8]}.md"'
    _assert_streamed(chunks)
    assert b"".join(chunks).decode() == to_markdown(conversation, messages)


def _titled(title: str, id: str = "AbC_d-12xyz") -> Conversation:
    return Conversation(id=id, owner="o", title=title, created_at="2025-01-01T00:00:00+00:00")


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Sorting in Python", "sorting-in-python-AbC_d-12.md"),
        ("../../etc/passwd", "etc-passwd-AbC_d-12.md"),
        ("<script>alert(1)</script>", "script-alert-1-script-AbC_d-12.md"),
        ("Café crème à la française", "cafe-creme-a-la-francaise-AbC_d-12.md"),
        ("日本語のタイトル", "conversation-AbC_d-12.md"),
        ("", "conversation-AbC_d-12.md"),
        ("   --- ...  ", "conversation-AbC_d-12.md"),
        ('C:\\Windows\\evil"; name=x.exe\r\n', "c-windows-evil-name-x-exe-AbC_d-12.md"),
        ("x" * 100, "x" * 60 + "-AbC_d-12.md"),
        ("a" * 59 + " b", "a" * 59 + "-AbC_d-12.md"),  # cut at 60, no dangling hyphen
    ],
)
def test_filenames_are_safe(title: str, expected: str) -> None:
    name = filename(_titled(title), "md")
    assert name == expected
    assert re.fullmatch(r"[a-z0-9-]{1,60}-[A-Za-z0-9_-]{1,8}\.md", name)


def test_filename_extension_and_id() -> None:
    assert filename(_titled("Hi"), ".json") == "hi-AbC_d-12.json"
    assert filename(_titled("Hi", id="c1"), "md") == "hi-c1.md"
    assert filename(_titled("Hi", id="../é/x"), "md") == "hi-x.md"
    for bad in ["", "md/../x", "MD ", "m.d", "html\r\n"]:
        with pytest.raises(ValueError):
            filename(_titled("Hi"), bad)
