"""A reasoning model's thinking through the real app: apart from the answer while it streams (with
and without JavaScript), stored apart, sanitized like the answer, shown after a reload, exported,
and never sent back to the model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from quart import Quart
from quart.testing import QuartClient

from chatapp.turns import CONTINUE_MESSAGE
from chatapp.web.streams import THINKING_DRAFT_CLOSE, THINKING_DRAFT_OPEN
from tests.conftest import stored_id
from tests.support.client import conversation_url, open_chat, send, send_form, soup
from tests.support.fake_openai import FakeOpenAI, Reply

DIALECTS = Path(__file__).parent / "fixtures" / "dialects"
THOUGHTS = ["The user", " asks about **SQLite**.\n\n", "It is a library,", " not a server."]
ANSWER = ["SQLite is", " an embedded", " database."]


async def test_the_reasoning_streams_apart_and_closes_when_the_answer_begins(
        app: Quart, client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(reasoning=THOUGHTS, tokens=ANSWER))
    action, csrf = await open_chat(client)
    answer = await send(client, action, csrf, "What is SQLite?")
    frames = [data for _, data in answer.frames]
    article_id = soup(frames[0]).find_all("article")[-1]["id"]

    opened = next(i for i, frame in enumerate(frames) if f'hx-target="#{article_id}-thinking"' in frame)
    live = soup(frames[opened]).select_one("details.thinking")
    assert live.has_attr("open") and live.summary.get_text() == "Thinking…"
    assert "Thinking…" in frames[opened].split(f"#{article_id}-status", 1)[1]  # said once, to screen readers
    assert sum(f"#{article_id}-status" in frame for frame in frames) == 1
    # The reasoning goes to its own block, never to the answer's.
    thought_frames = frames[opened:opened + 3]
    assert all(f"#{article_id}-tail" not in frame.replace(f"#{article_id}-thinking-tail", "") for frame in thought_frames)

    closed = next(i for i, frame in enumerate(frames) if "Thought for" in frame)
    assert opened < closed < next(i for i, frame in enumerate(frames) if "SQLite is" in frame)
    done = soup(frames[closed]).select_one("details.thinking")
    assert not done.has_attr("open") and done.select_one("strong").get_text() == "SQLite"

    final = answer.final
    assert final["aria-busy"] == "false" and final["data-status"] == "complete"
    thinking = final.select_one("details.thinking")
    assert not thinking.has_attr("open") and thinking.summary.get_text().startswith("Thought for")
    assert "It is a library, not a server." in thinking.get_text()
    content = final.select_one(".content").get_text()
    assert content.strip() == "SQLite is an embedded database." and "library" not in content

    message = await app.extensions["store"].message(stored_id(app, article_id))
    assert message.reasoning == "".join(THOUGHTS) and message.content == "".join(ANSWER)
    assert message.thinking_seconds is not None and message.finish_reason == "stop"


async def test_the_reasoning_is_never_sent_back_to_the_model(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(reasoning=THOUGHTS, tokens=ANSWER), Reply(tokens=["Yes."]))
    action, csrf = await open_chat(client)
    await send(client, action, csrf, "What is SQLite?")
    await send(client, action, csrf, "Is it fast?")
    sent = fake_upstream.requests[-1].body["messages"]
    assert [m["content"] for m in sent[1:]] == ["What is SQLite?", "".join(ANSWER), "Is it fast?"]
    assert "library" not in json.dumps(sent)


@pytest.mark.parametrize(("reply", "reasoning", "content"), [
    # A server without a reasoning parser: the model's <think> block at the start of its text.
    (Reply(tokens=["<thi", "nk>Let me", " see.</th", "ink>\n\nIt is ", "`<think>`."]), "Let me see.", "It is `<think>`."),
    # QwQ behind vLLM without a reasoning parser: the prompt opened <think>, so only </think> comes.
    # It streams as answer text (it cannot be told apart sooner), and is stored and shown apart.
    (Reply(raw=(DIALECTS / "vllm-inline-missing-open-tag.sse").read_bytes()), "Okay, 10 minus 3 is 7.", "10 - 3 = 7"),
], ids=["think-tags", "opened-by-the-template"])
async def test_reasoning_written_inline_is_split_off(app: Quart, client: QuartClient, fake_upstream: FakeOpenAI,
                                                     reply: Reply, reasoning: str, content: str) -> None:
    fake_upstream.script(reply)
    action, csrf = await open_chat(client)
    final = (await send(client, action, csrf, "hi")).final
    assert final.select_one("details.thinking .thinking-text").get_text().strip() == reasoning
    assert final.select_one(".content").get_text().strip() == content.replace("`", "")
    message = await app.extensions["store"].message(stored_id(app, final["id"]))
    assert (message.reasoning, message.content) == (reasoning, content)


async def test_without_javascript_the_draft_holds_the_reasoning_then_the_message(
        client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(reasoning=THOUGHTS, tokens=ANSWER))
    action, csrf = await open_chat(client)
    page = (await send_form(client, action, csrf, "What is SQLite?")).body
    draft_start = page.index('data-role="draft"')
    opened, closed = page.index(THINKING_DRAFT_OPEN, draft_start), page.index(THINKING_DRAFT_CLOSE, draft_start)
    assert opened < page.index("It is a library", opened) < closed < page.index("SQLite is", closed)
    final = soup(page).select("article.message.assistant")[-1]
    assert final["aria-busy"] == "false"
    assert not final.select_one("details.thinking").has_attr("open")


async def test_a_model_still_thinking_when_it_stops_keeps_its_reasoning(
        app: Quart, client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    """No answer text at all (the model ran out of tokens while thinking): the draft's reasoning
    block is closed, and the message keeps the reasoning, marked as cut at the length limit."""
    fake_upstream.script(Reply(reasoning=THOUGHTS, tokens=[], finish_reason="length"))
    action, csrf = await open_chat(client)
    page = (await send_form(client, action, csrf, "What is SQLite?")).body
    assert page.count(THINKING_DRAFT_OPEN) == page.count(THINKING_DRAFT_CLOSE) == 1
    final = soup(page).select("article.message.assistant")[-1]
    message = await app.extensions["store"].message(stored_id(app, final["id"]))
    assert message.reasoning == "".join(THOUGHTS) and message.content == "" and message.finish_reason == "length"
    assert final.select_one("details.thinking") is not None


async def test_hostile_reasoning_is_sanitized_like_an_answer(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    attack = ['<script>alert(1)</script>', '<img src=x onerror=alert(2)>', "[x](javascript:alert(3))\n\n"]
    fake_upstream.script(Reply(reasoning=attack, tokens=["ok"]))
    action, csrf = await open_chat(client)
    answer = await send(client, action, csrf, "hi")
    for _, data in answer.frames:
        tree = soup(data)
        assert tree.find("script") is None and tree.find("img") is None
        assert not any(a.get("href", "").startswith("javascript:") for a in tree.find_all("a"))
    page = (await send_form(client, action, csrf, "again")).body
    assert "<script>alert" not in page and "onerror=alert" not in page.replace("onerror=alert(2)&gt;", "")


async def test_a_reload_mid_thought_shows_the_reasoning_so_far(app: Quart, client: QuartClient,
                                                               fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(reasoning=["Step one.", " Step two.", " Step three."] + [" More."] * 12,
                               reasoning_delay=0.1, tokens=["Done."]))
    action, csrf = await open_chat(client)
    sending = asyncio.create_task(send(client, action, csrf, "think"))
    try:
        for _ in range(40):  # the text so far is saved once a second
            await asyncio.sleep(0.1)
            page = soup(await (await client.get(conversation_url(action))).get_data())
            busy = page.select_one("article[aria-busy=true] details.thinking.live")
            if busy is not None and "Step one." in busy.get_text():
                break
        else:
            raise AssertionError("the reasoning so far never showed on a reload")
        assert busy.has_attr("open") and busy.summary.get_text() == "Thinking…"
    finally:
        await sending
    final = soup(await (await client.get(conversation_url(action))).get_data()).select("article.assistant")[-1]
    assert final["aria-busy"] == "false" and final.select_one("details.thinking:not([open])") is not None


async def test_an_export_marks_the_reasoning_apart(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(reasoning=THOUGHTS, tokens=ANSWER))
    action, csrf = await open_chat(client)
    await send(client, action, csrf, "What is SQLite?")
    url = conversation_url(action)
    markdown = (await (await client.get(f"{url}/export.md")).get_data()).decode()
    assert "> **Thought for" in markdown and "> It is a library, not a server." in markdown
    assert "\n\nSQLite is an embedded database." in markdown
    record = json.loads(await (await client.get(f"{url}/export.json")).get_data())["messages"][-1]
    assert record["reasoning"] == "".join(THOUGHTS) and record["content"] == "".join(ANSWER)
    assert isinstance(record["thinking_seconds"], float)


async def test_a_long_thought_is_not_cut_by_the_first_token_deadline(make_app, fake_upstream: FakeOpenAI) -> None:
    """Reasoning is the model's sign of life: thinking for longer than the first-token deadline,
    piece by piece, is not a timeout."""
    app = await make_app(first_token_timeout=0.5, idle_timeout=0.5)
    fake_upstream.script(Reply(reasoning=[f"step {i}. " for i in range(8)], reasoning_delay=0.2, tokens=["Done."]))
    client = app.test_client()
    action, csrf = await open_chat(client)
    final = (await send(client, action, csrf, "think hard")).final
    assert final["data-status"] == "complete" and final.select_one(".content").get_text().strip() == "Done."


async def test_an_answer_cut_at_the_length_limit_says_so_and_can_be_continued(
        client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["The first half"], finish_reason="length"), Reply(tokens=[" and the rest."]))
    action, csrf = await open_chat(client)
    final = (await send(client, action, csrf, "Tell me everything")).final
    assert "reached the length limit" in final.select_one(".note").get_text()
    button = final.select_one("button[form=continue-form]")
    assert button is not None and button.get_text() == "Continue"
    # The Continue form (outside the messages, so it works without JavaScript) asks for the rest.
    page = soup(await (await client.get(conversation_url(action))).get_data())
    form = page.select_one("form#continue-form")
    assert form["method"] == "post" and form["action"] == action
    fields = {field["name"]: field["value"] for field in form.select("input[type=hidden]")}
    assert (await send_form(client, action, fields["csrf_token"], fields["message"])).status_code == 200
    sent = fake_upstream.requests[-1].body["messages"]
    assert [m["content"] for m in sent[-2:]] == ["The first half", CONTINUE_MESSAGE]


async def test_an_answer_withheld_by_a_content_filter_says_so(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["Part"], finish_reason="content_filter"))
    action, csrf = await open_chat(client)
    final = (await send(client, action, csrf, "hi")).final
    assert "content filter withheld" in final.select_one(".note").get_text()
    assert final.select_one("button[form=continue-form]") is None


async def test_the_answer_after_reasoning_fields_starts_at_its_first_word(
        app: Quart, client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    """vLLM and DeepSeek pass the model's blank lines between thinking and answer on as content."""
    fake_upstream.script(Reply(reasoning=["Hmm."], tokens=["\n", "\n\n", "Answer."]))
    action, csrf = await open_chat(client)
    final = (await send(client, action, csrf, "hi")).final
    message = await app.extensions["store"].message(stored_id(app, final["id"]))
    assert message.content == "Answer."
