"""For operators: is the process up (/healthz), can it serve (/readyz), what is it doing (/metrics)."""

from __future__ import annotations

import hmac
import re
import time

from quart import Blueprint, Response, current_app, jsonify, redirect, request

from . import current, metrics
from .llm import LLMError
from .web import read_trusted_form

bp = Blueprint("ops", __name__)

# /readyz asks the database and the model server at most this often; in between it answers from
# its last look, so a load balancer polling every second costs the model server nothing.
READY_CACHE_SECONDS = 5.0
THEMES = ("system", "light", "dark")
# A path of this site and nothing else: unreserved and sub-delimiter characters, %-escapes, `/`,
# `:` and `@` (RFC 3986 pchar). No `//` or `/\` at the start (another host, to a browser), no
# backslash, space or control character (which browsers drop or turn into `/`), no query.
_SAME_SITE_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")


@bp.get("/healthz")
async def healthz() -> Response:
    """The process serves."""
    return Response("ok\n", mimetype="text/plain")


@bp.get("/favicon.ico")
async def favicon() -> Response:
    """No icon, said once: browsers ask for one on every page otherwise."""
    return Response(status=204, headers={"Cache-Control": "public, max-age=86400"})


@bp.post("/theme")
async def set_theme() -> Response:
    """Light, dark, or the system's: a cookie, so the choice works without JavaScript."""
    form = await read_trusted_form()
    theme = form.get("theme") if form.get("theme") in THEMES else "system"
    response = redirect(same_site_path(form.get("back")), 303)
    response.set_cookie("theme", theme, max_age=365 * 86400, httponly=True, samesite="Lax",
                        secure=current_app.config["SESSION_COOKIE_SECURE"])
    return response


def same_site_path(given: str | None) -> str:
    """`given` if it is a plain path of this site, else "/": never a redirect to elsewhere."""
    return given if given and _SAME_SITE_PATH.fullmatch(given) else "/"


@bp.get("/readyz")
async def readyz() -> Response:
    """The database is writable and the model server answers (looked at every few seconds)."""
    cache = current_app.extensions.setdefault("readiness", {"at": float("-inf"), "checks": {}})
    if time.monotonic() - cache["at"] >= READY_CACHE_SECONDS:
        cache["checks"] = {"database": await _database(), "model": await _model()}
        cache["at"] = time.monotonic()
    checks = cache["checks"]
    ready = all(value == "ok" for value in checks.values())
    if current.config().production and not _has_token():
        # Why it is not ready (error texts, library names) is for operators, not for anyone.
        checks = {name: "ok" if value == "ok" else "error" for name, value in checks.items()}
    return jsonify(ready=ready, **checks), 200 if ready else 503


@bp.get("/metrics")
async def metrics_page() -> Response:
    """Prometheus metrics; with CHATAPP_METRICS_TOKEN set, only for `Authorization: Bearer <token>`."""
    if current.config().metrics_token and not _has_token():
        return Response("unauthorized\n", status=401, mimetype="text/plain",
                        headers={"WWW-Authenticate": "Bearer"})
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


def _has_token() -> bool:
    """The request carries CHATAPP_METRICS_TOKEN (`Authorization: Bearer <token>`)."""
    token = current.config().metrics_token
    sent = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
    return bool(token) and hmac.compare_digest(sent, token.encode())


async def _database() -> str:
    try:
        await current.store().check_writable()
    except Exception as error:  # any failure means not ready; the reason goes to the operator
        return f"error: {type(error).__name__}: {error}"
    return "ok"


async def _model() -> str:
    try:
        await current.provider().check()
    except LLMError as error:
        return f"error: {error.kind}: {error.user_message}"
    return "ok"
