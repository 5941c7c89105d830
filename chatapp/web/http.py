"""What every response gets: a request id, security headers, and friendly error pages."""

from __future__ import annotations

import asyncio
import logging
import secrets

from quart import Quart, Response, current_app, g, render_template, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from .. import logs, metrics
from . import visitor
from ..errors import Refused
from ..reply import thought_for
from .ids import MessageIdConverter, public_ids_of
from .forms import InvalidMessage, parse_form

log = logging.getLogger(__name__)

# What a route may hand back: Quart's Response, or quart.redirect's, which Quart types as werkzeug's
# Response (at run time it is the app's response class all the same).
AnyResponse = Response | WerkzeugResponse

# Everything comes from the app itself; no inline script or style, no eval, no framing.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# What a browser heeds on an event stream, which it never shows as a document: the others govern
# documents (what they load, frame, open or refer to). An open stream's headers are kept as long as
# it lasts, by Quart and Hypercorn, and each is validated as it goes out.
EVENT_STREAM_HEADERS = ("X-Content-Type-Options", "Strict-Transport-Security")

FRIENDLY = {
    400: "That request could not be understood. Please reload the page and try again.",
    403: "This form has expired or did not come from this site. Reload the page and send your message again.",
    404: "There is nothing here. The conversation may have been deleted, or it is not yours.",
    405: "That action is not allowed here.",
    409: "That was already done.",
    413: "That was too large to send. Shorten your message and try again.",
    429: "Too many requests. Please wait a moment and try again.",
    500: "Something went wrong on our side. Please try again.",
}


def request_id() -> str:
    return g.get("request_id", "-")


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


async def error_response(status: int, message: str | None = None) -> Response:
    """A page for a plain request, a fragment for htmx; always written for a person, with the request id."""
    message = message or FRIENDLY.get(status, FRIENDLY[500])
    template = "_error.html" if is_htmx() else "error.html"
    body = await render_template(template, status=status, message=message)
    return Response(body, status=status, mimetype="text/html")


async def read_form() -> MultiDict[str, str]:
    """The request's url-encoded form, strictly decoded (raises forms.InvalidMessage).

    The body is awaited directly under asyncio.timeout rather than through Quart's get_data(): on
    Python 3.11 that uses asyncio.wait_for, which can swallow the cancellation that a client leaving
    just as its body arrives sends, and the answer would then be generated for no one.
    """
    try:
        async with asyncio.timeout(current_app.config["BODY_TIMEOUT"]):
            body = await request.body
    except TimeoutError:
        raise InvalidMessage("The request took too long to arrive. Please try again.", status=408) from None
    return parse_form(body, request.mimetype)


async def read_trusted_form() -> MultiDict[str, str]:
    """The form of a state-changing request, only if it came from our own page (else Refused, 403)."""
    form = await read_form()
    if not visitor.request_trusted(form.get("csrf_token")):
        raise Refused(FRIENDLY[403], status=403)
    return form


def install(app: Quart, *, https: bool) -> None:
    # Message ids as people see them (ids.py): in routes, and in templates as `id|public`.
    app.url_map.converters["message_id"] = MessageIdConverter
    app.jinja_env.filters["public"] = public_ids_of(app)
    app.jinja_env.filters["thought_for"] = thought_for
    # For macros imported without context (templates/_partials.html), which Jinja then builds once.
    app.jinja_env.globals["form_token"] = visitor.csrf_token
    headers = dict(SECURITY_HEADERS)
    if https:  # only when served over HTTPS: HSTS on plain HTTP would lock a site out of itself
        headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    stream_headers = {name: value for name, value in headers.items() if name in EVENT_STREAM_HEADERS}

    @app.before_request
    async def _assign_request_id() -> None:
        g.request_id = secrets.token_hex(6)
        logs.request_id_var.set(g.request_id)

    @app.context_processor
    async def _request_context() -> dict[str, str]:
        return {"request_id": request_id(), "csrf_token": visitor.csrf_token(),
                "theme": request.cookies.get("theme", "system")}

    @app.after_request
    async def _headers(response: Response) -> Response:
        response.headers.update(stream_headers if response.mimetype == "text/event-stream" else headers)
        response.headers["X-Request-ID"] = request_id()
        route = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.REQUESTS.labels(route, str(response.status_code)).inc()
        if request.path.startswith("/static/"):
            return response
        response.headers.setdefault("Cache-Control", "no-store")
        response.vary.add("HX-Request")
        return response

    @app.errorhandler(Refused)
    async def _refused(refused: Refused) -> Response:
        response = await error_response(refused.status, refused.message)
        if refused.retry_after:
            response.headers["Retry-After"] = str(refused.retry_after)
        return response

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        response = await error_response(error.code or 500)
        for name, value in error.get_headers():
            if name in ("Allow", "Retry-After"):
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    async def _crash(error: Exception) -> Response:
        log.exception("unhandled error request_id=%s path=%s", request_id(), request.path)
        return await error_response(500)
