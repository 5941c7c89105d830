"""turns.py against a real Store: what each way of starting a turn writes (and hides), the history
it works out for the model, when there is nothing to redo, and a first question made a title."""

from __future__ import annotations

import pytest

from chatapp.storage import Conversation, Final, Store
from chatapp.turns import NothingToRedo, start_edit, start_regeneration, start_turn, title_from

SYSTEM = "Be brief."


async def _conversation(store: Store, *turns: tuple[str, str]) -> Conversation:
    """A conversation of alice's with these finished (question, answer) turns."""
    conversation = await store.create_conversation("c1", "alice", "")
    for question, answer in turns:
        await store.add_message(conversation.id, "user", question, status="complete")
        await store.add_message(conversation.id, "assistant", answer, status="complete", model="m0")
    return conversation


def _sent(history: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in history]


async def _shown(store: Store) -> list[tuple[str, str, str]]:
    return [(m.role, m.content, m.status) for m in await store.messages("c1")]


async def test_a_new_question_is_stored_with_an_empty_answer_and_the_whole_history_goes_out(store: Store) -> None:
    conversation = await _conversation(store, ("q1", "a1"))
    earlier = await store.messages("c1")
    turn = await start_turn(store, conversation, "q2", system_prompt=SYSTEM, model="m1", send_token="form-1")

    assert (turn.user.role, turn.user.content, turn.user.status) == ("user", "q2", "complete")
    assert (turn.assistant.role, turn.assistant.content, turn.assistant.model) == ("assistant", "", "m1")
    assert turn.assistant.busy and turn.assistant.id > turn.user.id
    assert turn.earlier == earlier and turn.new_question and turn.replaced == [] and turn.left_out == 0
    assert turn.owner == "alice"  # whose usage the answer's tokens are
    assert _sent(turn.history) == [("system", SYSTEM), ("user", "q1"), ("assistant", "a1"), ("user", "q2")]
    assert await _shown(store) == [("user", "q1", "complete"), ("assistant", "a1", "complete"),
                                   ("user", "q2", "complete"), ("assistant", "", "streaming")]


async def test_a_regeneration_hides_the_old_answer_and_asks_the_same_question_again(store: Store) -> None:
    conversation = await _conversation(store, ("q1", "a1"), ("q2", "a2"))
    q1, a1, q2, a2 = await store.messages("c1")
    turn = await start_regeneration(store, conversation, system_prompt=SYSTEM, model="m1")

    assert turn.user == q2 and turn.earlier == [q1, a1]  # the question is not stored again
    assert not turn.new_question and turn.replaced == [a2.id]
    assert turn.assistant.busy and turn.assistant.model == "m1"
    assert _sent(turn.history) == [("system", SYSTEM), ("user", "q1"), ("assistant", "a1"), ("user", "q2")]
    assert await _shown(store) == [("user", "q1", "complete"), ("assistant", "a1", "complete"),
                                   ("user", "q2", "complete"), ("assistant", "", "streaming")]
    assert (await store.message(a2.id)).hidden  # kept, not deleted


async def test_an_edit_hides_the_last_question_and_its_answer_and_sends_the_new_text(store: Store) -> None:
    conversation = await _conversation(store, ("q1", "a1"), ("q2 with a typo", "a2"))
    q1, a1, q2, a2 = await store.messages("c1")
    turn = await start_edit(store, conversation, "q2 fixed", system_prompt=SYSTEM, model="m1")

    assert turn.new_question and turn.replaced == [q2.id, a2.id] and turn.earlier == [q1, a1]
    assert turn.user.content == "q2 fixed" and turn.user.id not in (q2.id, a2.id)
    assert _sent(turn.history) == [("system", SYSTEM), ("user", "q1"), ("assistant", "a1"), ("user", "q2 fixed")]
    assert await _shown(store) == [("user", "q1", "complete"), ("assistant", "a1", "complete"),
                                   ("user", "q2 fixed", "complete"), ("assistant", "", "streaming")]
    assert [(await store.message(m.id)).hidden for m in (q2, a2)] == [True, True]


async def test_a_last_question_left_without_an_answer_can_be_edited(store: Store) -> None:
    conversation = await _conversation(store, ("q1", "a1"))
    lone = await store.add_message(conversation.id, "user", "q2", status="complete")
    turn = await start_edit(store, conversation, "q2 again", system_prompt=SYSTEM, model="m1")
    assert turn.replaced == [lone.id]
    assert _sent(turn.history)[-2:] == [("assistant", "a1"), ("user", "q2 again")]


@pytest.mark.parametrize("case", ["empty", "question only", "answer still streaming"])
async def test_there_is_nothing_to_redo_without_a_finished_answer(store: Store, case: str) -> None:
    conversation = await store.create_conversation("c1", "alice", "")
    if case != "empty":
        await store.add_message(conversation.id, "user", "q1", status="complete")
    if case == "answer still streaming":
        await store.add_message(conversation.id, "assistant", "half", status="streaming")
    before = await store.messages("c1")
    with pytest.raises(NothingToRedo) as refused:
        await start_regeneration(store, conversation, system_prompt=SYSTEM, model="m1")
    assert refused.value.status == 409 and "no finished answer" in refused.value.message
    assert await store.messages("c1") == before  # nothing written, nothing hidden


@pytest.mark.parametrize("case", ["empty", "answer still streaming", "only an answer"])
async def test_there_is_nothing_to_edit_without_a_finished_question(store: Store, case: str) -> None:
    conversation = await store.create_conversation("c1", "alice", "")
    if case == "answer still streaming":
        await store.add_message(conversation.id, "user", "q1", status="complete")
        await store.add_message(conversation.id, "assistant", "half", status="streaming")
    if case == "only an answer":
        await store.add_message(conversation.id, "assistant", "a greeting", status="complete")
    before = await store.messages("c1")
    with pytest.raises(NothingToRedo) as refused:
        await start_edit(store, conversation, "new", system_prompt=SYSTEM, model="m1")
    assert refused.value.status == 409 and "no finished question" in refused.value.message
    assert await store.messages("c1") == before


async def test_the_history_is_fitted_to_the_context_budget_and_says_how_much_was_left_out(store: Store) -> None:
    conversation = await _conversation(store, ("old " * 100, "older answer " * 50), ("q2", "a2"))
    turn = await start_turn(store, conversation, "q3", system_prompt=SYSTEM, model="m1", context_tokens=60)
    assert turn.left_out == 2
    assert _sent(turn.history) == [("system", SYSTEM), ("user", "q2"), ("assistant", "a2"), ("user", "q3")]
    assert len(turn.earlier) == 4  # the page still shows them all


async def test_a_regenerated_turn_then_a_new_question_sends_only_the_visible_answer(store: Store) -> None:
    conversation = await _conversation(store, ("q1", "first try"))
    redo = await start_regeneration(store, conversation, system_prompt=SYSTEM, model="m1")
    await store.finish_message(redo.assistant.id, Final(content="second try", html="", status="complete"))
    turn = await start_turn(store, conversation, "q2", system_prompt=SYSTEM, model="m1")
    assert _sent(turn.history)[1:] == [("user", "q1"), ("assistant", "second try"), ("user", "q2")]


@pytest.mark.parametrize(("question", "title"), [
    ("", "New chat"),
    ("  \n\t\n ", "New chat"),
    ("\n\n   Hello there  \nsecond line", "Hello there"),
    ("x" * 60, "x" * 60),  # exactly the limit: kept whole
    ("word " * 11 + "longword", "word " * 10 + "word…"),  # cut at the last whole word
    ("one, two, three, four, five, six, seven, eight, nine, ten, eleven", "one, two, three, four, five, six, seven, eight, nine, ten…"),
    ("y" * 80, "y" * 60 + "…"),  # one long word: cut inside it
    ("abcd " * 11 + "abcde next", "abcd " * 11 + "abcde…"),  # the limit falls at a word's end: it stays
    ("." * 100, "." * 60 + "…"),  # nothing but punctuation: cut, never left empty
])
def test_a_title_is_the_first_line_cut_at_a_word(question: str, title: str) -> None:
    assert title_from(question) == title


def test_a_title_never_runs_past_its_limit_and_an_ellipsis() -> None:
    for limit in (10, 25, 60):
        title = title_from("The quick brown fox jumps over the lazy dog, again and again and again", limit)
        assert len(title) <= limit + 1 and title.endswith("…")
