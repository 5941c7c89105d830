"""OpenID Connect sign-in (CHATAPP_AUTH=oidc): the sign-in page's button leads to /oidc/start,
which sends the browser to the provider; the provider sends it back to /oidc/callback.

The flow's secrets (state, nonce, PKCE verifier) and where the person was going wait in the
browser's signed session under one key, taken out at the callback before anything else: a
callback works once. A person is known by the provider's subject (issuer and `sub`), never by an
e-mail address, which another account at the provider could claim. The provider's side
(discovery, the code exchange, the ID token's check) is chatapp/openid.py.
"""

from __future__ import annotations

import hmac

from quart import Blueprint, Response, current_app, redirect, render_template, request, session, url_for

from ..accounts import OIDC, oidc_subject
from ..openid import DENIED, EXPIRED, PROVIDER_ERROR, Flow, OpenIDClient, SignInFailed
from . import account, current, identity
from .http import AnyResponse

bp = Blueprint("oidc", __name__, url_prefix="/oidc")

FLOW = "oidc_flow"  # the session's key for the sign-in under way
DISABLED = "Your account is disabled. Ask an admin."


@bp.before_app_serving
async def _open_client() -> None:
    config = current.config()
    assert config.oidc_issuer and config.oidc_client_id  # load_config checked
    current_app.extensions["openid"] = OpenIDClient(config.oidc_issuer, config.oidc_client_id,
                                                    config.oidc_client_secret, config.oidc_scopes)


@bp.after_app_serving
async def _close_client() -> None:
    await current.openid().aclose()


@bp.get("/start")
@identity.public
async def start() -> AnyResponse:
    """Send the browser to the provider, with a fresh state, nonce and PKCE verifier."""
    flow = Flow.new(identity.safe_next(request.args.get("next")))
    try:
        url = await current.openid().authorization_url(_callback_url(), flow)
    except SignInFailed as failed:
        return await _sign_in_page(failed.status, failed.message, flow.next)
    session[FLOW] = flow.stored()  # a sign-in started before in this browser is forgotten
    return redirect(url)


@bp.get("/callback")
@identity.public
async def callback() -> AnyResponse:
    """Where the provider sends the browser back: check, exchange, verify, then sign the person in."""
    flow = Flow.restore(session.pop(FLOW, None))  # single use, whatever happens next
    args = request.args
    try:
        if "error" in args:  # no sign-in to protect: said before the state is looked at
            raise _provider_error(args["error"])
        if flow is None or not hmac.compare_digest(args.get("state", "").encode(), flow.state.encode()):
            raise SignInFailed(EXPIRED, "state unknown, expired or used already")
        if not args.get("code"):
            raise SignInFailed(EXPIRED, "no code")
        claims = await current.openid().sign_in(args["code"], _callback_url(), flow, answered_by=args.get("iss"))
    except SignInFailed as failed:
        await _record_failure(failed.reason)
        return await _sign_in_page(failed.status, failed.message, flow.next if flow else "/")
    person = await current.accounts().person_for_subject(
        OIDC, oidc_subject(claims.issuer, claims.subject), name=claims.name, display_name=claims.display_name)
    if person.disabled:
        await _record_failure("disabled", target=person.id)
        return await _sign_in_page(403, DISABLED, flow.next)
    await identity.start_session(person, how="oidc")
    return await account.signed_in_to(flow.next)  # the claim offer, then where they were going


def _callback_url() -> str:
    # Registered at the provider as it is written here, scheme and host as the proxy says (proxies.py).
    return url_for("oidc.callback", _external=True)


def _provider_error(code: str) -> SignInFailed:
    reason = f"provider said {code[:50]!r}"
    if code == "access_denied":
        return SignInFailed(DENIED, reason, 403)
    return SignInFailed(PROVIDER_ERROR, reason)  # its error_description is not shown: anyone can write one


async def _record_failure(reason: str, *, target: str | None = None) -> None:
    # Anyone can make up a callback: audited at most a few times a minute per address.
    await identity.audit_failure("sign-in failed", f"oidc: {reason}", target=target)


async def _sign_in_page(status: int, error: str, next_url: str) -> Response:
    """The sign-in page with what went wrong; its button starts a new sign-in."""
    body = await render_template("sign_in.html", kind="sign-in", auth="oidc", error=error, next=next_url)
    return Response(body, status=status, mimetype="text/html")
