"""web/visitor.py inside a request of the real app: the owner and its session's daily re-signing,
the address limits count, drafts, a fresh identity at sign-in, and when a state-changing request is
trusted. (The same rules end to end are in test_security.py and test_limits.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from quart import Quart, request, session

from chatapp.web import visitor


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


async def test_an_owner_is_made_once_and_its_session_made_to_last(demo_app: Quart) -> None:
    async with demo_app.test_request_context("/"):
        first = visitor.owner()
        assert visitor.owner() == first and len(first) >= 24  # 18 random bytes
        assert session.permanent and session["day"] == _today()
    async with demo_app.test_request_context("/"):
        assert visitor.owner() != first  # another browser, another owner


async def test_a_session_is_signed_again_on_its_first_use_each_day_only(demo_app: Quart) -> None:
    async with demo_app.test_request_context("/"):
        session.update(owner="alice", day=_today())
        session.permanent, session.modified = False, False
        assert visitor.owner() == "alice"
        assert not session.modified  # used already today: the cookie is not sent again

        session["day"] = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
        session.modified = False
        assert visitor.owner() == "alice"
        assert session.modified and session.permanent and session["day"] == _today()


@pytest.mark.parametrize(("client", "counted_as"), [
    ("203.0.113.9", "203.0.113.9"),
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
    ("::ffff:198.51.100.7", "198.51.100.7"),
    ("2001:DB8::1", "2001:db8::/64"),
    ("some-unix-socket", "some-unix-socket"),  # not an IP address: kept as it is
])
async def test_the_address_the_limits_count(demo_app: Quart, client: str, counted_as: str) -> None:
    async with demo_app.test_request_context("/"):
        request.remote_addr = client  # as the server (or proxies.py, behind a trusted proxy) gives it
        assert visitor.address() == counted_as


async def test_a_request_without_a_client_address_is_counted_as_unknown(demo_app: Quart) -> None:
    async with demo_app.test_request_context("/"):
        request.remote_addr = None
        assert visitor.address() == "unknown"


async def test_drafts_are_kept_for_a_few_tabs_and_forgotten_once_deleted(demo_app: Quart) -> None:
    async with demo_app.test_request_context("/"):
        first = visitor.draft_id()
        assert visitor.draft_id() == first and visitor.is_draft(first)  # the same until a new one is asked for
        fresh = [visitor.draft_id(fresh=True) for _ in range(visitor.MAX_DRAFTS)]
        assert visitor.draft_id() == fresh[-1] and len(set(fresh)) == visitor.MAX_DRAFTS
        assert not visitor.is_draft(first)  # the oldest of nine made room
        assert all(visitor.is_draft(d) for d in fresh)

        visitor.forget_draft(fresh[3])
        assert not visitor.is_draft(fresh[3]) and all(visitor.is_draft(d) for d in fresh[:3] + fresh[4:])
        for draft in fresh:
            visitor.forget_draft(draft)
        again = visitor.draft_id()  # none left: a new one
        assert again not in fresh and visitor.is_draft(again)
        assert not visitor.is_draft("someone-elses-id")
        session.modified = False
        visitor.forget_draft("not-a-draft")
        assert not session.modified  # nothing to forget: the cookie is not signed again for it


async def test_starting_fresh_leaves_nothing_of_the_old_session(demo_app: Quart) -> None:
    async with demo_app.test_request_context("/"):
        session.update(owner="planted", csrf="planted-token", gate="old", sid="old-session", drafts=["d1"])
        visitor.start_fresh()
        assert session["owner"] != "planted" and session["csrf"] != "planted-token"
        assert set(session) - {"_permanent"} == {"owner", "csrf", "day"}
        assert visitor.csrf_token() == session["csrf"]  # stable once made


@pytest.mark.parametrize(("headers", "form_token", "trusted"), [
    ({}, "right", True),  # neither header (a script, an old browser): the token alone decides
    ({}, "wrong", False),
    ({}, "", False),
    ({}, None, False),
    ({"X-CSRF-Token": "right"}, None, True),  # htmx sends it as a header
    ({"X-CSRF-Token": "right"}, "wrong", True),
    ({"X-CSRF-Token": "wrong"}, "right", False),  # the header is what counts when sent
    ({"Sec-Fetch-Site": "none"}, "right", True),  # typed or bookmarked: the browser's own doing
    ({"Sec-Fetch-Site": "same-origin", "Origin": "https://evil.example"}, "right", True),
    ({"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost"}, "right", False),  # the fetch header wins
    ({"Origin": "http://localhost:8080"}, "right", False),  # another port is another origin
    ({"Origin": "http://localhost"}, "right", True),
])
async def test_when_a_state_changing_request_is_trusted(demo_app: Quart, headers: dict[str, str],
                                                        form_token: str | None, trusted: bool) -> None:
    async with demo_app.test_request_context("/", method="POST", headers=headers):
        session["csrf"] = "right"
        assert visitor.request_trusted(form_token) is trusted


async def test_a_session_without_a_token_trusts_no_request(demo_app: Quart) -> None:
    async with demo_app.test_request_context("/", method="POST", headers={"X-CSRF-Token": ""}):
        assert not visitor.request_trusted("")
        assert not visitor.request_trusted("anything")
