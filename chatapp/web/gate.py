"""An optional shared passphrase (CHATAPP_PASSWORD) in front of the whole app.

A browser that signs in gets a fresh session (a new identity and CSRF token: no fixation), marked
with a fingerprint of the passphrase, so changing the passphrase signs everyone out, and with a
session id kept on the server, so signing out ends the session even for a copy of its cookie.

Wrong passphrases back off (attempts.py) per address, except for a browser that has signed in
before: it is limited on its own, so a guesser behind the same address cannot lock the team out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from quart import Blueprint, Quart, Response, current_app, redirect, render_template, request, session, url_for

from . import attempts, current, visitor
from ..errors import Refused
from .http import AnyResponse, error_response, is_htmx, read_trusted_form

bp = Blueprint("gate", __name__)

# Reachable without signing in: the sign-in page itself, the operators' endpoints (metrics has a
# token of its own), the stylesheets.
OPEN_ENDPOINTS = {"gate.login", "gate.sign_in", "ops.healthz", "ops.readyz", "ops.metrics_page", "ops.favicon",
                  "static"}


async def _signed_in(password: str) -> bool:
    if not hmac.compare_digest(session.get("gate", ""), attempts.stamp(password)):
        return False
    lifetime = current_app.permanent_session_lifetime.total_seconds()
    return bool(session.get("sid")) and await current.store().session_alive(
        session["sid"], lifetime=lifetime)


def install(app: Quart, password: str | None) -> None:
    if not password:
        return
    app.register_blueprint(bp)

    @app.before_request
    async def _require_sign_in() -> AnyResponse | None:
        if request.endpoint in OPEN_ENDPOINTS or await _signed_in(password):
            return None
        if is_htmx() or request.method != "GET":
            return await error_response(401, "You are not signed in. Reload the page and sign in.")
        return redirect(url_for("gate.login"))


@bp.get("/login")
async def login() -> str:
    """The passphrase form."""
    return await render_template("login.html", csrf_token=visitor.csrf_token(), error=None)


@bp.post("/login")
async def sign_in() -> AnyResponse:
    """Check the passphrase (constant time, backing off after failures) and start a fresh session."""
    store, password = current.store(), current.config().password
    if not password:  # never: this blueprint is registered only with a passphrase (install)
        return await error_response(404)
    passphrase_stamp = attempts.stamp(password)
    try:
        form = await read_trusted_form()
        attempt = await attempts.take(passphrase_stamp)
    except Refused as refused:
        return await _login_page(refused.message, refused.status, refused.retry_after)
    given = (form.get("password") or "").encode()
    if not hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(password.encode()).digest()):
        return await _login_page("That passphrase is not right.", 401)
    if session.get("sid"):  # signing in again: the session it had ends
        await store.end_session(session["sid"])
    visitor.start_fresh()
    session["gate"] = passphrase_stamp
    session["sid"] = secrets.token_urlsafe(24)
    await store.add_session(session["sid"])
    response = redirect(url_for("chat.index"), 303)
    await attempts.succeeded(attempt, response, passphrase_stamp)
    return response


@bp.post("/logout")
async def sign_out() -> AnyResponse:
    """End this browser's session, here and on the server (a copied cookie is worth nothing after)."""
    await read_trusted_form()
    if session.get("sid"):
        await current.store().end_session(session["sid"])
    session.clear()
    return redirect(url_for("gate.login"), 303)


async def _login_page(error: str, status: int, retry_after: int | None = None) -> Response:
    body = await render_template("login.html", csrf_token=visitor.csrf_token(), error=error)
    response = Response(body, status=status, mimetype="text/html")
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response
