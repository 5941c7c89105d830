"""The routes. Thin: validate, call the chat service, pick a page, a fragment, or a stream."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

from quart import Blueprint, Response, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from .. import choices
from . import current, page, streams, visitor
from ..reply import settle_abandoned
from ..errors import Refused
from .ids import message_ids, public_id
from ..storage import AlreadySent, Conversation, ConversationGone, Message, StillWriting
from ..turns import NothingToRedo, Turn, start_edit, start_regeneration, start_turn, title_from
from .forms import clean_message, normalize
from .http import AnyResponse, error_response, is_htmx, read_trusted_form, request_id

bp = Blueprint("chat", __name__)

@bp.get("/")
async def index() -> AnyResponse:
    """The newest conversation of this browser, or a fresh one."""
    newest = await current.store().newest_conversation(visitor.owner())
    conversation_id = newest.id if newest else visitor.draft_id()
    return redirect(url_for("chat.show", conversation_id=conversation_id))


@bp.get("/new")
async def new() -> AnyResponse:
    """Start another conversation (nothing is stored until its first message)."""
    return redirect(url_for("chat.show", conversation_id=visitor.draft_id(fresh=True)))


@bp.get("/c/<conversation_id>")
async def show(conversation_id: str) -> Response | str:
    """A conversation: its newest page of messages, served from stored HTML (no markdown runs)."""
    found, conversation = await _find(conversation_id)
    if not found:
        return await error_response(404)
    before = _before()
    messages, more = (await current.store().page_of_messages(conversation_id, before=before, size=page.PAGE_SIZE)
                      if conversation else ([], False))
    messages = await settle_abandoned(current.store(), messages, silent_for=current.config().silence_limit)
    earlier = page.link_to_earlier(conversation_id, messages, more)
    if before is not None and is_htmx():  # "load earlier": the older page, in place of the link
        return await render_template("_older.html", messages=messages, earlier_link=earlier)
    return await page.chat_page(conversation_id, messages, conversation=conversation, earlier_link=earlier,
                                newest_page=before is None)


def _before() -> int | None:
    """The "load earlier" link's message id, or None; anything but a message id is a 400."""
    before = request.args.get("before")
    if before is None:
        return None
    message_id = message_ids().private(before)
    if message_id is None:
        raise Refused("That link to earlier messages is not valid. Open the conversation again.")
    return message_id


@bp.get("/c/<conversation_id>/messages/<message_id:message_id>")
async def message(conversation_id: str, message_id: int) -> Response | str:
    """One message as a fragment: after a stop, or for an answer a page load found streaming, the
    page fetches it (this waits up to 3 s for it to finish; a busy answer keeps asking)."""
    _, conversation = await _find(conversation_id)
    return await _once_saved(conversation, message_id)


@bp.post("/c/<conversation_id>/messages/<message_id:message_id>/stop")
async def stop(conversation_id: str, message_id: int) -> AnyResponse | str:
    """Stop an answer, whichever process writes it: this one stops it at once, another within a
    second (it reads the request with its heartbeat). The answer so far is kept, as stopped.
    (The page's own Stop also closes its stream, which stops the answer the same way.)"""
    await read_trusted_form()
    _, conversation = await _find(conversation_id)
    if conversation is None:
        return await error_response(404)
    if await current.store().ask_stop(conversation.id, message_id):
        current.quota().stop_answers([message_id])
    if not is_htmx():
        return redirect(url_for("chat.show", conversation_id=conversation.id) + f"#msg-{public_id(message_id)}", 303)
    return await _once_saved(conversation, message_id)


async def _once_saved(conversation: Conversation | None, message_id: int) -> Response | str:
    """The message as a fragment, once it is saved (waiting up to 3 s; a busy answer's fragment
    asks again by itself)."""
    shown = await _visible_message(conversation, message_id)
    for _ in range(30):
        if shown is None or not shown.busy:
            break
        await asyncio.sleep(0.1)
        shown = await _visible_message(conversation, message_id)
    if shown is None or conversation is None:
        return await error_response(404)
    (shown,) = await settle_abandoned(current.store(), [shown], silent_for=current.config().silence_limit)
    newest, _ = await current.store().page_of_messages(conversation.id, before=None, size=2)
    return await render_template("_message.html", message=shown, last=shown.id in page.last_ids(newest), poll=True)


@bp.get("/c/<conversation_id>/messages/<message_id:message_id>.md")
async def markdown(conversation_id: str, message_id: int) -> Response:
    """One message as the Markdown it was written in, for its owner: what an answer's Copy copies
    (fetched when asked for, so that no page carries every answer twice)."""
    _, conversation = await _find(conversation_id)
    shown = await _visible_message(conversation, message_id)
    if shown is None:
        return await error_response(404)
    return Response(shown.content, mimetype="text/markdown")


@bp.post("/c/<conversation_id>/messages/<message_id:message_id>/version")
async def switch_version(conversation_id: str, message_id: int) -> AnyResponse | str:
    """Show the answer written before or after this one for the same question ("2 / 3"): the one
    shown is the one the model sees in the conversation from then on."""
    form = await read_trusted_form()
    _, conversation = await _find(conversation_id)
    step = {"previous": -1, "next": 1}.get(form.get("to", ""))
    if conversation is None:
        return await error_response(404)
    if step is None:
        return await error_response(400, "Choose the previous or the next answer.")
    try:
        shown = await current.store().show_version(conversation.id, message_id, step)
    except StillWriting:
        return await error_response(409, "An answer to this question is still being written. "
                                         "Switch when it has finished.")
    if shown is None:
        return await error_response(404)
    if not is_htmx():
        return redirect(url_for("chat.show", conversation_id=conversation.id) + f"#msg-{public_id(shown.id)}", 303)
    newest, _ = await current.store().page_of_messages(conversation.id, before=None, size=2)
    return await render_template("_message.html", message=shown, last=shown.id in page.last_ids(newest))


async def _visible_message(conversation: Conversation | None, message_id: int) -> Message | None:
    if conversation is None:
        return None
    message = await current.store().message(message_id)
    if message is None or message.conversation_id != conversation.id or message.hidden:
        return None
    return message


@bp.post("/c/<conversation_id>/messages")
async def send(conversation_id: str) -> AnyResponse:
    """Store the question, then stream the answer: as SSE to htmx, as a chunked page without JS."""
    return await _reply(conversation_id, start_turn, needs_text=True)


@bp.post("/c/<conversation_id>/regenerate")
async def regenerate(conversation_id: str) -> AnyResponse:
    """Write the last answer again; the old one is kept, hidden."""
    return await _reply(conversation_id, start_regeneration, needs_text=False)


@bp.post("/c/<conversation_id>/edit")
async def edit(conversation_id: str) -> AnyResponse:
    """Change the last question and ask again; the old question and answer are kept, hidden."""
    return await _reply(conversation_id, start_edit, needs_text=True)


async def _reply(conversation_id: str, start: Callable[..., Awaitable[Turn]], *, needs_text: bool) -> AnyResponse:
    """Checks, then one turn streamed out. Every refusal says why and gives the typed text back."""
    form = await read_trusted_form()
    found, conversation = await _find(conversation_id)
    if not found:
        return await error_response(404)
    owner, store, typed = visitor.owner(), current.store(), normalize(form.get("message"))
    try:
        text = clean_message(form.get("message"), max_chars=current.config().max_message_chars) if needs_text else ""
        if conversation is None and start is not start_turn:
            raise NothingToRedo("There is no finished question to edit." if needs_text
                                else "There is nothing to write again yet.")
        choices.check_model(form, current.models())
        slot = await current.quota().check_send(owner, visitor.limited_address(), store,
                                                     daily_tokens=visitor.daily_tokens())
    except Refused as refused:
        return await _refused(conversation, conversation_id, typed, refused)
    slot.conversation_id = conversation_id  # so that deleting the conversation stops this answer
    try:
        # A draft is stored with its first question, choices included, in the same trip.
        new = conversation is None
        if conversation is None:
            conversation = store.draft(conversation_id, owner, title=title_from(text))
        if changes := choices.changes_from_form(form, conversation, current.models()):
            if not new:
                await store.update_conversation(conversation.id, owner, **changes)
            conversation = dataclasses.replace(conversation, **changes)
        arguments = (text,) if needs_text else ()
        settings = _turn_settings(conversation, form) | ({"new": True} if new else {})
        turn = await start(store, conversation, *arguments, **settings)
    except (AlreadySent, NothingToRedo) as refused:
        slot.release()
        return await (_already_sent(conversation_id) if isinstance(refused, AlreadySent)
                      else _refused(conversation, conversation_id, typed, refused))
    except ConversationGone:  # deleted in another tab just now
        slot.release()
        return await error_response(404)
    except BaseException:  # an error, a 404, or the client leaving: the slot is not kept for ever
        slot.release()
        raise
    slot.message_id = turn.assistant.id
    # From here the answer (reply.stream_reply) holds the slot and gives it back.
    if is_htmx():
        return await streams.event_stream(store, current.provider(), turn, request_id(), slot)
    return await streams.page_stream(store, current.provider(), turn, request_id(), slot)


def _turn_settings(conversation: Conversation, form: MultiDict[str, str]) -> dict[str, object]:
    settings: dict[str, object] = {
        "system_prompt": choices.system_prompt(conversation, current.config()),
        "model": choices.current(conversation, current.models()).model,
        "context_tokens": current.config().context_tokens,
    }
    if "send_token" in form:
        settings["send_token"] = form["send_token"] or None
    return settings


async def _find(conversation_id: str) -> tuple[bool, Conversation | None]:
    """(found, conversation): this browser's conversation, or (True, None) for one of its drafts;
    (False, None) for anything else, including another browser's conversation."""
    conversation = await visitor.own_conversation(conversation_id)
    return conversation is not None or visitor.is_draft(conversation_id), conversation


async def _refused(conversation: Conversation | None, conversation_id: str, typed: str,
                   refused: Refused) -> Response:
    """Say why and give the text back, so nothing typed is lost."""
    if is_htmx():
        response = await error_response(refused.status, refused.message)
    else:
        messages, more = (await current.store().page_of_messages(conversation_id, before=None, size=page.PAGE_SIZE)
                          if conversation else ([], False))
        body = await page.chat_page(conversation_id, messages, conversation=conversation, typed=typed,
                                    form_error=refused.message,
                                    earlier_link=page.link_to_earlier(conversation_id, messages, more))
        response = Response(body, status=refused.status, mimetype="text/html")
    if refused.retry_after:
        response.headers["Retry-After"] = str(refused.retry_after)
    return response


async def _already_sent(conversation_id: str) -> AnyResponse:
    """A form sent twice (a reload of the answer page, a double click): show, don't send again."""
    if is_htmx():  # with a fresh token, so the next message can go out
        response = await error_response(409, "That message was already sent. Reload the page to see its answer.")
        response.set_data(await response.get_data(as_text=True) + page.send_token_partial())
        return response
    return redirect(url_for("chat.show", conversation_id=conversation_id), 303)


