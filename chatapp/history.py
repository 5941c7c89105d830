"""What the model is sent of a conversation: its history, fitted into the model's context.

The fit is an estimate, not a tokenizer: about four characters a token, and a few tokens more for
each message's role and separators. Whole turns are left out, oldest first.
"""

from __future__ import annotations

from dataclasses import dataclass

from .storage import STREAMING, Message

MESSAGE_OVERHEAD = 4  # tokens each message costs beyond its text (role, separators)


def estimate_tokens(text: str) -> int:
    """About four characters a token: 0 for empty text, at least 1 otherwise."""
    return max(1, len(text) // 4) if text else 0


def estimate_messages(messages: list[dict[str, str]]) -> int:
    """The estimate for a whole history, as fit_history counts it."""
    return sum(estimate_tokens(m["content"]) + MESSAGE_OVERHEAD for m in messages)


@dataclass(frozen=True)
class Fitted:
    messages: list[dict[str, str]]
    left_out: int  # messages dropped from the start of the turns


def fit_history(history: list[dict[str, str]], budget: int) -> Fitted:
    """`history` is [system, ...turns..., newest user message], as build_history makes it.

    If its estimate is over `budget`, the oldest turns are dropped, as few as will make it fit.
    The system message and the newest message are always kept, even when they alone are over
    the budget. The cut never leaves an assistant message first after the system message: an old
    question goes together with the answer(s) that follow it. `budget` <= 0 means no limit.
    The result is the system message and a contiguous tail of the turns; `history` is not changed.
    """
    if budget <= 0 or estimate_messages(history) <= budget:
        return Fitted(list(history), 0)
    head = history[:1] if history and history[0]["role"] == "system" else []
    if len(history) - len(head) <= 1:  # nothing but what is always kept
        return Fitted(list(history), 0)
    turns, newest = history[len(head):-1], history[-1:]
    cost = estimate_messages(head) + estimate_messages(newest)
    # Keep the longest tail of turns that fits and starts with a question, not an answer.
    keep_from = len(turns)  # nothing but system and newest, unless a tail below fits
    tail_cost = 0
    for start in range(len(turns) - 1, -1, -1):
        tail_cost += estimate_messages(turns[start:start + 1])
        if cost + tail_cost > budget:
            break
        if turns[start]["role"] != "assistant":
            keep_from = start
    return Fitted(head + turns[keep_from:] + newest, keep_from)


def build_history(system_prompt: str, messages: list[Message]) -> list[dict[str, str]]:
    """The raw markdown of each turn (never HTML), after the system prompt. An answer still being
    written (in another tab) is left out: half an answer is not a turn."""
    history = [{"role": "system", "content": system_prompt}]
    for message in messages:
        if message.content.strip() and message.status != STREAMING:
            history.append({"role": message.role, "content": message.content})
    return history
