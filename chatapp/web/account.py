"""Signing in and out, and a person's own account page, in the modes with people.

Local accounts (CHATAPP_AUTH=accounts) sign in with a name and a password here, join by an
admin's invitation link (or by open sign-up, CHATAPP_OPEN_SIGNUP), and set a new password by an
admin's reset link; every form works without JavaScript. The OpenID and header modes share the
sign-in page (a button to the provider; a note that the proxy did not name anyone), the sign-out
and the account page. A wrong name and a wrong password get the same answer after the same work.
"""

from __future__ import annotations

from quart import Blueprint, Response, redirect, render_template, request, session, url_for

from .. import accounts as people
from ..passwords import MIN_LENGTH
from ..errors import Refused
from . import attempts, current, identity, visitor
from .http import AnyResponse, error_response, read_trusted_form

bp = Blueprint("account", __name__)

WRONG = "That name and password do not match an account."
LINK_GONE = "This link has expired or was used already. Ask an admin for a new one."


def _accounts_mode() -> bool:
    return current.config().auth == "accounts"


async def _form_page(kind: str, *, status: int = 200, error: str | None = None, name: str = "",
                     token: str | None = None, greet: str | None = None, retry_after: int | None = None) -> Response:
    """The sign-in page, or one of its kin (sign-up, an invitation, a reset link): `kind` says which."""
    body = await render_template(
        "sign_in.html", kind=kind, auth=current.config().auth, error=error, name=name, token=token, greet=greet,
        next=identity.safe_next(request.args.get("next")), open_signup=current.config().open_signup,
        min_password=MIN_LENGTH)
    response = Response(body, status=status, mimetype="text/html")
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


async def signed_in_to(next_url: str | None) -> AnyResponse:
    """Where a fresh sign-in goes: the offer of the browser's earlier conversations first, if
    there are any, then where the person was going."""
    target = identity.safe_next(next_url)
    if await identity.claimable():
        return redirect(url_for("account.claim_page", next=target), 303)
    return redirect(target, 303)


@bp.get("/sign-in")
@identity.public
async def sign_in_page() -> AnyResponse:
    if visitor.person() is not None:
        return redirect(identity.safe_next(request.args.get("next")))
    return await _form_page("sign-in")


@bp.post("/sign-in")
@identity.public
async def sign_in() -> AnyResponse:
    """Check a name and password, limited per address and per account, and start a fresh session."""
    if not _accounts_mode():
        return await error_response(404)
    stamp = attempts.stamp("accounts")
    try:
        form = await read_trusted_form()
        name = (form.get("name") or "")[:people.NAME_LENGTH * 4]
        attempt = await attempts.take(stamp, account=people.name_key(name)[:people.NAME_LENGTH] or None)
    except Refused as refused:
        return await _form_page("sign-in", status=refused.status, error=refused.message,
                                retry_after=refused.retry_after)
    person = await current.accounts().check_password(name, form.get("password") or "")
    if person is None:
        await current.accounts().record("sign-in failed", address=visitor.address(),
                                        detail=f"name {name[:people.NAME_LENGTH]!r}")
        return await _form_page("sign-in", status=401, error=WRONG, name=name[:people.NAME_LENGTH])
    await identity.start_session(person, how="password")
    response = await signed_in_to(form.get("next"))
    await attempts.succeeded(attempt, response, stamp)
    return response


@bp.route("/sign-up", methods=["GET", "POST"])
@identity.public
async def sign_up() -> AnyResponse:
    """Open sign-up (CHATAPP_OPEN_SIGNUP): a new local account, signed in at once."""
    if not (_accounts_mode() and current.config().open_signup):
        return await error_response(404, "Accounts are made by invitation here. Ask an admin for a link.")
    if request.method == "GET":
        return await _form_page("sign-up")
    form = await read_trusted_form()
    try:
        await current.quota().check_sign_up(visitor.address(), current.store())
        person = await current.accounts().create_person(form.get("name") or "", form.get("password") or "",
                                                        display_name=form.get("display_name"))
    except (Refused, people.Refused) as refused:
        return await _refused_form("sign-up", refused, name=form.get("name") or "")
    await current.accounts().record("sign-up", actor=person.id, address=visitor.address())
    await identity.start_session(person, how="sign-up")
    return await signed_in_to(request.args.get("next"))


@bp.route("/join/<token>", methods=["GET", "POST"])
@identity.public
async def join(token: str) -> AnyResponse:
    """An invitation link: choose a name and a password; the link is used once."""
    if not _accounts_mode():
        return await error_response(404)
    if request.method == "GET":
        if not await current.accounts().invitation_valid(token):
            return await error_response(404, LINK_GONE)
        return await _form_page("join", token=token)
    form = await read_trusted_form()
    try:
        person = await current.accounts().redeem_invitation(token, form.get("name") or "", form.get("password") or "",
                                                            display_name=form.get("display_name"))
    except people.LinkNotValid:
        return await error_response(404, LINK_GONE)
    except people.Refused as refused:
        return await _refused_form("join", refused, name=form.get("name") or "", token=token)
    await current.accounts().record("joined by invitation", actor=person.id, address=visitor.address())
    await identity.start_session(person, how="invitation")
    return await signed_in_to(None)


@bp.route("/reset/<token>", methods=["GET", "POST"])
@identity.public
async def reset(token: str) -> AnyResponse:
    """A password-reset link: a new password; every other session of the person ends."""
    if not _accounts_mode():
        return await error_response(404)
    target = await current.accounts().reset_target(token)
    if target is None:
        return await error_response(404, LINK_GONE)
    if request.method == "GET":
        return await _form_page("reset", token=token, greet=target.display_name)
    form = await read_trusted_form()
    try:
        person = await current.accounts().reset_password(token, form.get("password") or "")
    except people.LinkNotValid:
        return await error_response(404, LINK_GONE)
    except people.Refused as refused:
        return await _refused_form("reset", refused, token=token, greet=target.display_name)
    await current.accounts().record("password reset", actor=person.id, address=visitor.address())
    await identity.start_session(person, how="reset link")
    return await signed_in_to(None)


async def _refused_form(kind: str, refused: Refused | people.Refused, *, name: str = "", token: str | None = None,
                        greet: str | None = None) -> Response:
    """The form again, with what was typed (but the password) and why it was refused."""
    if isinstance(refused, Refused):  # a limit
        return await _form_page(kind, status=refused.status, error=refused.message, name=name[:people.NAME_LENGTH],
                                token=token, greet=greet, retry_after=refused.retry_after)
    status = 409 if isinstance(refused, people.NameTaken) else 400
    return await _form_page(kind, status=status, error=str(refused), name=name[:people.NAME_LENGTH], token=token,
                            greet=greet)


@bp.post("/sign-out")
@identity.public
async def sign_out() -> AnyResponse:
    """Sign this browser out (a stale page's button too: then there is nothing to end)."""
    await read_trusted_form()
    await identity.end_session()
    return redirect(url_for("account.sign_in_page"), 303)


@bp.post("/sign-out-everywhere")
async def sign_out_everywhere() -> AnyResponse:
    """End every session of the person, this one included (a lost phone, a shared computer)."""
    await read_trusted_form()
    person = visitor.person()
    if person is not None:
        ended = await current.accounts().end_sessions(person.id)
        await current.accounts().record("signed out everywhere", actor=person.id, address=visitor.address(),
                                        detail=f"{ended} sessions")
    await identity.end_session()
    return redirect(url_for("account.sign_in_page"), 303)


@bp.get("/account")
async def account_page() -> str:
    person = visitor.person()
    assert person is not None  # identity sends anyone else to sign in
    return await render_template("account.html", person=person, auth=current.config().auth,
                                 sessions=await current.accounts().sessions(person.id),
                                 claimable=await identity.claimable(), done=request.args.get("done"))


@bp.get("/account/claim")
async def claim_page() -> AnyResponse | str:
    count = await identity.claimable()
    if not count:
        return redirect(identity.safe_next(request.args.get("next")))
    return await render_template("claim.html", count=count, next=identity.safe_next(request.args.get("next")))


@bp.post("/account/claim")
async def claim() -> AnyResponse:
    """Bring the browser's conversations from before into the account, or leave them for now
    (offered again at the account page)."""
    form = await read_trusted_form()
    person = visitor.person()
    assert person is not None
    if form.get("choice") == "bring":
        moved = await identity.claim()
        await current.accounts().record("claimed conversations", actor=person.id, address=visitor.address(),
                                        detail=f"{moved} conversations")
    return redirect(identity.safe_next(form.get("next")), 303)


@bp.post("/account/password")
async def change_password() -> AnyResponse:
    """A local person's new password, with the current one; their other sessions end."""
    form = await read_trusted_form()
    person = visitor.person()
    assert person is not None
    stamp = attempts.stamp("accounts")
    attempt = await attempts.take(stamp, account=people.name_key(person.name))  # a stolen session guesses slowly
    checked = await current.accounts().check_password(person.name, form.get("current") or "")
    if checked is None or checked.id != person.id:
        return await error_response(400, "The current password is not right. Nothing was changed.")
    try:
        await current.accounts().set_password(person.id, form.get("password") or "")
    except people.Refused as refused:
        return await error_response(400, f"{refused} Nothing was changed.")
    response = redirect(url_for("account.account_page", done="password"), 303)
    await attempts.succeeded(attempt, response, stamp)
    await current.accounts().end_sessions(person.id, keep=session.get("sid"))
    await current.accounts().record("password changed", actor=person.id, address=visitor.address())
    return response
