"""The IDOR walk: every route with a conversation or message id, tried by a second person (or
browser) on the first one's real ids. Every mode's tests call it with their own two visitors, so a
route added later is walked in every mode without anyone remembering to."""

from __future__ import annotations

from quart import Quart
from quart.testing import QuartClient

from tests.support.client import open_chat, send_form, soup
from tests.support.fake_openai import FakeOpenAI

SECRET = "private words of the owner"


async def assert_no_idor(app: Quart, owner: QuartClient, stranger: QuartClient, fake_upstream: FakeOpenAI) -> int:
    """The owner writes a conversation; the stranger, on every id route with every method, gets a
    404 that shows nothing of it, and no answer is asked of the model for them. Afterwards the
    owner's conversation is as it was. How many requests the stranger made."""
    action, csrf = await open_chat(owner)
    await send_form(owner, action, csrf, SECRET)
    conversation_id = action.split("/")[2]
    conversation_url = action.removesuffix("/messages")
    before = (await (await owner.get(conversation_url)).get_data()).decode()
    page = soup(before)
    message_id = page.select("article[data-role=assistant]")[-1]["id"].removeprefix("msg-")
    _, stranger_csrf = await open_chat(stranger)
    asked_before = len(fake_upstream.requests)

    routes = [r for r in app.url_map.iter_rules() if "conversation_id" in r.arguments]
    assert routes, "no conversation routes found"
    tried = 0
    for rule in routes:
        # The owner's real ids, so that a route that forgot to check the owner would answer.
        url = rule.rule.replace("<conversation_id>", conversation_id).replace("<message_id:message_id>", message_id)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = await stranger.open(url, method=method, form={"csrf_token": stranger_csrf, "message": "x",
                                                                     "title": "stolen", "choice": "1"})
            body = (await response.get_data()).decode()
            tried += 1
            assert response.status_code == 404, (method, url, response.status_code)
            assert SECRET not in body, (method, url)
    assert len(fake_upstream.requests) == asked_before, "the model was asked on the stranger's behalf"
    after = (await (await owner.get(conversation_url)).get_data()).decode()
    assert SECRET in after and "stolen" not in after
    return tried
