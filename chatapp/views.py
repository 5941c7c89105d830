"""The routes. Thin: validate, call the chat service, pick a page, a fragment, or a stream."""

from __future__ import annotations

from quart import Blueprint, Response, current_app, redirect, render_template, request, url_for

from . import streams, visitor
from .chat import Turn, settle_abandoned, start_turn
from .config import Config
from .llm import Provider
from .storage import STOPPED, AlreadySent, Conversation, Message, Store
from .errors import Refused
from .validation import clean_message, normalize
from .web import error_response, is_htmx, read_trusted_form, request_id

bp = Blueprint("chat", __name__)


def _config() -> Config:
    return current_app.config["CHATAPP"]


def _store() -> Store:
    return current_app.extensions["store"]


def _provider() -> Provider:
    return current_app.extensions["provider"]


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
    found, conversation = await _find(conversation_id)
    if not found:
        return await error_response(404)
    messages = await _store().messages(conversation_id) if conversation else []
    return await _page(conversation_id, await settle_abandoned(_store(), messages, silent_for=_config().silence_limit))


@bp.post("/c/<conversation_id>/messages")
async def send(conversation_id: str) -> Response | str:
    """Store the question, then stream the answer: as SSE to htmx, as a chunked page without JS."""
    try:
        form = await read_trusted_form()
    except Refused as refused:
        return await error_response(refused.status, refused.message)
    owner, store = visitor.owner(), _store()
    found, conversation = await _find(conversation_id)
    if not found:
        return await error_response(404)
    try:
        text = clean_message(form.get("message"), max_chars=_config().max_message_chars)
        slot = await current_app.extensions["quota"].check_send(owner, visitor.address(), store)
    except Refused as refused:
        return await _refused(conversation, conversation_id, normalize(form.get("message")), refused)
    if conversation is None:
        conversation = await store.create_conversation(conversation_id, owner, title="")
        visitor.draft_used(conversation_id)
    if conversation is None:  # the id was taken by someone else meanwhile (128 random bits: never)
        slot.release()
        return await error_response(404)
    try:
        turn = await start_turn(store, conversation, text, system_prompt=_config().system_prompt,
                                model=_provider().label, send_token=form.get("send_token") or None)
    except AlreadySent:
        slot.release()
        return await _already_sent(conversation)
    slot.settle_if_unused(lambda: store.finish_message(turn.assistant.id, content="", html="", status=STOPPED))
    write = streams.event_stream if is_htmx() else streams.page_stream
    return write(store, _provider(), turn, request_id(), slot, _live_page)


async def _find(conversation_id: str) -> tuple[bool, Conversation | None]:
    """(found, conversation): this browser's conversation, or (True, None) for one of its drafts;
    (False, None) for anything else, including another browser's conversation."""
    conversation = await _store().conversation(conversation_id, visitor.owner())
    return conversation is not None or visitor.is_draft(conversation_id), conversation


async def _refused(conversation: Conversation | None, conversation_id: str, typed: str,
                   refused: Refused) -> Response:
    """Say why and give the text back, so nothing typed is lost."""
    if is_htmx():
        response = await error_response(refused.status, refused.message)
    else:
        messages = await _store().messages(conversation_id) if conversation else []
        body = await _page(conversation_id, messages, typed=typed, form_error=refused.message)
        response = Response(body, status=refused.status, mimetype="text/html")
    if refused.retry_after:
        response.headers["Retry-After"] = str(refused.retry_after)
    return response


async def _already_sent(conversation: Conversation) -> Response:
    """A form sent twice (a reload of the answer page, a double click): show, don't send again."""
    if is_htmx():  # with a fresh token, so the next message can go out
        response = await error_response(409, "That message was already sent. Reload the page to see its answer.")
        response.set_data(await response.get_data(as_text=True) + streams.send_token_partial())
        return response
    return redirect(url_for("chat.show", conversation_id=conversation.id), 303)


async def _live_page(turn: Turn) -> str:
    """The page around an answer in progress: history, the question, and the answer's mark."""
    return await _page(turn.user.conversation_id, turn.earlier, live=turn)


async def _page(conversation_id: str, messages: list[Message], *, typed: str = "",
                form_error: str | None = None, live: Turn | None = None) -> str:
    return await render_template(
        "chat.html",
        conversation_id=conversation_id,
        messages=messages,
        live=live,
        answer_mark=streams.ANSWER_MARK,
        csrf_token=visitor.csrf_token(),
        send_token_field=streams.send_token_field(),
        demo=_provider().is_demo,
        model_label=_provider().label,
        typed=typed,
        form_error=form_error,
        signed_in=bool(_config().password),
    )
