"""Fitting the history into a token budget (chatapp/history.py): oldest turns go first, in question/answer pairs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatapp.history import MESSAGE_OVERHEAD, Fitted, estimate_messages, estimate_tokens, fit_history


def _m(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


SYSTEM = _m("system", "s" * 40)  # 10 + 4 tokens
NEWEST = _m("user", "n" * 40)  # 10 + 4 tokens


def _history(*turns: dict[str, str]) -> list[dict[str, str]]:
    return [SYSTEM, *turns, NEWEST]


def _pairs(count: int) -> list[dict[str, str]]:
    """`count` question/answer pairs, each message 10 + 4 tokens."""
    return [_m(role, f"{role[0]}{i}".ljust(40, ".")) for i in range(count) for role in ("user", "assistant")]


def test_estimate_tokens_counts_four_characters_a_token() -> None:
    assert estimate_tokens("") == 0 and estimate_tokens("a") == 1 and estimate_tokens("a" * 400) == 100
    assert estimate_messages([SYSTEM, NEWEST]) == 2 * (10 + MESSAGE_OVERHEAD)


def test_a_history_under_budget_is_unchanged() -> None:
    history = _history(*_pairs(2))
    assert estimate_messages(history) == 6 * 14
    assert fit_history(history, 6 * 14) == Fitted(history, 0)
    assert fit_history(history, 10_000) == Fitted(history, 0)


def test_no_budget_means_no_limit() -> None:
    history = _history(*_pairs(50))
    assert fit_history(history, 0) == Fitted(history, 0)
    assert fit_history(history, -1) == Fitted(history, 0)


def test_oldest_pairs_go_first() -> None:
    turns = _pairs(3)
    history = _history(*turns)
    # Room for system, newest and two messages: the last pair stays, the first two go.
    assert fit_history(history, 4 * 14) == Fitted([SYSTEM, *turns[4:], NEWEST], 4)
    # Room for three turn messages still keeps only whole pairs: an answer never comes first.
    assert fit_history(history, 5 * 14) == Fitted([SYSTEM, *turns[4:], NEWEST], 4)
    assert fit_history(history, 6 * 14) == Fitted([SYSTEM, *turns[2:], NEWEST], 2)
    assert fit_history(history, 8 * 14 - 1) == Fitted([SYSTEM, *turns[2:], NEWEST], 2)


def test_system_and_newest_stay_even_over_budget() -> None:
    huge_system, huge_question = _m("system", "s" * 4000), _m("user", "q" * 4000)
    history = [huge_system, *_pairs(2), huge_question]
    assert fit_history(history, 10) == Fitted([huge_system, huge_question], 4)
    assert fit_history([huge_system, huge_question], 10) == Fitted([huge_system, huge_question], 0)
    assert fit_history([huge_system], 10) == Fitted([huge_system], 0)
    assert fit_history([], 10) == Fitted([], 0)


def test_a_question_without_an_answer_can_be_kept_alone() -> None:
    # An answer that failed with no text is left out by build_history: two questions in a row.
    first, second, answer = _m("user", "a" * 40), _m("user", "b" * 40), _m("assistant", "c" * 40)
    history = _history(first, second, answer)
    assert fit_history(history, 4 * 14) == Fitted([SYSTEM, second, answer, NEWEST], 1)
    assert fit_history(history, 3 * 14) == Fitted([SYSTEM, NEWEST], 3)


def test_the_input_is_not_changed() -> None:
    history = _history(*_pairs(3))
    before = [dict(m) for m in history]
    fitted = fit_history(history, 4 * 14)
    assert history == before
    assert fitted.messages is not history


_message = st.builds(_m, st.sampled_from(["user", "assistant"]), st.text(max_size=80))


@given(
    system=st.builds(_m, st.just("system"), st.text(max_size=80)),
    turns=st.lists(_message, max_size=12),
    newest=st.builds(_m, st.just("user"), st.text(min_size=1, max_size=80)),
    budget=st.integers(min_value=-5, max_value=400),
)
def test_fit_history_properties(
    system: dict[str, str], turns: list[dict[str, str]], newest: dict[str, str], budget: int
) -> None:
    history = [system, *turns, newest]
    fitted = fit_history(history, budget)
    kept = fitted.messages
    # System, then a contiguous tail of the turns, then the newest question.
    assert kept[0] is system and kept[-1] is newest
    assert fitted.left_out == len(history) - len(kept)
    assert kept[1:-1] == turns[fitted.left_out:]
    if budget <= 0 or estimate_messages(history) <= budget:
        assert kept == history
        return
    # Over budget: turns go until it fits (all of them, if system and newest alone do not) ...
    assert estimate_messages(kept) <= budget or len(kept) == 2
    # ... the cut never leaves an orphaned answer first ...
    assert kept[1]["role"] != "assistant"
    # ... and no more was dropped than needed: one more pair-start turn back would not fit.
    earlier = [i for i in range(fitted.left_out) if turns[i]["role"] != "assistant"]
    if earlier:
        assert estimate_messages([system, *turns[earlier[-1]:], newest]) > budget
