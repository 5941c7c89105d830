"""Message ids as people see them: opaque, reversible only with the key, never a 500."""

from __future__ import annotations

import re

from quart import Quart
from quart.testing import QuartClient

from chatapp.web.ids import MessageIds
from tests.conftest import open_chat, parse_sse, soup


def test_shown_ids_round_trip_and_do_not_count() -> None:
    ids = MessageIds("a key")
    shown = [ids.public(n) for n in range(1, 2001)]
    assert all(re.fullmatch(r"[0-9a-f]{16}", s) for s in shown) and len(set(shown)) == 2000
    assert [ids.private(s) for s in shown] == list(range(1, 2001))
    # Neighbours look unrelated: no shared prefix beyond what chance gives 16 hex digits.
    assert max(len(_common_prefix(a, b)) for a, b in zip(shown, shown[1:])) <= 4
    assert sorted(shown) != shown
    assert MessageIds("another key").public(1) != ids.public(1)


def test_anything_else_is_no_message() -> None:
    ids = MessageIds("a key")
    assert ids.private("not hex at all!!") is None and ids.private("00") is None
    assert ids.private(ids.public(1).upper()) is None
    # Some 64-bit values decrypt above SQLite's largest id, or to 0: neither is a message.
    assert None in {ids.private(f"{n:016x}") for n in range(0, 2**64, 2**58)}


async def test_pages_urls_and_exports_show_only_opaque_ids(app: Quart, client: QuartClient) -> None:
    action, csrf = await open_chat(client)
    response = await client.post(action, form={"message": "hi"}, headers={"HX-Request": "true", "X-CSRF-Token": csrf})
    body = (await response.get_data()).decode()
    assert not re.search(r"msg-\d{1,15}\b", body)
    final = soup(parse_sse(body)[-2][1]).find("article")
    shown = final["id"].removeprefix("msg-")
    conversation = action.removesuffix("/messages")
    fragment = await client.get(f"{conversation}/messages/{shown}")
    assert fragment.status_code == 200 and soup(await fragment.get_data()).find("article")["id"] == final["id"]
    assert (await client.get(f"{conversation}/messages/2")).status_code == 404  # the database's own number
    exported = await (await client.get(f"{conversation}/export.json")).get_json()
    assert [m["id"] for m in exported["messages"]][-1] == shown


def _common_prefix(a: str, b: str) -> str:
    return a[: next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))]
