"""The chat page, built in one place: for a conversation as stored, for a form sent back with its
error, and around an answer in progress (the streams write the answer where ANSWER_MARK is)."""

from __future__ import annotations

import secrets

from markupsafe import Markup
from quart import render_template, url_for

from .. import choices, presets
from ..storage import Conversation, Message
from ..turns import CONTINUE_MESSAGE, Turn
from . import current, sse, visitor
from .ids import public_id

# Messages per page: a long conversation opens with the newest ones and a "load earlier" link.
PAGE_SIZE = 50

# Where the answer goes in a page rendered around a reply in progress. Model and user text can never
# produce it: user text is escaped and model HTML is sanitized, which drops comments.
ANSWER_MARK = Markup("<!--chatapp:answer-->")

# What an empty chat offers to ask: short, and showing what the page renders (code, a table, a list).
EXAMPLE_PROMPTS = (
    "Explain Python list comprehensions with an example",
    "Compare TCP and UDP in a table",
    "Give me three tips for writing clear emails",
)


def send_token_field() -> Markup:
    """The form's hidden field with a fresh id for its next submission, so that the same
    submission sent again is recognised (storage.AlreadySent)."""
    return Markup('<input type="hidden" id="send-token" name="send_token" value="{}">').format(
        secrets.token_urlsafe(12))


def send_token_partial() -> str:
    """Gives the form a new send token (htmx swaps it in with the first frame of an answer)."""
    return sse.partial("send-token", "outerHTML", send_token_field())


async def live_page(turn: Turn) -> str:
    """The page around an answer in progress: the newest history, the question, the answer's mark."""
    shown = turn.earlier[-PAGE_SIZE:]
    earlier = link_to_earlier(turn.user.conversation_id, shown, len(turn.earlier) > PAGE_SIZE)
    return await chat_page(turn.user.conversation_id, shown, live=turn, earlier_link=earlier)


def link_to_earlier(conversation_id: str, shown: list[Message], more: bool) -> str | None:
    if not (more and shown):
        return None
    return url_for("chat.show", conversation_id=conversation_id, before=public_id(shown[0].id))


async def chat_page(conversation_id: str, messages: list[Message], *, conversation: Conversation | None = None,
                    typed: str = "", form_error: str | None = None, live: Turn | None = None,
                    earlier_link: str | None = None, newest_page: bool = True) -> str:
    """The whole page: the conversation list, the messages, the composer (with `typed` and
    `form_error` when a form comes back refused), or the page around `live`, an answer in progress."""
    if conversation is None and live is not None:  # the page around an answer: its conversation exists
        conversation = await visitor.own_conversation(conversation_id)
    owner_conversations = await current.store().conversations(visitor.owner())
    return await render_template(
        "chat.html",
        conversation_id=conversation_id,
        conversation=conversation,
        conversations=owner_conversations,
        messages=messages,
        last_ids=last_ids(messages) if newest_page and live is None else set(),
        live=live,
        answer_mark=ANSWER_MARK,
        send_token_field=send_token_field(),
        demo=current.provider().is_demo,
        model_label=current.provider().label,
        typed=typed,
        form_error=form_error,
        person=visitor.person(),
        auth=current.config().auth,
        continue_message=CONTINUE_MESSAGE,
        earlier_link=earlier_link,
        example_prompts=EXAMPLE_PROMPTS,
        presets=presets.PRESETS,
        languages=presets.LANGUAGES,
        models=current.models(),
        chosen=choices.current(conversation, current.models()),
        context_note=choices.context_note(conversation, [*messages, *([live.user] if live else [])], current.config()),
        usage_total=await current.store().tokens_in_conversation(conversation_id) if conversation else 0,
    )


def last_ids(messages: list[Message]) -> set[int]:
    """The newest answer (to regenerate) and the newest question (to edit), when nothing streams."""
    if not messages or any(m.busy for m in messages):
        return set()
    last_user = next((m.id for m in reversed(messages) if m.role == "user"), None)
    last_answer = messages[-1].id if messages[-1].role == "assistant" else None
    return {i for i in (last_user, last_answer) if i is not None}
