"""Writing one reply out as it streams: an SSE stream for htmx, or a chunked HTML page without JS.

Both consume the same chat.stream_reply events, so saving, errors and disconnects behave the same.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from markupsafe import Markup, escape
from quart import Response, render_template, stream_with_context

from . import sse
from .chat import Turn, stream_reply
from .llm import Provider
from .quota import StreamSlot
from .rendering import StreamStep
from .storage import Store

# Where the answer goes in a page rendered around a reply in progress. Model and user text can never
# produce it: user text is escaped and model HTML is sanitized, which drops comments.
ANSWER_MARK = Markup("<!--chatapp:answer-->")

# Renders the page around an answer in progress, with ANSWER_MARK where the answer goes.
PageRenderer = Callable[[Turn], Coroutine[Any, Any, str]]


def new_send_token() -> str:
    """A fresh id for the next form submission, so a re-sent form is recognised (storage.AlreadySent)."""
    return secrets.token_urlsafe(12)


def event_stream(store: Store, provider: Provider, turn: Turn, request_id: str, slot: StreamSlot,
                 render_page: PageRenderer | None = None) -> Response:  # render_page: as page_stream's
    """htmx: the two bubbles, a frame per piece of text, the final HTML, then the close event."""

    @stream_with_context
    async def events() -> AsyncIterator[bytes]:
        async for item in stream_reply(store, provider, turn, request_id=request_id, slot=slot):
            if isinstance(item, StreamStep):
                yield sse.frame(_step_partials(turn.assistant.id, item))
            elif item.busy:
                yield sse.frame(await render_template("_turn.html", turn=turn, send_token=new_send_token()))
            else:
                final = await render_template("_message.html", message=item)
                yield sse.frame(sse.partial(f"msg-{item.id}", "outerHTML", final))
        yield sse.close()

    return _streaming(Response(events(), mimetype="text/event-stream"))


def _step_partials(message_id: int, step: StreamStep) -> str:
    """New finished blocks are appended as HTML; the unfinished tail travels as escaped text."""
    html = ""
    if step.blocks is not None:
        html += sse.partial(f"msg-{message_id}-blocks", "beforeend", step.blocks)
    if step.replace_tail or step.tail:
        swap = "innerHTML" if step.replace_tail else "beforeend"
        html += sse.text_partial(f"msg-{message_id}-tail", swap, step.tail)
    return html


def page_stream(store: Store, provider: Provider, turn: Turn, request_id: str, slot: StreamSlot,
                render_page: PageRenderer) -> Response:
    """Without JavaScript: the page, streamed as chunked HTML while the answer is written.

    Nothing can be changed once sent, so the draft is built to be superseded by CSS alone: each piece
    of raw text is its own `.raw` span, hidden once a rendered `.block` follows it, and the whole
    draft is hidden once the finished message (aria-busy="false") follows it.
    """

    @stream_with_context
    async def chunks() -> AsyncIterator[bytes]:
        tail, final = "", None
        async for item in stream_reply(store, provider, turn, request_id=request_id, slot=slot):
            if isinstance(item, StreamStep):
                yield _draft_chunk(item).encode()
            elif item.busy:
                head, tail = (await render_page(turn)).split(ANSWER_MARK, 1)
                yield head.encode()
            else:
                final = item
        yield b"</div></div>"  # closes the draft opened by the page template
        if final is not None:
            yield (await render_template("_message.html", message=final)).encode()
        yield tail.encode()

    return _streaming(Response(chunks(), mimetype="text/html"))


def _draft_chunk(step: StreamStep) -> str:
    html = f'<div class="block">{step.blocks}</div>' if step.blocks is not None else ""
    if step.tail:
        html += f'<span class="raw">{escape(step.tail)}</span>'
    return html


def _streaming(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each piece on at once
    response.timeout = None  # Quart would cut the stream at 60 s
    return response
