"""CHATAPP_AUTH=accounts from the outside: signing in and out, sessions, links, the claim of a
browser's conversations, and limits that belong to people (web/account.py, identity.py,
attempts.py). The data layer is tested in test_accounts.py, the admin page in test_admin.py."""

from __future__ import annotations

import statistics
import time

import pytest
from quart import Quart
from quart.testing import QuartClient

from chatapp import create_app
from chatapp.accounts import Accounts, Person
from tests.conftest import MakeApp
from tests.support import HTMX
from tests.support.app import app_settings
from tests.support.client import form_csrf, open_chat, send, send_form, sign_in_as, soup
from tests.support.fake_openai import FakeOpenAI
from tests.support.idor import assert_no_idor
from tests.support.people import PASSWORD, signed_in


async def _person(app: Quart, name: str, *, admin: bool = False) -> Person:
    accounts: Accounts = app.extensions["accounts"]
    return await accounts.create_person(name, PASSWORD, admin=admin)


@pytest.fixture
async def team(make_app: MakeApp) -> Quart:
    app = await make_app(auth="accounts", login_rate_limit="3/minute")
    for name in ("ada", "grace"):
        await _person(app, name)
    return app


# --- the door -------------------------------------------------------------------------------------

async def test_everything_but_the_sign_in_page_and_health_asks_to_sign_in(team: Quart) -> None:
    client = team.test_client()
    response = await client.get("/c/abc?x=1")
    assert response.status_code == 302 and response.headers["Location"] == "/sign-in?next=/c/abc?x%3D1"
    assert (await client.get("/", headers=HTMX)).status_code == 401
    assert (await client.post("/new")).status_code == 401
    for path in ("/sign-in", "/healthz", "/static/app.css"):
        assert (await client.get(path)).status_code == 200, path


async def test_a_person_signs_in_and_their_name_is_on_the_page(team: Quart) -> None:
    client = await signed_in(team, "ada")
    page = soup(await (await client.get("/", follow_redirects=True)).get_data())
    assert page.select_one(".account-link").get_text(strip=True) == "ada"
    assert "kept in your account" in page.select_one(".kept-where").get_text()


@pytest.mark.parametrize("name", ["ada", "nobody", "ADA "])
async def test_a_wrong_password_and_an_unknown_name_get_the_same_answer(team: Quart, name: str) -> None:
    response = await sign_in_as(team.test_client(), name, "not the password")
    body = soup(await response.get_data())
    assert response.status_code == 401
    assert body.select_one("[role=alert]").get_text(" ", strip=True).startswith(
        "That name and password do not match an account.")


async def test_names_are_case_blind_and_a_disabled_person_cannot_sign_in(team: Quart) -> None:
    assert (await sign_in_as(team.test_client(), "ADA", PASSWORD)).status_code == 303
    grace = await team.extensions["accounts"].find("grace")
    await team.extensions["accounts"].disable(grace.id)
    response = await sign_in_as(team.test_client(), "grace", PASSWORD)
    assert response.status_code == 401  # the same answer as a wrong password: no telling who is disabled


async def test_a_disabled_person_is_out_at_their_next_request(team: Quart) -> None:
    client = await signed_in(team, "grace")
    assert (await client.get("/")).status_code in (200, 302)
    grace = await team.extensions["accounts"].find("grace")
    await team.extensions["accounts"].disable(grace.id)
    response = await client.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/sign-in")


# --- sessions: fixation, sign-out, everywhere -------------------------------------------------------

def _cookie(client: QuartClient) -> str:
    return next(c.value for c in client.cookie_jar if c.name == "chatapp_session")


async def test_signing_in_starts_a_fresh_session_a_planted_one_is_worth_nothing(team: Quart) -> None:
    victim = team.test_client()
    planted_csrf = await form_csrf(victim, "/sign-in")
    planted = _cookie(victim)  # what an attacker would have planted before the victim signs in
    await sign_in_as(victim, "ada", PASSWORD)
    assert _cookie(victim) != planted
    assert await form_csrf(victim, "/account") != planted_csrf
    attacker = team.test_client()
    attacker.set_cookie("localhost", "chatapp_session", planted)
    assert (await attacker.get("/account")).status_code == 302  # not signed in as the victim


async def test_signing_out_ends_the_session_on_the_server_too(team: Quart) -> None:
    client = await signed_in(team, "ada")
    copy = team.test_client()
    copy.set_cookie("localhost", "chatapp_session", _cookie(client))
    assert (await copy.get("/account")).status_code == 200
    response = await client.post("/sign-out", form={"csrf_token": await form_csrf(client, "/account")})
    assert response.status_code == 303 and response.headers["Location"] == "/sign-in"
    assert (await copy.get("/account")).status_code == 302  # the copied cookie is worth nothing now


async def test_sign_out_everywhere_ends_every_session_of_the_person_only(team: Quart) -> None:
    laptop, phone, colleague = (await signed_in(team, "ada"), await signed_in(team, "ada"),
                                await signed_in(team, "grace"))
    page = soup(await (await phone.get("/account")).get_data())
    assert "2 places" in page.get_text(" ", strip=True)
    response = await laptop.post("/sign-out-everywhere", form={"csrf_token": await form_csrf(laptop, "/account")})
    assert response.status_code == 303
    for client in (laptop, phone):
        assert (await client.get("/account")).status_code == 302
    assert (await colleague.get("/account")).status_code == 200


@pytest.mark.parametrize("path", ["/sign-in", "/sign-out", "/sign-out-everywhere", "/account/claim",
                                  "/account/password"])
@pytest.mark.parametrize("headers", [{}, {"Sec-Fetch-Site": "cross-site"}])
async def test_every_account_form_refuses_a_missing_token_or_another_site(team: Quart, path: str,
                                                                          headers: dict[str, str]) -> None:
    client = await signed_in(team, "ada")
    form = {"name": "ada", "password": PASSWORD, "current": PASSWORD, "choice": "bring"}
    if headers:  # the right token, but sent from another site
        form["csrf_token"] = await form_csrf(client, "/account")
    response = await client.post(path, form=form, headers=headers)
    assert response.status_code == 403, path
    assert (await client.get("/account")).status_code == 200  # still signed in: nothing happened


# --- where sign-in leads --------------------------------------------------------------------------

@pytest.mark.parametrize(("asked", "lands"), [
    ("/c/abc", "/c/abc"), ("/account?x=1", "/account?x=1"), ("//evil.example/", "/"), ("/\\evil.example", "/"),
    ("https://evil.example/", "/"), ("javascript:alert(1)", "/"), ("/%0d%0aSet-Cookie:x", "/%0d%0aSet-Cookie:x"),
    ("", "/"),
])
async def test_sign_in_goes_back_where_the_person_was_and_never_off_site(team: Quart, asked: str, lands: str) -> None:
    response = await sign_in_as(team.test_client(), "ada", PASSWORD, next_url=asked)
    assert response.status_code == 303 and response.headers["Location"] == lands


# --- attempts: per account and per address, the known browser exempt -----------------------------

async def test_guessing_a_name_slows_the_guesser_not_the_person_on_their_own_browser(team: Quart) -> None:
    own_browser = await signed_in(team, "ada")  # known from now on
    await own_browser.post("/sign-out", form={"csrf_token": await form_csrf(own_browser, "/account")})
    guesses = []
    for number in range(5):  # from five fresh browsers of one address
        guesses.append((await sign_in_as(team.test_client(), "ada", f"guess {number}")).status_code)
    assert guesses[:3] == [401, 401, 401] and guesses[-1] == 429
    assert (await sign_in_as(own_browser, "ada", PASSWORD)).status_code == 303


async def test_one_account_guessed_from_many_addresses_backs_off(team: Quart) -> None:
    statuses = []
    for number in range(5):
        client = team.test_client()
        scope = {"client": (f"198.51.100.{number}", 4000)}
        csrf = await form_csrf(client, "/sign-in")
        response = await client.post("/sign-in", form={"name": "grace", "password": f"guess {number}",
                                                       "csrf_token": csrf}, scope_base=scope)
        statuses.append(response.status_code)
    assert statuses[:3] == [401, 401, 401] and 429 in statuses[3:]


@pytest.mark.sqlite_only  # about the route's work, not the database's (bench/sign_in_timing.py measures it too)
async def test_an_unknown_name_takes_as_long_as_a_wrong_password_over_50_tries(make_app: MakeApp) -> None:
    """The issue's bar: within 20%, over 50 tries each, through the whole sign-in route (the real
    argon2id parameters)."""
    app = await make_app(auth="accounts", login_rate_limit="1000/minute")
    await _person(app, "ada")
    client = app.test_client()
    csrf = await form_csrf(client, "/sign-in")
    timings: dict[str, list[float]] = {"ada": [], "nobody at all": []}
    for _ in range(50):
        for name, times in timings.items():  # interleaved: a slow moment weighs on both alike
            started = time.perf_counter()
            response = await client.post("/sign-in", form={"name": name, "password": "wrong password!",
                                                           "csrf_token": csrf})
            await response.get_data()
            times.append(time.perf_counter() - started)
            assert response.status_code == 401
    ratio = statistics.median(timings["nobody at all"]) / statistics.median(timings["ada"])
    assert 0.8 <= ratio <= 1.2, ratio


# --- links: invitations, resets, open sign-up -----------------------------------------------------

async def test_an_invitation_joins_once(team: Quart) -> None:
    token = await team.extensions["accounts"].create_invitation(None)
    client = team.test_client()
    page = soup(await (await client.get(f"/join/{token}")).get_data())
    assert page.select_one("h1").get_text() == "Join chatapp"
    csrf = page.select_one("input[name=csrf_token]")["value"]
    weak = await client.post(f"/join/{token}", form={"name": "linus", "password": "short", "csrf_token": csrf})
    assert weak.status_code == 400 and 'value="linus"' in (await weak.get_data(as_text=True))
    taken = await client.post(f"/join/{token}", form={"name": "ADA", "password": PASSWORD, "csrf_token": csrf})
    assert taken.status_code == 409
    joined = await client.post(f"/join/{token}", form={"name": "linus", "password": PASSWORD, "csrf_token": csrf})
    assert joined.status_code == 303
    assert (await client.get("/account")).status_code == 200
    again = team.test_client()
    response = await again.get(f"/join/{token}")
    assert response.status_code == 404 and "expired or was used" in (await response.get_data(as_text=True))


async def test_a_reset_link_sets_a_password_and_ends_the_other_sessions(team: Quart) -> None:
    ada = await team.extensions["accounts"].find("ada")
    elsewhere = await signed_in(team, "ada")
    token = await team.extensions["accounts"].create_reset(ada.id, None)
    client = team.test_client()
    page = soup(await (await client.get(f"/reset/{token}")).get_data())
    assert "Hello ada" in page.get_text()
    csrf = page.select_one("input[name=csrf_token]")["value"]
    response = await client.post(f"/reset/{token}", form={"password": "a brand new passphrase", "csrf_token": csrf})
    assert response.status_code == 303
    assert (await client.get("/account")).status_code == 200
    assert (await elsewhere.get("/account")).status_code == 302
    assert (await sign_in_as(team.test_client(), "ada", "a brand new passphrase")).status_code == 303
    assert (await team.test_client().get(f"/reset/{token}")).status_code == 404


async def test_open_sign_up_only_when_the_operator_turns_it_on(make_app: MakeApp, team: Quart) -> None:
    response = await team.test_client().get("/sign-up")
    assert response.status_code == 404 and "by invitation" in (await response.get_data(as_text=True))
    app = await make_app(auth="accounts", open_signup=True)
    client = app.test_client()
    page = soup(await (await client.get("/sign-in")).get_data())
    assert page.select_one("a[href^='/sign-up']") is not None
    csrf = await form_csrf(client, "/sign-up")
    response = await client.post("/sign-up", form={"name": "newcomer", "password": PASSWORD, "csrf_token": csrf})
    assert response.status_code == 303
    assert (await client.get("/account")).status_code == 200


async def test_open_sign_up_is_limited_per_address(make_app: MakeApp) -> None:
    app = await make_app(auth="accounts", open_signup=True)
    statuses = []
    for number in range(11):
        client = app.test_client()
        csrf = await form_csrf(client, "/sign-up")
        response = await client.post("/sign-up", form={"name": f"bot{number}", "password": PASSWORD,
                                                       "csrf_token": csrf})
        statuses.append(response.status_code)
    assert statuses == [303] * 10 + [429]


# --- ownership: people, not browsers -----------------------------------------------------------------

async def test_a_persons_conversations_follow_them_to_another_browser(team: Quart) -> None:
    laptop = await signed_in(team, "ada")
    action, csrf = await open_chat(laptop)
    await send_form(laptop, action, csrf, "kept in my account")
    phone = await signed_in(team, "ada")
    page = soup(await (await phone.get("/", follow_redirects=True)).get_data())
    assert "kept in my account" in page.get_text()


async def test_the_idor_walk_with_a_second_person(team: Quart, fake_upstream: FakeOpenAI) -> None:
    assert await assert_no_idor(team, await signed_in(team, "ada"), await signed_in(team, "grace"),
                                fake_upstream) >= 10


async def test_a_browsers_earlier_conversations_are_offered_at_sign_in(tmp_path, database: str,
                                                                       fake_upstream: FakeOpenAI) -> None:
    """An operator turns accounts on for an app people used anonymously."""
    settings = app_settings(tmp_path, fake_upstream, database=database)
    before = create_app(settings)
    async with before.test_app():
        browser = before.test_client()
        action, csrf = await open_chat(browser)
        await send_form(browser, action, csrf, "from my anonymous days")
        cookie = _cookie(browser)
    after = create_app({**settings, "auth": "accounts"})
    async with after.test_app():
        await _person(after, "ada")
        browser = after.test_client()
        browser.set_cookie("localhost", "chatapp_session", cookie)
        response = await sign_in_as(browser, "ada", PASSWORD, next_url="/account")
        assert response.headers["Location"] == "/account/claim?next=/account"
        offer = soup(await (await browser.get(response.headers["Location"])).get_data())
        assert "1 conversation from before you signed in" in offer.get_text(" ", strip=True)
        csrf = offer.select_one("input[name=csrf_token]")["value"]
        left = await browser.post("/account/claim", form={"choice": "leave", "csrf_token": csrf, "next": "/account"})
        assert left.headers["Location"] == "/account"
        assert "from my anonymous days" not in (await (await browser.get("/", follow_redirects=True)).get_data(as_text=True))
        assert "1 conversation" in (await (await browser.get("/account")).get_data(as_text=True))  # offered again
        await browser.post("/account/claim", form={"choice": "bring", "csrf_token": csrf})
        page = await (await browser.get("/", follow_redirects=True)).get_data(as_text=True)
        assert "from my anonymous days" in page
        phone = await signed_in(after, "ada")
        assert "from my anonymous days" in (await (await phone.get("/", follow_redirects=True)).get_data(as_text=True))


async def test_limits_are_per_person_not_per_office_address(make_app: MakeApp) -> None:
    app = await make_app(auth="accounts", rate_limit_per_session="3/minute", rate_limit_per_address="4/minute")
    for name in ("ada", "grace"):
        await _person(app, name)
    ada, grace = await signed_in(app, "ada"), await signed_in(app, "grace")
    statuses = {}
    for name, client in (("ada", ada), ("grace", grace)):
        action, csrf = await open_chat(client)
        statuses[name] = [(await send(client, action, csrf, f"question {n}")).status_code for n in range(4)]
    # Both from one address: 8 sends, more than the address's 4; each person stops at their own 3.
    assert statuses == {"ada": [200, 200, 200, 429], "grace": [200, 200, 200, 429]}


async def test_a_budget_an_admin_set_for_a_person_holds(make_app: MakeApp) -> None:
    app = await make_app(auth="accounts", daily_tokens_per_session=1_000_000)
    ada = await _person(app, "ada")
    client = await signed_in(app, "ada")
    action, csrf = await open_chat(client)
    assert (await send(client, action, csrf, "spend a little")).status_code == 200
    await app.extensions["accounts"].set_budget(ada.id, 1)
    refused = await send(client, action, csrf, "and more")
    assert refused.status_code == 429 and "allowance of 1 tokens" in refused.body
    await app.extensions["accounts"].set_budget(ada.id, 0)  # 0: no limit for this person
    assert (await send(client, action, csrf, "now free")).status_code == 200


# --- changing one's password -------------------------------------------------------------------------

async def test_changing_the_password_needs_the_current_one_and_signs_out_elsewhere(team: Quart) -> None:
    here, elsewhere = await signed_in(team, "ada"), await signed_in(team, "ada")
    csrf = await form_csrf(here, "/account")
    wrong = await here.post("/account/password", form={"current": "nope", "password": "another long one",
                                                       "csrf_token": csrf})
    assert wrong.status_code == 400 and "Nothing was changed" in (await wrong.get_data(as_text=True))
    right = await here.post("/account/password", form={"current": PASSWORD, "password": "another long one",
                                                       "csrf_token": csrf})
    assert right.status_code == 303
    assert "Your password was changed" in (await (await here.get(right.headers["Location"])).get_data(as_text=True))
    assert (await elsewhere.get("/account")).status_code == 302
