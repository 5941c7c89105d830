"""Writing one reply out as it streams: an SSE stream for htmx, or a chunked HTML page without JS.

Both consume the same reply.stream_reply events, so saving, errors and disconnects behave the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterator

from markupsafe import Markup, escape
from quart import Response
from quart.ctx import AppContext, RequestContext
from quart.globals import _cv_app, _cv_request

from . import frames, page, sse
from ..reply import UNEXPECTED, DoneThinking, Event, Notice, ThoughtStep, stream_reply
from ..choices import left_out_note
from .ids import public_id
from ..turns import Turn, title_from
from ..llm import Provider
from ..quota import StreamSlot
from ..rendering import Shown, StreamStep
from ..storage import ERROR, Message, Store

log = logging.getLogger(__name__)

# Removes the regenerate and edit controls: while an answer streams, nothing may be redone.
CLEAR_CONTROLS = '<hx-partial hx-target="#messages .redo" hx-swap="delete"></hx-partial>'

async def event_stream(store: Store, provider: Provider, turn: Turn, request_id: str, slot: StreamSlot) -> Response:
    """htmx: the two bubbles, a frame per piece of text, the final HTML, then the close event."""
    replies = await _started(store, provider, turn, request_id, slot)
    answer = f"msg-{public_id(turn.assistant.id)}"  # the answer's element id, made once
    request_context = _request_context()

    async def events() -> AsyncIterator[bytes]:
        with _within(request_context):
            async for item in replies:
                if isinstance(item, StreamStep):
                    yield sse.frame(_step_partials(answer, item))
                elif isinstance(item, ThoughtStep):
                    yield sse.frame(_thought_partials(turn, answer, item))
                # No frame is kept in a local: this generator's frame lives as long as the stream.
                elif isinstance(item, DoneThinking):
                    yield sse.frame(sse.partial(f"{answer}-thinking", "outerHTML", frames.render(
                        "_thinking.html", message_id=turn.assistant.id, html=item.html, seconds=item.seconds)))
                elif isinstance(item, Notice):
                    yield sse.frame(sse.text_partial(f"{answer}-notice", "innerHTML", item.text))
                elif item.busy:
                    yield sse.frame(_opening(turn))
                else:
                    yield sse.frame(_closing(turn, item))
            yield sse.close()

    return _streaming(Response(events(), mimetype="text/event-stream"))


def _opening(turn: Turn) -> str:
    """The first frame: the new bubbles (swapped into #messages), the replaced messages gone, the
    old controls cleared (only the newest messages get regenerate and edit), a new send token,
    and the note on older turns left out of the context. The last reader of turn.earlier."""
    bubbles = frames.render("_turn.html", turn=turn)
    removed = "".join(sse.partial(f"msg-{public_id(message_id)}", "delete", "") for message_id in turn.replaced)
    note = sse.text_partial("context-note", "innerHTML", left_out_note(turn.left_out))
    listed = ""
    if turn.new_question and not turn.earlier and not turn.replaced:  # a new conversation: list it
        entry = frames.render("_conversation_entry.html", conversation_id=turn.user.conversation_id,
                              title=title_from(turn.user.content))
        listed = sse.partial("no-conversations", "delete", "") + sse.partial("conversation-list", "afterbegin", entry)
    _forget_earlier(turn)
    return bubbles + removed + CLEAR_CONTROLS + page.send_token_partial() + note + listed


def _closing(turn: Turn, answer: Message) -> str:
    """The last frame: the finished answer, and the question's edit control in its actions (the
    question is the newest again; the opening frame cleared the controls of those before it). The
    question as the page shows it, without rendering it whole again."""
    final = frames.render("_message.html", message=answer, last=True)
    edit = frames.render("_edit_control.html", message=turn.user)
    return (sse.partial(f"msg-{public_id(answer.id)}", "outerHTML", final)
            + sse.partial(f"msg-{public_id(turn.user.id)}-actions", "innerHTML", edit))


async def _started(store: Store, provider: Provider, turn: Turn, request_id: str,
                   slot: StreamSlot) -> AsyncGenerator[Event, None]:
    """reply.stream_reply's events, already run to the first before the response starts: that sends
    the model its request, so the model works while the page's first frame is made and written.
    They always end in a finished message: if even saving the answer failed (the database is
    gone), the person still gets an error and the indicator still stops. If the response then
    never runs (the client left at once), closing the stream saves the answer as stopped and ends
    the model's stream. (One generator around stream_reply's: each layer is kept as long as the
    stream, and passes every event on.)"""
    items = stream_reply(store, provider, turn, request_id=request_id, slot=slot)
    closing: asyncio.Future | None = None

    def failed() -> Message:
        """Said from inside the `except` that caught why."""
        log.exception("the answer could not be saved request_id=%s message_id=%s", request_id, turn.assistant.id)
        return dataclasses.replace(turn.assistant, status=ERROR, html=Markup(""),
                                   error=f"{UNEXPECTED} (request id {request_id})")

    async def end() -> None:
        try:
            await items.aclose()  # saves the answer, if it was not saved yet
        except Exception:  # the client is gone: nobody to tell
            failed()

    def close() -> asyncio.Future:
        """Ends the stream once, whoever asks first: the response ending, or the request ending
        without it (a client gone while its response was blocked can mean both at once)."""
        nonlocal closing
        if closing is None:
            closing = asyncio.ensure_future(end())
        return closing

    try:
        first: Event = await anext(items)
    except Exception:
        first = failed()
    slot.settle_if_unused(close)

    async def from_the_first() -> AsyncGenerator[Event, None]:
        try:
            yield first
            async for item in items:
                yield item
        except Exception:  # from the stream: at a yield, only the response's end (GeneratorExit) comes in
            yield failed()
        finally:
            await close()

    return from_the_first()


def _forget_earlier(turn: Turn) -> None:
    """The first frame was the last reader of the conversation before this turn (every visible
    message, its text and its HTML): not kept while the answer streams (memory per open stream,
    bench/stream_memory.py). What goes to the model is turn.history, apart."""
    turn.earlier.clear()


def _step_partials(target: str, step: StreamStep) -> str:
    """New finished blocks are appended as HTML; the unfinished tail is shown rendered
    (rendering.Shown): a new render replaces it, and text that follows goes in as escaped text at
    its end point, the `…-tail-end` span. `target` is the answer's element id, or its reasoning's
    (`…-thinking`)."""
    html = ""
    if step.blocks is not None:
        html += sse.partial(f"{target}-blocks", "beforeend", step.blocks)
    if step.shown.head is not None:
        html += sse.partial(f"{target}-tail", "innerHTML", _tail_html(target, step.shown))
    elif step.shown.text:
        html += sse.text_partial(f"{target}-tail-end", "beforeend", step.shown.text)
    return html


def _tail_html(target: str, shown: Shown) -> Markup:
    """A render of the tail, with the span that the text after it goes into (its only id)."""
    return Markup(f'{shown.head or ""}<span id="{target}-tail-end" class="end">{escape(shown.text)}</span>'
                  f'{shown.foot}')


def _thought_partials(turn: Turn, answer: str, thought: ThoughtStep) -> str:
    """A piece of reasoning. The first opens the reasoning block in place of its placeholder, and
    tells screen readers, once, that the model is thinking (the bubble stays busy meanwhile)."""
    if not thought.first:
        return _step_partials(f"{answer}-thinking", thought.step)
    # The block comes with its first piece in it: a partial may not target what an earlier partial
    # of the same frame has only just put in the page.
    opened = frames.render("_thinking.html", message_id=turn.assistant.id, live=True,
                           blocks=thought.step.blocks or "",
                           text=_tail_html(f"{answer}-thinking", thought.step.shown))
    return (sse.partial(f"{answer}-thinking", "outerHTML", opened)
            + sse.text_partial(f"{answer}-status", "innerHTML", "Thinking…"))


async def page_stream(store: Store, provider: Provider, turn: Turn, request_id: str, slot: StreamSlot) -> Response:
    """Without JavaScript: the page, streamed as chunked HTML while the answer is written.

    Nothing can be changed once sent, so the draft is built to be superseded by CSS alone: each
    render of the unfinished tail is its own `.live` piece (see _Draft), hidden once another piece
    or a rendered `.block` follows it, and the whole draft is hidden once the finished message
    (aria-busy="false") follows it.
    """

    replies = await _started(store, provider, turn, request_id, slot)
    request_context = _request_context()

    async def chunks() -> AsyncIterator[bytes]:
        with _within(request_context):
            tail, final, thinking = "", None, False
            answer, reasoning = _Draft(), _Draft()
            async for item in replies:
                if isinstance(item, StreamStep):
                    yield answer.chunk(item).encode()
                elif isinstance(item, ThoughtStep):
                    if item.first:
                        thinking = True
                        yield THINKING_DRAFT_OPEN.encode()
                    yield reasoning.chunk(item.step).encode()
                elif isinstance(item, DoneThinking):
                    thinking = False
                    yield (reasoning.close() + THINKING_DRAFT_CLOSE).encode()
                elif isinstance(item, Notice):
                    yield f'<p class="notice">{escape(item.text)}</p>'.encode()
                elif item.busy:
                    head, tail = (await page.live_page(turn)).split(page.ANSWER_MARK, 1)
                    _forget_earlier(turn)
                    yield head.encode()
                    del head  # the page so far (the whole conversation shown) is not kept while the answer streams
                else:
                    final = item
            if thinking:  # it ended while the model still thought
                yield (reasoning.close() + THINKING_DRAFT_CLOSE).encode()
            yield (answer.close() + "</div></div>").encode()  # closes the draft opened by the page template
            if final is not None:
                yield frames.render("_message.html", message=final, last=True).encode()
            yield tail.encode()

    return _streaming(Response(chunks(), mimetype="text/html"))


# The reasoning in the draft: open while the model thinks; once the answer's text follows it, CSS
# folds its text away (the finished message, which replaces the draft, has it closed).
THINKING_DRAFT_OPEN = ('<details class="thinking live" open><summary>Thinking…</summary>'
                       '<div class="thinking-text markdown"><div class="thinking-inner">')
THINKING_DRAFT_CLOSE = "</div></div></details>"


class _Draft:
    """One text's pieces in the no-JS draft. Each render of the tail is written as a `.live` piece
    left open at its end point (a `.end` span), so the text that follows lands inside it: the
    page's parser keeps the elements open. The next render or block first closes it with its foot."""

    def __init__(self) -> None:
        self._foot = ""

    def chunk(self, step: StreamStep) -> str:
        shown = step.shown
        html = self.close() if step.blocks is not None or shown.head is not None else ""
        if step.blocks is not None:
            html += f'<div class="block">{step.blocks}</div>'
        if shown.head is not None:
            html += f'<div class="live">{shown.head}<span class="end">'
            self._foot = f"</span>{shown.foot}</div>"
        return html + str(escape(shown.text))

    def close(self) -> str:
        """Closes the open piece, if any (before the draft's own end)."""
        foot, self._foot = self._foot, ""
        return foot


def _request_context() -> tuple[AppContext, RequestContext]:
    return _cv_app.get(), _cv_request.get()


@contextlib.contextmanager
def _within(contexts: tuple[AppContext, RequestContext]) -> Iterator[None]:
    """The request's own contexts again while its response streams (templates use url_for and the
    session's form token). Quart pops them when the view returns, before the body is sent. Its
    stream_with_context pushes a copy instead, which binds a new URL adapter, matches the route
    again, runs the request's teardown a second time and wraps the stream in one more generator,
    kept as long as the stream: a share of every stream start's CPU and memory, for nothing here
    (the request was read, its session saved, and the app has no teardown of its own)."""
    app_token, request_token = _cv_app.set(contexts[0]), _cv_request.set(contexts[1])
    try:
        yield
    finally:
        # A stream closed by the loop's finalizer runs in another context: nothing of ours to undo.
        with contextlib.suppress(ValueError):
            _cv_request.reset(request_token)
            _cv_app.reset(app_token)


def _streaming(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each piece on at once
    response.timeout = None  # Quart would cut the stream at 60 s
    return response
