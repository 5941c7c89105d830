"""Many conversations, regenerate and edit, presets, models, context budget, export, long pages."""

from __future__ import annotations

import json

import pytest
from quart import Quart
from quart.testing import QuartClient

from chatapp import presets
from tests.conftest import MakeApp
from tests.support import HTMX
from tests.support.client import conversation_url, open_chat, parse_sse, send, send_form, soup
from tests.support.fake_openai import FakeOpenAI, Reply



async def post(client: QuartClient, url: str, csrf: str, **fields: str):
    return await client.post(url, form={"csrf_token": csrf, **fields})


def sent_messages(fake: FakeOpenAI) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in fake.requests[-1].body["messages"]]


async def test_the_side_list_shows_this_browsers_conversations_newest_first(client: QuartClient, app: Quart) -> None:
    action, csrf = await open_chat(client)
    assert (await send(client, action, csrf, "First topic: sourdough\nwith more lines")).status_code == 200
    second = (await client.get("/new")).headers["Location"]
    assert (await send(client, f"{second}/messages", csrf, "Second topic: " + "long " * 30)).status_code == 200
    page = soup(await (await client.get(second)).get_data())
    titles = [a.get_text() for a in page.select("#conversation-list > li > a")]
    assert titles[0].startswith("Second topic: long") and titles[0].endswith("…") and len(titles[0]) <= 61
    assert titles[1] == "First topic: sourdough"
    assert page.select_one("nav.sidebar a[aria-current=page]").get_text() == titles[0]
    other = app.test_client()
    await open_chat(other)
    assert soup(await (await other.get("/", follow_redirects=True)).get_data()).select("nav.sidebar a") == []


async def test_every_link_of_a_conversations_entry_opens_its_page(client: QuartClient) -> None:
    action, csrf = await open_chat(client)
    assert (await send(client, action, csrf, "a conversation with a menu")).status_code == 200
    url = conversation_url(action)
    entry = soup(await (await client.get(url)).get_data()).select_one("#conversation-list > li")
    links = {a.get_text(): a["href"] for a in entry.select("a")}
    assert links == {"a conversation with a menu": url, "Rename": f"{url}#title", "Export Markdown": f"{url}/export.md",
                     "Export JSON": f"{url}/export.json", "Delete": f"{url}/delete"}
    for href in links.values():
        assert (await client.get(href.split("#")[0])).status_code == 200, href


async def test_rename_and_custom_instructions(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    action, csrf = await open_chat(client)
    assert (await send(client, action, csrf, "hello")).status_code == 200
    url = conversation_url(action)
    response = await post(client, f"{url}/settings", csrf, title="  My   renamed chat ", system_prompt="Answer in haiku.")
    assert response.status_code == 303
    page = soup(await (await client.get(url)).get_data())
    assert page.select_one("nav.sidebar a[aria-current=page]").get_text() == "My renamed chat"
    assert (await send(client, action, csrf, "again")).status_code == 200
    assert sent_messages(fake_upstream)[0] == ("system", "Answer in haiku.")


async def test_delete_asks_first_then_deletes_for_good(client: QuartClient, app: Quart) -> None:
    action, csrf = await open_chat(client)
    first = await send(client, action, csrf, "to be deleted")
    assert first.status_code == 200
    assert "Set-Cookie" not in first.headers  # a new conversation's first message leaves the session as it was
    url = conversation_url(action)
    confirm = soup(await (await client.get(f"{url}/delete")).get_data())
    assert "deleted for good" in confirm.get_text()
    assert confirm.select_one("form")["action"] == f"{url}/delete"
    assert (await client.get(url)).status_code == 200  # asking did not delete it
    assert (await post(client, f"{url}/delete", "forged")).status_code == 403
    assert (await post(client, f"{url}/delete", csrf)).status_code == 303
    assert (await client.get(url)).status_code == 404
    assert await app.extensions["store"].messages(url.split("/")[-1]) == []
    assert (await client.get("/")).headers["Location"] != url  # its id is no draft to start again in
    assert (await send(client, action, csrf, "again")).status_code == 404


async def test_regenerate_keeps_the_old_answer_hidden_and_sends_the_visible_history(
        client: QuartClient, app: Quart, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["first answer"]), Reply(tokens=["second answer"]))
    action, csrf = await open_chat(client)
    frames = (await send(client, action, csrf, "question")).frames
    old_id = soup(frames[-2][1]).find("article")["id"]
    url = conversation_url(action)
    response = await client.post(f"{url}/regenerate", form={}, headers={**HTMX, "X-CSRF-Token": csrf})
    frames = parse_sse((await response.get_data()).decode())
    opening = soup(frames[0][1])
    assert [a["data-role"] for a in opening.find_all("article")] == ["assistant"]  # no second question
    assert opening.find("hx-partial", attrs={"hx-target": f"#{old_id}", "hx-swap": "delete"}) is not None
    assert sent_messages(fake_upstream)[1:] == [("user", "question")]
    page = soup(await (await client.get(url)).get_data())
    assert [a.select_one(".content").get_text(strip=True) for a in page.select("article")] == ["question", "second answer"]
    kept = await app.extensions["store"].db.rows("SELECT content, hidden FROM messages ORDER BY id")
    assert [tuple(row) for row in kept] == [("question", 0), ("first answer", 1), ("second answer", 0)]


async def test_edit_and_resend_replaces_the_last_question(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["one"]), Reply(tokens=["two"]), Reply(tokens=["two again"]))
    action, csrf = await open_chat(client)
    assert (await send(client, action, csrf, "first question")).status_code == 200
    assert (await send(client, action, csrf, "second question, with a typo")).status_code == 200
    url = conversation_url(action)
    page = soup(await (await client.get(url)).get_data())
    edit = page.select_one("article[data-role=user]:nth-last-of-type(2) details.edit textarea")
    assert page.select_one(f"form#{edit['form']}")["action"] == f"{url}/edit"
    assert edit.get_text() == "second question, with a typo"
    await client.post(f"{url}/edit", form={"message": "second question, fixed"}, headers={**HTMX, "X-CSRF-Token": csrf})
    assert sent_messages(fake_upstream)[1:] == [("user", "first question"), ("assistant", "one"),
                                               ("user", "second question, fixed")]
    page = soup(await (await client.get(url)).get_data())
    assert [a.select_one(".content").get_text(strip=True) for a in page.select("article")] == [
        "first question", "one", "second question, fixed", "two again"]


async def test_only_the_newest_messages_offer_regenerate_and_edit(client: QuartClient) -> None:
    action, csrf = await open_chat(client)
    for question in ("a", "b"):
        assert (await send(client, action, csrf, question)).status_code == 200
    page = soup(await (await client.get(conversation_url(action))).get_data())
    articles = page.select("article")
    assert [bool(a.select("details.edit")) for a in articles] == [False, False, True, False]
    assert [bool(a.select("button[form=regenerate-form]")) for a in articles] == [False, False, False, True]


@pytest.mark.parametrize(("preset", "language", "expected"), [
    ("summarize", "", presets.PRESETS["summarize"].prompt),
    ("translate", "French", presets.PRESETS["translate"].prompt.replace("{language}", "French")),
    ("translate", "Klingon", presets.PRESETS["translate"].prompt.replace("{language}", "English")),
])
async def test_a_preset_changes_the_system_message(client: QuartClient, fake_upstream: FakeOpenAI,
                                                   preset: str, language: str, expected: str) -> None:
    action, csrf = await open_chat(client)
    assert (await send(client, action, csrf, "some text", fields={"preset": preset, "language": language})).status_code == 200
    assert sent_messages(fake_upstream)[0] == ("system", expected)
    page = soup(await (await client.get(conversation_url(action))).get_data())
    assert page.select_one("select[name=preset] option[selected]")["value"] == preset  # remembered


@pytest.fixture
async def small_context_app(make_app: MakeApp) -> Quart:
    return await make_app(context_tokens=120, models=("model-a", "model-b"))


async def test_the_history_is_trimmed_oldest_first_and_the_page_says_so(small_context_app: Quart, fake_upstream: FakeOpenAI) -> None:
    client = small_context_app.test_client()
    action, csrf = await open_chat(client)
    for turn in range(5):
        fake_upstream.script(Reply(tokens=[f"answer {turn} " + "x" * 60]))
        assert (await send(client, action, csrf, f"question {turn} " + "y" * 60)).status_code == 200
    sent = sent_messages(fake_upstream)
    assert sent[0][0] == "system" and sent[-1][1].startswith("question 4")
    assert sent[1][0] == "user" and len(sent) < 10  # older turns left out, whole pairs, oldest first
    page = soup(await (await client.get(conversation_url(action))).get_data())
    assert "no longer sent to the model" in page.select_one("#context-note").get_text()


async def test_the_model_is_chosen_from_the_allowlist_and_stored(small_context_app: Quart, fake_upstream: FakeOpenAI) -> None:
    client = small_context_app.test_client()
    action, csrf = await open_chat(client)
    page = soup(await (await client.get(conversation_url(action))).get_data())
    assert [o.get_text() for o in page.select("select[name=model] option")] == ["model-a", "model-b"]
    frames = (await send(client, action, csrf, "hi", fields={"model": "model-b"})).frames
    assert fake_upstream.requests[-1].body["model"] == "model-b"
    assert "model-b" in soup(frames[-2][1]).select_one(".usage").get_text()
    asked = len(fake_upstream.requests)
    refused = await send(client, action, csrf, "hi", fields={"model": "not-allowed"})
    assert refused.status_code == 400 and "not offered" in refused.body
    assert len(fake_upstream.requests) == asked  # never asked for
    page = soup(await (await client.get(conversation_url(action))).get_data())
    assert page.select_one("select[name=model] option[selected]").get_text() == "model-b"  # unchanged


async def test_export_as_markdown_and_json(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["**bold** answer"]))
    action, csrf = await open_chat(client)
    assert (await send(client, action, csrf, "Export me")).status_code == 200
    url = conversation_url(action)
    markdown = await client.get(f"{url}/export.md")
    assert markdown.headers["Content-Disposition"].startswith('attachment; filename="export-me-')
    text = (await markdown.get_data()).decode()
    assert "Export me" in text and "**bold** answer" in text and "<strong>" not in text
    data = json.loads((await (await client.get(f"{url}/export.json")).get_data()).decode())
    assert [m["content"] for m in data["messages"]] == ["Export me", "**bold** answer"]
    assert (await client.get(f"{url}/export.exe")).status_code == 404


async def test_a_long_conversation_opens_with_its_newest_page(client: QuartClient, app: Quart) -> None:
    action, csrf = await open_chat(client)
    assert (await send(client, action, csrf, "start")).status_code == 200
    conversation_id = action.split("/")[2]
    store = app.extensions["store"]
    for i in range(120):
        await store.add_message(conversation_id, "user", f"message {i}", status="complete", html=None)
    page = soup(await (await client.get(f"/c/{conversation_id}")).get_data())
    articles = page.select("#messages article")
    assert len(articles) == 50 and articles[-1].select_one(".content").get_text() == "message 119"
    earlier = page.select_one(".earlier a")
    older = await client.get(earlier["href"], headers=HTMX)  # htmx: the older page, as a fragment
    fragment = soup(await older.get_data())
    assert fragment.find("html") is None and len(fragment.select("article")) == 50
    assert fragment.select_one(".earlier a") is not None
    no_js = soup(await (await client.get(earlier["href"])).get_data())  # without JS: a whole page
    assert no_js.select_one("form#composer") is not None and len(no_js.select("#messages article")) == 50


async def test_regenerate_and_edit_work_without_javascript(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["one"]), Reply(tokens=["two"]), Reply(tokens=["three"]))
    action, csrf = await open_chat(client)
    assert (await send_form(client, action, csrf, "question")).status_code == 200
    url = conversation_url(action)
    page = soup(await (await client.post(f"{url}/regenerate", form={"csrf_token": csrf})).get_data())
    assert page.select_one(".draft + article[data-role=assistant]").select_one(".content").get_text() == "two"
    page = soup(await (await client.post(f"{url}/edit", form={"csrf_token": csrf, "message": "better question"})).get_data())
    assert page.select_one(".draft + article[data-role=assistant]").select_one(".content").get_text() == "three"
    page = soup(await (await client.get(url)).get_data())
    assert [a.select_one(".content").get_text(strip=True) for a in page.select("article")] == ["better question", "three"]
    refused = await client.post(f"/c/{'x' * 22}/regenerate", form={"csrf_token": csrf})
    assert refused.status_code == 404


async def test_nothing_in_a_new_conversation_can_be_written_again_or_edited(client: QuartClient, app: Quart) -> None:
    action, csrf = await open_chat(client)
    url = conversation_url(action)
    for path, fields, sentence in (("regenerate", {}, "nothing to write again"),
                                   ("edit", {"message": "edited"}, "no finished question to edit")):
        refused = await client.post(f"{url}/{path}", form=fields, headers={**HTMX, "X-CSRF-Token": csrf})
        assert refused.status_code == 409 and sentence in (await refused.get_data()).decode()
    assert await app.extensions["store"].db.rows("SELECT id FROM conversations") == []  # nothing stored
    assert soup(await (await client.get(url)).get_data()).select("nav.sidebar #conversation-list a") == []


async def test_a_new_conversation_joins_the_side_list_as_its_first_answer_starts(client: QuartClient) -> None:
    action, csrf = await open_chat(client)
    frames = (await send(client, action, csrf, "Brand new topic")).frames
    opening = soup(frames[0][1])
    entry = opening.find("hx-partial", attrs={"hx-target": "#conversation-list"})
    assert entry["hx-swap"] == "afterbegin" and entry.find("a").get_text() == "Brand new topic"
    assert opening.find("hx-partial", attrs={"hx-target": "#no-conversations", "hx-swap": "delete"}) is not None
    frames = (await send(client, action, csrf, "a second question")).frames
    assert soup(frames[0][1]).find("hx-partial", attrs={"hx-target": "#conversation-list"}) is None


async def test_a_failed_regeneration_gives_the_old_answer_back(client: QuartClient, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["the good answer"]), Reply(status=500))
    action, csrf = await open_chat(client)
    assert (await send(client, action, csrf, "question")).status_code == 200
    url = conversation_url(action)
    await client.post(f"{url}/regenerate", form={}, headers={**HTMX, "X-CSRF-Token": csrf})
    page = soup(await (await client.get(url)).get_data())
    contents = [a.select_one(".content").get_text(strip=True) for a in page.select("article")]
    assert contents[:2] == ["question", "the good answer"]  # nothing lost
    assert page.select("article")[-1]["data-status"] == "error"  # and the failed try says why
