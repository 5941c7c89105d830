"""The routes. Thin: validate, call the chat service, pick a page, a fragment, or a stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

from quart import Blueprint, Response, current_app, redirect, render_template, request, stream_with_context, url_for

from . import sse, visitor
from .chat import Turn, start_turn, stream_reply
from .config import Config
from .rendering import StreamStep
from .storage import Conversation, Message, Store
from .validation import InvalidMessage, clean_message
from .web import error_response, is_htmx, request_id

bp = Blueprint("chat", __name__)


def _config() -> Config:
    return current_app.config["CHATAPP"]


def _store() -> Store:
    return current_app.extensions["store"]


@bp.get("/healthz")
async def healthz() -> Response:
    """The process serves."""
    return Response("ok\n", mimetype="text/plain")


@bp.get("/")
async def index() -> Response:
    """The newest conversation of this browser, or a fresh one."""
    newest = await _store().newest_conversation(visitor.owner())
    conversation_id = newest.id if newest else visitor.draft_id()
    return redirect(url_for("chat.show", conversation_id=conversation_id))


@bp.get("/new")
async def new() -> Response:
    """Start another conversation (nothing is stored until its first message)."""
    return redirect(url_for("chat.show", conversation_id=visitor.draft_id(fresh=True)))


@bp.get("/c/<conversation_id>")
async def show(conversation_id: str) -> Response | str:
    """A conversation with its history; finished answers are served from stored HTML."""
    conversation = await _store().conversation(conversation_id, visitor.owner())
    if conversation is None and not visitor.is_draft(conversation_id):
        return await error_response(404)
    messages = await _store().messages(conversation_id) if conversation else []
    return await _page(conversation_id, messages)


@bp.post("/c/<conversation_id>/messages")
async def send(conversation_id: str) -> Response | str:
    """Store the question, then stream the answer (htmx) or answer and redirect (plain form)."""
    form = await request.form
    if not visitor.csrf_ok(form.get("csrf_token")):
        return await error_response(403)
    conversation = await _conversation_for_send(conversation_id)
    if conversation is None:
        return await error_response(404)
    try:
        text = clean_message(form.get("message"), max_chars=_config().max_message_chars)
    except InvalidMessage as invalid:
        return await _invalid(conversation_id, form.get("message") or "", invalid)

    turn = await start_turn(
        _store(), conversation, text, system_prompt=_config().system_prompt, model=_provider_label()
    )
    if is_htmx():
        return _event_stream(turn)
    async for _ in stream_reply(_store(), current_app.extensions["provider"], turn, request_id=request_id()):
        pass
    # Post/Redirect/Get: a reload shows the answer and never sends the question again.
    url = url_for("chat.show", conversation_id=conversation.id, _anchor=f"msg-{turn.assistant.id}")
    return redirect(url, 303)


async def _conversation_for_send(conversation_id: str) -> Conversation | None:
    owner = visitor.owner()
    conversation = await _store().conversation(conversation_id, owner)
    if conversation is None and visitor.is_draft(conversation_id):
        conversation = await _store().create_conversation(conversation_id, owner, title="")
        visitor.draft_id(fresh=True)
    return conversation


async def _invalid(conversation_id: str, typed: str, invalid: InvalidMessage) -> Response:
    """Say what is wrong and give the text back, so nothing typed is lost."""
    if is_htmx():
        return await error_response(invalid.status, invalid.message)
    store = _store()
    messages = await store.messages(conversation_id) if await store.conversation(conversation_id, visitor.owner()) else []
    body = await _page(conversation_id, messages, typed=typed, form_error=invalid.message)
    return Response(body, status=invalid.status, mimetype="text/html")


def _event_stream(turn: Turn) -> Response:
    provider = current_app.extensions["provider"]
    rid = request_id()

    @stream_with_context
    async def events() -> AsyncIterator[bytes]:
        yield sse.frame(await render_template("_turn.html", turn=turn))
        async for item in stream_reply(_store(), provider, turn, request_id=rid):
            if isinstance(item, Message):
                final = await render_template("_message.html", message=item)
                yield sse.frame(sse.partial(f"msg-{item.id}", "outerHTML", final))
            else:
                yield sse.frame(_step_html(turn.assistant.id, item))
        yield sse.close()

    response = Response(events(), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    response.timeout = None  # Quart would cut the stream at 60 s
    return response


def _step_html(message_id: int, step: StreamStep) -> str:
    """The htmx partials for one piece of an answer: new finished blocks, then the raw tail."""
    html = ""
    if step.blocks is not None:
        html += sse.partial(f"msg-{message_id}-blocks", "beforeend", step.blocks)
    if step.replace_tail or step.tail:
        html += sse.text_partial(f"msg-{message_id}-tail", "innerHTML" if step.replace_tail else "beforeend", step.tail)
    return html


def _provider_label() -> str:
    return current_app.extensions["provider"].label


async def _page(conversation_id: str, messages: list[Message], *, typed: str = "", form_error: str | None = None) -> str:
    provider = current_app.extensions["provider"]
    return await render_template(
        "chat.html",
        conversation_id=conversation_id,
        messages=messages,
        csrf_token=visitor.csrf_token(),
        demo=provider.is_demo,
        model_label=provider.label,
        typed=typed,
        form_error=form_error,
        max_chars=_config().max_message_chars,
    )
