"""The colour theme: light, dark, or the system's, kept in a cookie so that it works without JavaScript."""

from __future__ import annotations

import re

from quart import Blueprint, current_app, redirect

from .http import AnyResponse, read_trusted_form

bp = Blueprint("theme", __name__)

THEMES = ("system", "light", "dark")
# A path of this site and nothing else: unreserved and sub-delimiter characters, %-escapes, `/`,
# `:` and `@` (RFC 3986 pchar). No `//` or `/\` at the start (another host, to a browser), no
# backslash, space or control character (which browsers drop or turn into `/`), no query.
_SAME_SITE_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")


@bp.post("/theme")
async def set_theme() -> AnyResponse:
    """Light, dark, or the system's: a cookie, so the choice works without JavaScript."""
    form = await read_trusted_form()
    given = form.get("theme")
    theme = given if given is not None and given in THEMES else "system"
    response = redirect(same_site_path(form.get("back")), 303)
    response.set_cookie("theme", theme, max_age=365 * 86400, httponly=True, samesite="Lax",
                        secure=current_app.config["SESSION_COOKIE_SECURE"])
    return response


def same_site_path(given: str | None) -> str:
    """`given` if it is a plain path of this site, else "/": never a redirect to elsewhere."""
    return given if given and _SAME_SITE_PATH.fullmatch(given) else "/"
