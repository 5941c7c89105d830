"""Reasoning written inline: a `<think>`…`</think>` (or `<thinking>`…`</thinking>`) block at the very
start of a model's text, as servers without a reasoning parser send it (llama.cpp with
`--reasoning-format none`, LM Studio with its reasoning setting off, vLLM without
`--reasoning-parser`), told apart from the answer while it streams.

Only a block at the start counts (whitespace may come before it): a tag later in the answer, in a
code fence or in prose about tags, is the answer's own text. The tags themselves are never part of
either text. A tag may arrive split across pieces at any character, so the few characters that
could still be the start of a tag are held back until the next piece settles it; nothing else is
held, and what is held never grows with the text.

A chat template that opens `<think>` in the prompt (QwQ, DeepSeek-R1-0528) makes the text start
with reasoning and only a closing `</think>` come. Telling that apart from an answer live would
mean holding back the whole answer until the closing tag or the end, so it streams as answer text,
and `split_after_closing_tag` separates the two once the answer is complete.
"""

from __future__ import annotations

import re

from .base import Thought

OPENING_TAGS = ("<think>", "<thinking>")
# Whitespace before the opening tag that is held while waiting for it. A model that thinks inline
# opens its block at once; beyond this, the text is an answer that starts with blank space (an
# indented code block, say), and holding it longer would only delay it.
MAX_LEADING_SPACE = 64

_START, _THINKING, _AFTER, _ANSWER = range(4)


class InlineThinking:
    """Splits one stream of text into reasoning (`Thought`) and answer (`str`) pieces.

    `feed` each piece of text as it comes and hand on what it returns, in order; at the end,
    `finish` returns what was held back (an unclosed block was all reasoning). No piece returned is
    empty. After the closing tag, the newlines that start the answer are dropped (the model's
    separator between the two). Once `passing` is true, every later piece is answer text as it is:
    a caller may then skip the splitter."""

    __slots__ = ("_state", "_held", "_closing")

    def __init__(self) -> None:
        self._state = _START
        self._held = ""  # leading whitespace and a possible opening tag, or a possible closing tag
        self._closing = ""  # the closing tag that ends the block that was opened

    @property
    def passing(self) -> bool:
        return self._state == _ANSWER

    def feed(self, text: str) -> list[str | Thought]:
        if self._state == _ANSWER:
            return [text] if text else []
        if self._state == _THINKING:
            return self._thinking(text)
        if self._state == _AFTER:
            return self._after(text)
        return self._start(text)

    def finish(self) -> list[str | Thought]:
        """What was held back, at the end of the text: a partial opening tag (or only whitespace)
        was answer text, a partial closing tag was reasoning."""
        held, self._held = self._held, ""
        state, self._state = self._state, _ANSWER
        if not held:
            return []
        return [Thought(held)] if state == _THINKING else [held]

    def _start(self, text: str) -> list[str | Thought]:
        text = self._held + text
        rest = text.lstrip()
        if len(text) - len(rest) > MAX_LEADING_SPACE:
            return self._answer(text)
        if not rest:  # only whitespace so far: the opening tag may still follow
            self._held = text
            return []
        for tag in OPENING_TAGS:
            if rest.startswith(tag):
                self._held, self._state = "", _THINKING
                self._closing = "</" + tag[1:]
                return self._thinking(rest[len(tag):])
        if any(tag.startswith(rest) for tag in OPENING_TAGS):  # a tag, perhaps, cut short
            self._held = text
            return []
        return self._answer(text)

    def _thinking(self, text: str) -> list[str | Thought]:
        text = self._held + text
        closing = self._closing
        end = text.find(closing)
        if end >= 0:
            self._held, self._state = "", _AFTER
            out: list[str | Thought] = [Thought(text[:end])] if end else []
            return out + self._after(text[end + len(closing):])
        # The closing tag has one "<", its first character: only the text from the last "<" on,
        # if short enough, can be the start of it.
        cut = text.rfind("<", max(0, len(text) - len(closing) + 1))
        if cut >= 0 and closing.startswith(text[cut:]):
            self._held, text = text[cut:], text[:cut]
        else:
            self._held = ""
        return [Thought(text)] if text else []

    def _after(self, text: str) -> list[str | Thought]:
        text = text.lstrip("\r\n")
        return self._answer(text) if text else []

    def _answer(self, text: str) -> list[str | Thought]:
        self._held, self._state = "", _ANSWER
        return [text] if text else []


# A closing tag alone at the end of a line, before any code fence: the end of a block the prompt opened.
_LONE_CLOSING_TAG = re.compile(r"\A(?P<thought>(?:(?!```|~~~|<think>|<thinking>).)*?)</think(?:ing)?>[ \t]*(?:\r?\n|\Z)",
                               re.DOTALL)


def split_after_closing_tag(text: str) -> tuple[str, str] | None:
    """(reasoning, answer) for a whole text that starts with reasoning and closes it with a lone
    `</think>` (its block opened by the chat template), or None for any other text. Once the text
    is complete: live, such a text streams as the answer."""
    found = _LONE_CLOSING_TAG.match(text)
    if found is None or not found["thought"].strip():
        return None
    return found["thought"].strip(), text[found.end():].lstrip("\r\n")
