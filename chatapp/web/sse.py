"""The one place that makes Server-Sent Events frames.

Unnamed events carry HTML that htmx's `hx-sse` extension swaps in (`<hx-partial>` tags pick each
target); the named `done` event ends the stream and matches the form's `hx-sse:close`, so the browser
never reconnects and never runs the prompt twice.
"""

from __future__ import annotations

import re

from markupsafe import escape

CLOSE_EVENT = "done"

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def frame(data: str, event: str | None = None) -> bytes:
    """One SSE frame; each line of `data` goes on its own `data:` line, as the format requires."""
    head = f"event: {event}\n" if event else ""
    body = "".join(f"data: {line}\n" for line in _LINE_BREAK.split(data))
    return f"{head}{body}\n".encode()


def partial(target_id: str, swap: str, html: str) -> str:
    """An htmx 4 `<hx-partial>`: swap `html` into the element with id `target_id`."""
    return f'<hx-partial hx-target="#{target_id}" hx-swap="{swap}">{html}</hx-partial>'


def text_partial(target_id: str, swap: str, text: str) -> str:
    """Like `partial`, for plain text (escaped here, so model text can never become markup)."""
    return partial(target_id, swap, str(escape(text)))


def close() -> bytes:
    return frame("", event=CLOSE_EVENT)
