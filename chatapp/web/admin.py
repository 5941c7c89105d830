"""The admin page, in the modes with people: everyone with their usage and budget; invitations;
per person disable, enable, make admin, budget and a reset link; the audit log.

Every form works without JavaScript: a POST, then a 303 back to the page with a line saying what
was done. With htmx a person's forms swap their own row. A one-time link (an invitation, a reset)
is shown in the POST's own response, never put in a URL, where it would reach logs and history.
Each action is audited (Accounts.record: the table, and a log line).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from quart import Blueprint, Response, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from .. import accounts as people
from ..accounts import Person, PersonUsage
from . import current, identity, visitor
from .http import AnyResponse, error_response, is_htmx, read_trusted_form

bp = Blueprint("admin", __name__, url_prefix="/admin")

AUDIT_PAGE = 50
MAX_BUDGET = 10**12
SOURCES = {people.LOCAL: "local", people.HEADER: "proxy", people.OIDC: "single sign-on"}
NO_ONE = "There is no such person. Reload the page to see everyone there is."
BAD_BUDGET = ("A budget is a whole number of tokens a day, 0 or more (0: no limit), or blank for the default. "
              "Nothing was changed.")
NOT_LOCAL = "Only people with a password here get a reset link; the others sign in through your organisation."
# What the page says after each action (`done` in its URL, the person's id in `who`).
DONE = {
    "disabled": "{} is disabled: signed out everywhere, and their answers stopped.",
    "enabled": "{} is enabled again and can sign in.",
    "admin": "{} is an admin now.",
    "not-admin": "{} is no longer an admin.",
    "budget": "The budget of {} is changed.",
    "reset": "A reset link for {} is shown in their row. It works once, within 24 hours.",
}

# An action on a person: (what the page says it did, the audit's action and detail), or a
# one-time reset link as the last item. Raises people.Refused (409) or ValueError (400).
Outcome = tuple[str, str, str | None, str | None]
Action = Callable[[Person, MultiDict[str, str]], Awaitable[Outcome]]


@bp.get("")
@identity.admin_only
async def page() -> Response:
    """Everyone, the invitation form and a page of the audit log."""
    who, done = request.args.get("who"), request.args.get("done")
    return await _page(done=done if done in DONE else None, who=who)


@bp.post("/invitations")
@identity.admin_only
async def invite() -> AnyResponse:
    """A new invitation link (one use, 7 days), optionally making an admin; shown once."""
    if current.config().auth != "accounts":
        return await error_response(404, "People sign in through your organisation here: no invitations needed.")
    form = await read_trusted_form()
    admin, makes_admin = _admin(), form.get("makes_admin") == "1"
    token = await current.accounts().create_invitation(admin.id, makes_admin=makes_admin)
    await current.accounts().record("invitation made", actor=admin.id, address=visitor.address(),
                                    detail="makes an admin" if makes_admin else None)
    invitation = {"url": url_for("account.join", token=token, _external=True), "makes_admin": makes_admin}
    if is_htmx():
        return Response(await render_template("_admin_invitation.html", invitation=invitation), mimetype="text/html")
    return await _page(invitation=invitation)


@bp.post("/people/<person_id>/<any(disable, enable, admin, budget, reset):action>")
@identity.admin_only
async def act(person_id: str, action: str) -> AnyResponse:
    """One action on one person: their row again (htmx), or back to the page."""
    form = await read_trusted_form()
    person = await current.accounts().person(person_id)
    if person is None:
        return await error_response(404, NO_ONE)
    try:
        done, audited, detail, link = await _ACTIONS[action](person, form)
    except people.Refused as refused:
        return await _refused(person, 409, str(refused))
    except ValueError as bad:
        return await _refused(person, 400, str(bad))
    await current.accounts().record(audited, actor=_admin().id, target=person.id, address=visitor.address(),
                                    detail=detail)
    if is_htmx():
        return await _row(person, link=link, swap_status=DONE[done].format(person.name))
    if link is not None:  # shown in this response only
        return await _page(done=done, who=person.id, reset=(person.id, link))
    return redirect(url_for("admin.page", done=done, who=person.id), 303)


async def _disable(person: Person, form: MultiDict[str, str]) -> Outcome:
    stopped = await current.accounts().disable(person.id)
    return "disabled", "disabled", f"{stopped or 0} answers asked to stop", None


async def _enable(person: Person, form: MultiDict[str, str]) -> Outcome:
    await current.accounts().enable(person.id)
    return "enabled", "enabled", None, None


async def _set_admin(person: Person, form: MultiDict[str, str]) -> Outcome:
    admin = form.get("admin") == "1"
    await current.accounts().set_admin(person.id, admin)
    return ("admin", "made admin", None, None) if admin else ("not-admin", "no longer admin", None, None)


async def _set_budget(person: Person, form: MultiDict[str, str]) -> Outcome:
    budget = _budget(form.get("budget") or "")
    await current.accounts().set_budget(person.id, budget)
    return "budget", "budget set", "default" if budget is None else f"{budget} tokens a day", None


async def _reset(person: Person, form: MultiDict[str, str]) -> Outcome:
    if current.config().auth != "accounts" or person.source != people.LOCAL:
        raise ValueError(NOT_LOCAL)
    token = await current.accounts().create_reset(person.id, _admin().id)
    return "reset", "reset link made", None, url_for("account.reset", token=token, _external=True)


_ACTIONS: dict[str, Action] = {"disable": _disable, "enable": _enable, "admin": _set_admin, "budget": _set_budget,
                               "reset": _reset}


def _budget(text: str) -> int | None:
    """A budget as typed: blank is the operator's default, else a whole number of tokens, 0 or more."""
    text = text.strip().replace(",", "").replace("_", "")
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_BUDGET:
        raise ValueError(BAD_BUDGET)
    return int(text)


def _admin() -> Person:
    admin = visitor.person()
    assert admin is not None  # admin_only let only an admin in
    return admin


async def _refused(person: Person, status: int, sentence: str) -> Response:
    """Nothing was done: the row with the reason (htmx), or the page with it."""
    if is_htmx():
        return await _row(person, status=status, error=sentence)
    return await _page(status=status, error=sentence)


async def _usage(person: Person) -> PersonUsage:
    found = [usage for usage in await current.accounts().people() if usage.person.id == person.id]
    return found[0] if found else PersonUsage(person, 0, 0)


async def _row(person: Person, *, status: int = 200, error: str | None = None, link: str | None = None,
               swap_status: str | None = None) -> Response:
    body = await render_template("_admin_person.html", usage=await _usage(person), error=error, link=link,
                                 swap_status=swap_status, **_shared())
    return Response(body, status=status, mimetype="text/html")


async def _page(*, status: int = 200, done: str | None = None, who: str | None = None, error: str | None = None,
                invitation: dict[str, object] | None = None, reset: tuple[str, str] | None = None) -> Response:
    everyone = await current.accounts().people()
    names = {usage.person.id: usage.person.name for usage in everyone}
    number = _audit_page()
    entries, older = await current.accounts().audit_log(limit=AUDIT_PAGE, offset=(number - 1) * AUDIT_PAGE)
    note = DONE[done].format(names[who]) if done and who in names else None
    body = await render_template("admin.html", people=everyone, names=names, entries=entries, older=older,
                                 page_number=number, note=note, refused=error, invitation=invitation,
                                 reset=reset, **_shared())
    return Response(body, status=status, mimetype="text/html")


def _audit_page() -> int:
    """Which page of the audit log (?page=N, from 1); anything else is the first."""
    text = request.args.get("page", "")
    return int(text) if text.isascii() and text.isdigit() and 0 < int(text) < 10**6 else 1


def _shared() -> dict[str, object]:
    """What the page and a lone row both need."""
    return {"me": _admin(), "sources": SOURCES, "accounts_mode": current.config().auth == "accounts",
            "default_budget": current.config().daily_tokens_per_session, "when": _when}


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")
