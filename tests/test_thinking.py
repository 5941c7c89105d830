"""Inline reasoning (chatapp/llm/thinking.py): a `<think>` block at the start of a model's text comes
out as reasoning, the rest as the answer, however the text is cut into pieces.

The splitter sees text as the server streamed it, so the tests cut the same text at every place
(and at many random places at once) and check that what comes out does not depend on the cuts: the
reasoning and the answer exactly, the tags in neither, reasoning before the answer, no empty piece.
Then the same through the real wire reader (chatapp/llm/wire.py) and the provider's chunk reader,
with the event stream's bytes cut at every byte, inside multi-byte characters too.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from chatapp.llm import Thought
from chatapp.llm.openai_server import Chunks
from chatapp.llm.thinking import MAX_LEADING_SPACE, OPENING_TAGS, InlineThinking, split_after_closing_tag
from chatapp.llm.wire import EventReader

# Fragments that make the hard cases likely: tags whole and cut, other tags, fences, newlines,
# multi-byte characters.
FRAGMENTS = ["<think>", "</think>", "<thinking>", "</thinking>", "<", "</", "</th", "<thi", "think", ">",
             "\n", "\n\n", " ", "```", "a", "é", "😊", "x < y > z", "<b>", "\r\n"]
# Any text but NUL, which the reader replaces (with U+FFFD: tests/test_chat.py follows it to the database).
texts = st.lists(st.sampled_from(FRAGMENTS) | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=3),
                 max_size=12).map("".join)


def split(pieces: list[str | Thought]) -> tuple[str, str, list[str | Thought]]:
    """The reasoning and the answer that pieces join into, and the pieces."""
    thought = "".join(p.text for p in pieces if isinstance(p, Thought))
    answer = "".join(p for p in pieces if isinstance(p, str))
    return thought, answer, pieces


def run(parts: list[str]) -> tuple[str, str, list[str | Thought]]:
    splitter = InlineThinking()
    out: list[str | Thought] = []
    for part in parts:
        out += splitter.feed(part)
    out += splitter.finish()
    return split(out)


def cut(text: str, at: list[int]) -> list[str]:
    bounds = [0, *sorted(set(at)), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def assert_well_formed(pieces: list[str | Thought]) -> None:
    assert all(p.text if isinstance(p, Thought) else p for p in pieces), pieces  # nothing empty
    kinds = [isinstance(p, Thought) for p in pieces]
    assert kinds == sorted(kinds, reverse=True), pieces  # all the reasoning, then all the answer


def wire(open_tag: str, thought: str, gap: str, answer: str, space: str = "") -> tuple[str, str]:
    """The text a model sends with this reasoning and answer, and the answer that should come out."""
    close = "</" + open_tag[1:]
    return space + open_tag + thought + close + gap + answer, answer.lstrip("\r\n")


# --- by construction -----------------------------------------------------------------------------

@given(open_tag=st.sampled_from(OPENING_TAGS), thought=texts, answer=texts,
       gap=st.sampled_from(["", "\n", "\n\n", "\r\n\r\n"]),
       space=st.sampled_from(["", " ", "\n", "\n\n  \t"]), data=st.data())
@example(open_tag="<think>", thought="\nSimple greeting.\n", answer="Hello!", gap="\n\n", space="", data=None)
def test_a_block_at_the_start_is_reasoning_however_the_text_is_cut(open_tag, thought, answer, gap, space, data):
    assume(("</" + open_tag[1:]) not in thought)
    text, expected = wire(open_tag, thought, gap, answer, space)
    at = [] if data is None else data.draw(st.lists(st.integers(0, len(text)), max_size=len(text)))

    got_thought, got_answer, pieces = run(cut(text, at))

    assert (got_thought, got_answer) == (thought, expected)
    assert_well_formed(pieces)


@settings(deadline=None)  # every cut of the text: quadratic in its length
@given(open_tag=st.sampled_from(OPENING_TAGS), thought=texts, answer=texts)
def test_every_single_cut_gives_the_same_reasoning_and_answer(open_tag, thought, answer):
    assume(("</" + open_tag[1:]) not in thought)
    text, expected = wire(open_tag, thought, "\n\n", answer)
    whole = run([text])
    assert whole[:2] == (thought, expected)
    for at in range(len(text) + 1):
        assert run(cut(text, [at]))[:2] == whole[:2], at
    assert run(list(text))[:2] == whole[:2]  # a character at a time


@given(answer=texts, data=st.data())
def test_text_without_a_block_at_its_start_is_all_answer(answer, data):
    assume(not any(answer.lstrip().startswith(tag) for tag in OPENING_TAGS))
    at = data.draw(st.lists(st.integers(0, len(answer)), max_size=len(answer)))

    got_thought, got_answer, pieces = run(cut(answer, at))

    assert (got_thought, got_answer) == ("", answer)  # exactly, leading blank space included
    assert_well_formed(pieces)


# --- the cases by name ---------------------------------------------------------------------------

def test_tags_later_in_the_answer_stay_in_it_however_cut():
    answer = "Use:\n\n```html\n<think>draft</think>\n```\n"
    text = "<think>Show the tag literally.</think>" + answer
    for at in range(len(text) + 1):
        for also in (at // 2, at + 3):
            assert run(cut(text, [at, also]))[:2] == ("Show the tag literally.", answer)
    # No block at the start: a later one is answer too, even as the second thing said.
    assert run(["Sure. ", "<think>", "x", "</think>"])[:2] == ("", "Sure. <think>x</think>")
    assert run(["```\n<think>a</think>\n```"])[:2] == ("", "```\n<think>a</think>\n```")


def test_an_unclosed_block_was_all_reasoning():
    assert run(["<think>", "still going", " </thi"]) == ("still going </thi", "", [
        Thought("still going"), Thought(" "), Thought("</thi")])
    assert run(["<thinking>", "a", "</think>", "b"])[:2] == ("a</think>b", "")  # closed by its own tag only


def test_what_could_be_a_tag_is_held_back_and_nothing_more():
    splitter = InlineThinking()
    assert splitter.feed("  <thi") == []  # could still open a block
    assert splitter.feed("nk>I ") == [Thought("I ")]
    assert splitter.feed("wonder</") == [Thought("wonder")]  # "</" could close it
    assert splitter.feed("b> if") == [Thought("</b> if")]  # it did not
    assert splitter.feed("</think") == []
    assert splitter.feed(">\n") == []  # the blank line after the block is the separator
    assert splitter.feed("\nYes") == ["Yes"]
    assert splitter.passing
    assert splitter.feed("</think>") == ["</think>"]
    assert splitter.finish() == []


def test_the_start_is_settled_as_soon_as_it_cannot_be_a_tag():
    splitter = InlineThinking()
    assert splitter.feed("\n<th") == []
    assert splitter.feed("e") == ["\n<the"]  # not a tag: the answer, as it was, at once
    assert splitter.passing
    assert run(["<thin"]) == ("", "<thin", ["<thin"])  # cut short at the end: it was answer text
    assert run(["\n\n"]) == ("", "\n\n", ["\n\n"])
    long_space = " " * (MAX_LEADING_SPACE + 1)
    assert InlineThinking().feed(long_space) == [long_space]  # blank space is not held for long
    assert run([long_space, "<think>x</think>"])[:2] == ("", long_space + "<think>x</think>")


def test_an_empty_block_gives_only_the_answer():
    assert run(["<think></think>\n\nHi"]) == ("", "Hi", ["Hi"])
    assert run(["<think>", "</think>"]) == ("", "", [])


# --- through the wire reader and the provider's chunk reader, cut at every byte -----------------

def event_stream(contents: list[str]) -> bytes:
    events = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    events += [{"choices": [{"index": 0, "delta": {"content": c}, "finish_reason": None}]} for c in contents]
    events += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    return b"".join(b"data: " + json.dumps(e, ensure_ascii=False).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def read_body(parts: list[bytes]) -> tuple[str, str, list]:
    lines, chunks = EventReader(), Chunks(str)
    out: list = []
    for part in parts:
        for event in lines.feed(part):
            if event != b"[DONE]":
                out += chunks.read(json.loads(event))
    return split([p for p in out + chunks.finish() if isinstance(p, (str, Thought))])


@settings(deadline=None, max_examples=50)  # every byte of the event stream: each example is slow
@given(thought=texts, answer=texts, data=st.data())
def test_the_event_stream_cut_at_every_byte_gives_the_same_text(thought, answer, data):
    assume("</think>" not in thought)
    text, expected = wire("<think>", thought, "\n\n", answer)
    contents = cut(text, data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    body = event_stream(contents)
    for at in range(len(body) + 1):
        got_thought, got_answer, pieces = read_body([body[:at], body[at:]])
        assert (got_thought, got_answer) == (thought, expected), at
        assert_well_formed(pieces)
    assert read_body([body[i:i + 1] for i in range(len(body))])[:2] == (thought, expected)


@pytest.mark.parametrize(("text", "split"), [
    ("Okay, 10 minus 3 is 7.\n</think>\n\n10 - 3 = 7", ("Okay, 10 minus 3 is 7.", "10 - 3 = 7")),
    ("All thought.</thinking>", ("All thought.", "")),
    ("Use `</think>` to close a block.", None),  # prose about the tag: not at a line's end
    ("```\n</think>\n```", None),  # in a code fence
    ("<think>opened</think>\nanswer", None),  # opened in the text: the live splitter's case
    ("</think>\nanswer", None),  # nothing before it
    ("A plain answer.", None),
])
def test_a_block_the_prompt_opened_is_split_off_the_whole_text(text: str, split: tuple[str, str] | None) -> None:
    assert split_after_closing_tag(text) == split
