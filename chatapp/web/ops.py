"""For operators: is the process up (/healthz), can it serve (/readyz), what is it doing (/metrics)."""

from __future__ import annotations

import hmac
import time

from quart import Blueprint, Response, current_app, jsonify, request

from . import current
from .. import metrics
from ..llm import LLMError

bp = Blueprint("ops", __name__)

# /readyz asks the database and the model server at most this often; in between it answers from
# its last look, so a load balancer polling every second costs the model server nothing.
READY_CACHE_SECONDS = 5.0

@bp.get("/healthz")
async def healthz() -> Response:
    """The process serves."""
    return Response("ok\n", mimetype="text/plain")


@bp.get("/favicon.ico")
async def favicon() -> Response:
    """No icon, said once: browsers ask for one on every page otherwise."""
    return Response(status=204, headers={"Cache-Control": "public, max-age=86400"})


@bp.get("/readyz")
async def readyz() -> tuple[Response, int]:
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
    if not token:
        return False
    sent = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
    return hmac.compare_digest(sent, token.encode())


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
