"""Managing conversations: settings and title, export, delete (with a confirmation page)."""

from __future__ import annotations

import functools

from quart import Blueprint, Response, redirect, render_template, url_for

from . import current, visitor
from .. import export
from .ids import message_ids
from .forms import normalize
from .http import AnyResponse, error_response, read_trusted_form

bp = Blueprint("conversations", __name__)

EXPORTS = {"md": ("text/markdown", export.markdown_parts), "json": ("application/json", export.json_parts)}


@bp.post("/c/<conversation_id>/settings")
async def update(conversation_id: str) -> AnyResponse:
    """Rename the conversation, or give it instructions of its own."""
    form = await read_trusted_form()
    conversation = await visitor.own_conversation(conversation_id)
    if conversation is None:
        return await error_response(404)
    # A blank title keeps the one it has (a new chat's bar shows the field empty until a reload).
    title = " ".join(normalize(form.get("title")).split())[:200] or conversation.title or "New chat"
    prompt = normalize(form.get("system_prompt")).strip()[:4000] or None
    await current.store().update_conversation(conversation_id, visitor.owner(), title=title, system_prompt=prompt)
    return redirect(url_for("chat.show", conversation_id=conversation_id), 303)


@bp.get("/c/<conversation_id>/export.<extension>")
async def export_file(conversation_id: str, extension: str) -> Response:
    """The whole conversation (raw markdown, never HTML) as a download."""
    conversation = await visitor.own_conversation(conversation_id)
    if conversation is None or extension not in EXPORTS:
        return await error_response(404)
    mimetype, parts = EXPORTS[extension]
    if extension == "json":  # message ids as the pages show them
        parts = functools.partial(export.json_parts, shown_id=message_ids().public)
    messages = await export.read_messages(current.store(), conversation_id)
    filename = export.filename(conversation, extension)
    # Streamed in chunks of a few messages. Quart's response timeout stays: a download that takes
    # longer than RESPONSE_TIMEOUT is cut, as it was when the body was sent in one piece.
    return Response(export.encoded(parts(conversation, messages)), mimetype=mimetype,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@bp.get("/c/<conversation_id>/delete")
async def confirm_delete(conversation_id: str) -> Response | str:
    """Are you sure? (A page, so deleting works without JavaScript too.)"""
    conversation = await visitor.own_conversation(conversation_id)
    if conversation is None:
        return await error_response(404)
    return await render_template("delete.html", conversation=conversation)


@bp.post("/c/<conversation_id>/delete")
async def delete(conversation_id: str) -> AnyResponse:
    """Delete it, with its messages, for good."""
    await read_trusted_form()
    if await visitor.own_conversation(conversation_id) is None:
        return await error_response(404)
    # Its answers being written stop first, and are saved with their tokens counted: deleting
    # must not free a place among the owner's answers, nor give back a spent budget.
    await current.quota().stop_answers_in(conversation_id, visitor.owner())
    if not await current.store().delete_conversation(conversation_id, visitor.owner()):
        return await error_response(404)
    visitor.forget_draft(conversation_id)
    return redirect(url_for("chat.index"), 303)
