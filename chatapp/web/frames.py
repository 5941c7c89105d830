"""The templates of a stream's frames (the new bubbles, the finished answer, its reasoning), rendered
in a Jinja environment of their own: synchronous, and with only the globals and filters they use.

Quart's environment is asynchronous, and each of its renders copies all of its globals (request,
session, config, g, …) into the new context and awaits every macro call. A frame's template
awaits nothing and takes what it shows as arguments (its macros are imported without context),
so it needs neither: a stream start renders three or four frames, and the copying and awaiting
were a large share of their cost (the CPU per stream start, bench/ttft_floor.py). The same
template files; pages keep Quart's render_template, with the context processors and signals that
frames do without.
"""

from __future__ import annotations

from jinja2 import Environment
from quart import Quart, current_app

from . import visitor

EXTENSION = "frames"


def install(app: Quart) -> None:
    """After the app's own filters are set (http.install): the frames use the same ones."""
    pages = app.jinja_env
    env = Environment(loader=pages.loader, autoescape=pages.autoescape, auto_reload=pages.auto_reload)
    env.globals.clear()  # Jinja's defaults (range, lipsum, …): no frame uses them
    env.globals.update(url_for=app.url_for, form_token=visitor.csrf_token)
    env.filters.update(public=pages.filters["public"], thought_for=pages.filters["thought_for"])
    app.extensions[EXTENSION] = env


def render(name: str, **context: object) -> str:
    """A frame's template, rendered with `context` alone."""
    return current_app.extensions[EXTENSION].get_template(name).render(**context)
