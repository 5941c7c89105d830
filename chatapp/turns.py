"""Starting a turn: a new question, a regenerated answer, or an edited last question.

Each stores what it must before the model is called, in one transaction (the replaced messages
hidden, the question, and an empty answer in state `streaming`), and works out the history to
send: the raw markdown of the visible conversation. A replaced answer or question is hidden, not
deleted; a regenerated answer stays one of its question's versions, which the person switches
between.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .history import build_history, fit_history
from .errors import Refused
from .storage import Conversation, Message, Store


# What the Continue control sends, as a question of its own, after an answer cut at the length
# limit: every server understands it, where continuing the last message itself needs a server that
# takes a partial assistant message.
CONTINUE_MESSAGE = "Please continue exactly where you stopped, without repeating anything."


class NothingToRedo(Refused):
    status = 409


@dataclass(frozen=True)
class Turn:
    """A question stored and its answer waiting to be written."""

    earlier: list[Message]  # the visible conversation before this turn
    user: Message
    assistant: Message
    history: list[dict[str, str]]  # what goes to the model
    new_question: bool = True  # False when an answer is regenerated for the same question
    replaced: list[int] = field(default_factory=list)  # ids hidden by this turn
    left_out: int = 0  # older messages left out of the history to fit the context budget
    owner: str = ""  # whose usage the answer's tokens are


async def start_turn(store: Store, conversation: Conversation, text: str, *, system_prompt: str, model: str,
                     context_tokens: int = 0, send_token: str | None = None, new: bool = False) -> Turn:
    """A new question; `new`: the conversation is a draft (Store.draft), stored with it. Raises
    storage.AlreadySent if this form submission was stored before, storage.ConversationGone if the
    conversation was deleted (or a draft's id is another owner's)."""
    earlier, user, answer = await store.ask(conversation.id, model=model, question=text, send_token=send_token,
                                            new=conversation if new else None)
    return _turn(conversation, earlier, user, answer, system_prompt, context_tokens)


async def start_regeneration(store: Store, conversation: Conversation, *, system_prompt: str, model: str,
                             context_tokens: int = 0) -> Turn:
    """A new answer to the last question, as another version of it: the old answer is kept, hidden,
    and the person can switch back to it."""
    messages = await store.messages(conversation.id)
    if len(messages) < 2 or messages[-1].role != "assistant" or messages[-1].busy:
        raise NothingToRedo("There is no finished answer to write again.")
    old_answer = messages[-1]
    _, answer = await store.add_turn(conversation.id, model=model, replacing=(old_answer.id,),
                                     version_of=old_answer.id)
    turn = _turn(conversation, messages[:-2], messages[-2], answer, system_prompt, context_tokens)
    return replace(turn, new_question=False, replaced=[old_answer.id])


async def start_edit(store: Store, conversation: Conversation, text: str, *, system_prompt: str, model: str,
                     context_tokens: int = 0) -> Turn:
    """The last question, changed and sent again; the old question and its answer are kept, hidden."""
    messages = await store.messages(conversation.id)
    last_question = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), None)
    if last_question is None or any(m.busy for m in messages[last_question:]):
        raise NothingToRedo("There is no finished question to edit.")
    replaced = [m.id for m in messages[last_question:]]
    user, answer = await store.add_turn(conversation.id, model=model, question=text, replacing=tuple(replaced))
    turn = _turn(conversation, messages[:last_question], user, answer, system_prompt, context_tokens)
    return replace(turn, replaced=replaced)


def _turn(conversation: Conversation, earlier: list[Message], user: Message, answer: Message,
          system_prompt: str, context_tokens: int) -> Turn:
    fitted = fit_history(build_history(system_prompt, [*earlier, user]), context_tokens)
    return Turn(earlier, user, answer, fitted.messages, left_out=fitted.left_out, owner=conversation.owner)


def title_from(question: str, limit: int = 60) -> str:
    """A conversation's first title: its first question's first line, shortened at a word."""
    line = next((part.strip() for part in question.splitlines() if part.strip()), "New chat")
    if len(line) <= limit:
        return line
    cut = line[:limit]
    if line[limit] != " " and " " in cut:  # a word runs past the limit: it is left out whole
        cut = cut.rsplit(" ", 1)[0]
    return (cut.rstrip(",.;: ") or line[:limit]) + "…"
