"""An optional shared passphrase (CHATAPP_PASSWORD) in front of the whole app.

A browser that signs in gets a fresh session (a new identity and CSRF token: no fixation), marked
with a fingerprint of the passphrase, so changing the passphrase signs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac

from quart import Blueprint, Quart, Response, current_app, redirect, render_template, request, session, url_for

from . import visitor
from .errors import Refused
from .web import error_response, is_htmx, read_trusted_form

bp = Blueprint("gate", __name__)

# Reachable without signing in: the sign-in page itself, the operators' endpoints (metrics has a
# token of its own), the stylesheets.
OPEN_ENDPOINTS = {"gate.login", "gate.sign_in", "ops.healthz", "ops.readyz", "ops.metrics_page", "ops.favicon",
                  "static"}


def _fingerprint(password: str) -> str:
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, password.encode(), hashlib.sha256).hexdigest()[:32]


def _signed_in(password: str) -> bool:
    return hmac.compare_digest(session.get("gate", ""), _fingerprint(password))


def install(app: Quart, password: str | None) -> None:
    if not password:
        return
    app.register_blueprint(bp)

    @app.before_request
    async def _require_sign_in() -> Response | None:
        if request.endpoint in OPEN_ENDPOINTS or _signed_in(password):
            return None
        if is_htmx() or request.method != "GET":
            return await error_response(401, "You are not signed in. Reload the page and sign in.")
        return redirect(url_for("gate.login"))


@bp.get("/login")
async def login() -> str:
    """The passphrase form."""
    return await render_template("login.html", csrf_token=visitor.csrf_token(), error=None)


@bp.post("/login")
async def sign_in() -> Response:
    """Check the passphrase (constant time, rate limited per address) and start a fresh session."""
    try:
        form = await read_trusted_form()
        await current_app.extensions["quota"].check_login(visitor.address(), current_app.extensions["store"])
    except Refused as refused:
        return await _login_page(refused.message, refused.status, refused.retry_after)
    password = current_app.config["CHATAPP"].password
    given = (form.get("password") or "").encode()
    if not hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(password.encode()).digest()):
        return await _login_page("That passphrase is not right.", 401)
    visitor.start_fresh()
    session["gate"] = _fingerprint(password)
    return redirect(url_for("chat.index"), 303)


@bp.post("/logout")
async def sign_out() -> Response:
    """End this browser's session."""
    try:
        await read_trusted_form()
    except Refused as refused:
        return await error_response(refused.status, refused.message)
    session.clear()
    return redirect(url_for("gate.login"), 303)


async def _login_page(error: str, status: int, retry_after: int | None = None) -> Response:
    body = await render_template("login.html", csrf_token=visitor.csrf_token(), error=error)
    response = Response(body, status=status, mimetype="text/html")
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response
