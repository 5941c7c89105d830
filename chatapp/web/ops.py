"""For operators: is the process up (/healthz), can it serve (/readyz), what is it doing (/metrics)."""

from __future__ import annotations

import asyncio
import hmac
import time
from urllib.parse import urlsplit

from quart import Blueprint, Response, current_app, jsonify, request

from . import current
from .. import metrics
from ..db import is_postgresql, sqlite_path
from ..llm import LLMError

bp = Blueprint("ops", __name__)

# /readyz asks the database and the model server at most this often; in between it answers from
# its last look, so a load balancer polling every second costs the model server nothing.
READY_CACHE_SECONDS = 5.0
# A database that does not answer (a server down behind a firewall that drops packets, a pool
# whose every connection is busy) is "not ready" after this long, rather than a probe left hanging.
DATABASE_TIMEOUT = 3.0

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
        database, model = await asyncio.gather(_database(), _model())
        cache["checks"] = {"database": database, "model": model}
        cache["at"] = time.monotonic()
    checks = cache["checks"]
    ready = all(value == "ok" for value in checks.values())
    config, store, operator = current.config(), current.store(), _has_token()
    if config.production and not operator:
        # Why it is not ready (error texts, library names) is for operators, not for anyone.
        checks = {name: "ok" if value == "ok" else "error" for name, value in checks.items()}
    answer = {"ready": ready, **checks, "database_kind": store.db.dialect}
    if operator or not config.production:
        answer["replica"] = config.replica
    if operator:  # where it is: a file's path, or a URL (its password left out)
        answer["database_where"] = store.db.where
    return jsonify(answer), 200 if ready else 503


@bp.get("/metrics")
async def metrics_page() -> Response:
    """Prometheus metrics; with CHATAPP_METRICS_TOKEN set, only for `Authorization: Bearer <token>`."""
    if current.config().metrics_token and not _has_token():
        return Response("unauthorized\n", status=401, mimetype="text/plain",
                        headers={"WWW-Authenticate": "Bearer"})
    body, content_type = metrics.exposition(current.config().replica)
    return Response(body, content_type=content_type)


def _has_token() -> bool:
    """The request carries CHATAPP_METRICS_TOKEN (`Authorization: Bearer <token>`)."""
    token = current.config().metrics_token
    if not token:
        return False
    sent = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
    return hmac.compare_digest(sent, token.encode())


async def _database() -> str:
    # Not asyncio.wait_for: it waits for the check it cancels to end, and a cancelled query on a
    # silent connection rolls back and cleans up for as long as the driver's own timeouts (60 s).
    # The check goes on apart (one at a time, so that probes every second do not pile up checks
    # that each hold a pooled connection) and is cut off in the background.
    readiness = current_app.extensions["readiness"]
    check = readiness.get("database_check")
    if check is None or check.done():
        check = readiness["database_check"] = asyncio.ensure_future(current.store().check_writable())
        check.add_done_callback(lambda done: done.cancelled() or done.exception())  # seen: never "not retrieved"
    finished, _ = await asyncio.wait({check}, timeout=DATABASE_TIMEOUT)
    if not finished or check.cancelled():
        check.cancel()
        return f"error: no answer within {DATABASE_TIMEOUT:g} s"
    if (error := check.exception()) is not None:  # any failure means not ready; the reason goes to the operator
        return f"error: {type(error).__name__}: {_without_location(str(error))}"
    return "ok"


def _without_location(reason: str) -> str:
    """A driver's error text without the database's password or file path, should it quote them:
    those are shown to operators only (database_where), never in a reason."""
    location = str(current.config().database)
    if is_postgresql(location):
        hidden = [urlsplit(location).password or ""]
    else:
        path = sqlite_path(location)
        hidden = [str(path.resolve()), str(path)]
    for text in filter(None, hidden):
        reason = reason.replace(text, "***")
    return reason


async def _model() -> str:
    try:
        await current.provider().check()
    except LLMError as error:
        return f"error: {error.kind}: {error.user_message}"
    return "ok"
