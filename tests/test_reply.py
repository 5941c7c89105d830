"""reply.py with real providers (the demo, and the real openai SDK against the fake model server)
and a real Store: the events stream_reply yields, and what it saves whatever happens (finished,
failed, stopped, interrupted, its conversation deleted); and settle_abandoned."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from chatapp import reply
from chatapp.config import Config
from chatapp.history import estimate_tokens
from chatapp.llm import DemoProvider, OpenAIProvider, Retrying, Thought, Usage
from chatapp.llm.demo import demo_reply
from chatapp.llm.errors import CUT_SHORT
from chatapp.quota import Quota, StreamSlot
from chatapp.rendering import StreamStep, render_markdown
from chatapp.reply import INTERRUPTED, UNEXPECTED, Notice, retry_notice, settle_abandoned, stream_reply
from chatapp.storage import Message, Store
from chatapp.turns import Turn, start_regeneration, start_turn
from tests.support.fake_openai import FakeOpenAI, Reply

SYSTEM = "Be brief."


class Scripted:
    """A model of our own: these pieces, then (optionally) a wait until `hold` is set and the
    pieces `after` it, then (optionally) an error. Records whether its stream was closed."""

    label, is_demo = "scripted", False

    def __init__(self, *pieces: str | Thought | Usage, hold: asyncio.Event | None = None, after: tuple[str, ...] = (),
                 then: Exception | None = None) -> None:
        self.pieces, self.hold, self.after, self.then = pieces, hold, after, then
        self.closed = False

    async def stream(self, messages: list[dict[str, str]], model: str | None = None) -> AsyncIterator[str | Thought | Usage]:
        try:
            for piece in self.pieces:
                await asyncio.sleep(0)
                yield piece
            if self.hold is not None:
                await self.hold.wait()
            for piece in self.after:
                await asyncio.sleep(0.02)  # spaced, as a model's pieces are
                yield piece
            if self.then is not None:
                raise self.then
        finally:
            self.closed = True


def _openai(fake: FakeOpenAI, **overrides: object) -> OpenAIProvider:
    settings: dict[str, object] = dict(api_key="sk-test", base_url=fake.base_url, model="fake-model",
                                       connect_timeout=1.0, first_token_timeout=2.0, idle_timeout=2.0,
                                       max_retries=0)
    return OpenAIProvider(**{**settings, **overrides})


async def _turn(store: Store, question: str = "What is SQLite?") -> Turn:
    conversation = await store.create_conversation("c1", "alice", "")
    return await start_turn(store, conversation, question, system_prompt=SYSTEM, model="m1")


async def _slot(store: Store) -> tuple[Quota, StreamSlot]:
    quota = Quota(Config(rate_limit_per_session=None, rate_limit_per_address=None, max_streams_per_session=1))
    return quota, await quota.check_send("alice", "203.0.113.9", store)


async def _all(store: Store, provider: object, turn: Turn, slot: StreamSlot | None = None) -> list:
    return [item async for item in stream_reply(store, provider, turn, request_id="r-1", slot=slot)]


def _text(events: list) -> str:
    return "".join(e.tail for e in events if isinstance(e, StreamStep) and not e.replace_tail)


async def _place_is_free(store: Store) -> bool:
    return await store.claim_stream("probe", "alice", most=1, silent_for=60)


# --- an answer that finishes ------------------------------------------------------------------------

async def test_a_demo_answer_streams_then_is_saved_complete_with_its_tokens_charged(store: Store) -> None:
    turn = await _turn(store)
    quota, slot = await _slot(store)
    events = await _all(store, DemoProvider(delay=0), turn, slot)

    assert events[0] == turn.assistant and events[0].busy  # the bubble first, before any text
    assert all(isinstance(e, StreamStep) for e in events[1:-1]) and len(events) > 20
    final = events[-1]
    expected = demo_reply(turn.history)
    assert isinstance(final, Message) and (final.status, final.error) == ("complete", None)
    assert final.content == expected and str(final.html) == str(render_markdown(expected))
    assert await store.message(turn.assistant.id) == final
    # The demo's own count of tokens, in the message and in alice's ledger.
    prompt = -(-sum(len(m["content"]) for m in turn.history) // 4)
    assert (final.prompt_tokens, final.completion_tokens) == (prompt, -(-len(expected) // 4))
    used = await store.tokens_used_on(datetime.now(UTC).date(), "alice")
    assert used == final.prompt_tokens + final.completion_tokens
    assert quota.streaming == 0 and not slot.claimed and await _place_is_free(store)


async def test_the_usage_the_model_server_reports_is_what_is_saved(store: Store, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["Fine", " thanks."], usage=(40, 10)))
    provider = _openai(fake_upstream)
    try:
        final = (await _all(store, provider, await _turn(store)))[-1]
    finally:
        await provider.aclose()
    assert (final.status, final.content) == ("complete", "Fine thanks.")
    assert (final.prompt_tokens, final.completion_tokens) == (40, 10)
    assert fake_upstream.requests[0].body["model"] == "m1"  # the turn's model, not the provider's default


async def test_without_reported_usage_the_tokens_are_estimated_from_what_went_each_way(store: Store) -> None:
    turn = await _turn(store)
    final = (await _all(store, Scripted("Hello ", "there, ", "friend."), turn))[-1]
    assert final.content == "Hello there, friend."
    assert final.prompt_tokens == estimate_tokens("".join(m["content"] for m in turn.history))
    assert final.completion_tokens == estimate_tokens("Hello there, friend.")


async def test_a_retry_is_announced_before_the_answer_starts(store: Store, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(status=429, headers={"retry-after-ms": "10"}), Reply(tokens=["ok"]))
    provider = _openai(fake_upstream, max_retries=1)
    try:
        events = await _all(store, provider, await _turn(store))
    finally:
        await provider.aclose()
    notices = [e for e in events if isinstance(e, Notice)]
    assert notices == [Notice("The model server is busy; trying again in 0 s (try 2 of 2)…")]
    assert events.index(notices[0]) == 1 and events[-1].content == "ok"


def test_the_retry_notice_says_why_and_which_try() -> None:
    assert retry_notice(Retrying(attempt=3, tries=4, wait=2.4, reason="server")) == (
        "The model server did not answer; trying again in 2 s (try 3 of 4)…")
    assert retry_notice(Retrying(attempt=2, tries=3, wait=7.6, reason="rate_limit")).startswith(
        "The model server is busy; trying again in 8 s")


# --- an answer that fails ---------------------------------------------------------------------------

async def test_a_broken_upstream_keeps_the_text_so_far_with_a_readable_error(store: Store,
                                                                            fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(tokens=["kept ", "text ", "lost"], drop_after=2))
    provider = _openai(fake_upstream)
    turn = await _turn(store)
    quota, slot = await _slot(store)
    try:
        final = (await _all(store, provider, turn, slot))[-1]
    finally:
        await provider.aclose()
    assert (final.status, final.content) == ("error", "kept text ")
    assert final.error == f"{CUT_SHORT['connection']} (request id r-1)"
    assert str(final.html) == str(render_markdown("kept text "))
    assert await store.message(turn.assistant.id) == final
    assert quota.streaming == 0 and await _place_is_free(store)


async def test_a_request_refused_before_any_text_charges_nothing(store: Store, fake_upstream: FakeOpenAI) -> None:
    """A wrong key or a failing server costs the person none of their allowance: the model did no work."""
    fake_upstream.script(Reply(status=401))
    provider = _openai(fake_upstream)
    turn = await _turn(store)
    try:
        final = (await _all(store, provider, turn))[-1]
    finally:
        await provider.aclose()
    assert final.status == "error" and (final.prompt_tokens, final.completion_tokens) == (0, 0)
    assert await store.tokens_used_on(datetime.now(UTC).date(), "alice") == 0


async def test_a_bug_while_answering_is_saved_as_an_error_and_logged(store: Store,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    provider = Scripted("half ", "an answer", then=RuntimeError("a bug"))
    turn = await _turn(store)
    final = (await _all(store, provider, turn))[-1]
    assert (final.status, final.content) == ("error", "half an answer")
    assert final.error == f"{UNEXPECTED} (request id r-1)"  # nothing of the bug reaches the person
    assert provider.closed
    assert any(r.levelno == logging.ERROR and "request_id=r-1" in r.getMessage() and r.exc_info
               for r in caplog.records)


# --- an answer that is stopped ----------------------------------------------------------------------

@pytest.mark.parametrize("how", ["cancelled", "closed"])
async def test_a_stopped_answer_keeps_its_text_and_says_stopped(store: Store, how: str) -> None:
    provider = Scripted("First ", "words", hold=asyncio.Event())
    turn = await _turn(store)
    quota, slot = await _slot(store)
    events = stream_reply(store, provider, turn, request_id="r-1", slot=slot)
    seen = [await anext(events) for _ in range(3)]  # the bubble and two pieces
    assert _text(seen) == "First words"
    if how == "cancelled":  # the request's task is cancelled (the client left) while it waits for the model
        waiting = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    else:  # the response is closed by its writer (streams.py)
        await events.aclose()
    saved = await store.message(turn.assistant.id)
    assert (saved.status, saved.content, saved.error) == ("stopped", "First words", None)
    assert provider.closed  # the model's stream is closed with it
    assert quota.streaming == 0 and await _place_is_free(store)


async def test_a_stop_while_the_model_thinks_keeps_its_reasoning_marked_stopped(store: Store) -> None:
    provider = Scripted(Thought("Weighing "), Thought("the options"), hold=asyncio.Event())
    turn = await _turn(store)
    events = stream_reply(store, provider, turn, request_id="r-1")
    seen = [await anext(events) for _ in range(3)]  # the bubble and two pieces of reasoning
    assert [type(e).__name__ for e in seen[1:]] == ["ThoughtStep", "ThoughtStep"] and seen[1].first
    await events.aclose()
    saved = await store.message(turn.assistant.id)
    assert (saved.status, saved.content, saved.reasoning) == ("stopped", "", "Weighing the options")
    assert saved.thinking_seconds is not None and "Weighing the options" in saved.reasoning_html
    assert provider.closed


async def test_an_error_while_the_model_thinks_keeps_its_reasoning_with_the_error(
        store: Store, fake_upstream: FakeOpenAI) -> None:
    fake_upstream.script(Reply(reasoning=["Let me ", "see"], tokens=["never"], drop_after=0))
    provider = _openai(fake_upstream)
    turn = await _turn(store)
    try:
        events = await _all(store, provider, turn)
    finally:
        await provider.aclose()
    final = events[-1]
    assert (final.status, final.content, final.reasoning) == ("error", "", "Let me see")
    assert final.error == f"{CUT_SHORT['connection']} (request id r-1)"  # said as cut short, not as never started


async def test_an_answer_cut_by_a_shutdown_says_so(store: Store) -> None:
    turn = await _turn(store)
    quota = Quota(Config(rate_limit_per_session=None, rate_limit_per_address=None))
    started = asyncio.Event()

    async def request() -> None:  # the request's own task holds the slot, as in the app
        slot = await quota.check_send("alice", "203.0.113.9", store)
        async for item in stream_reply(store, Scripted("Long ", "answer", hold=asyncio.Event()), turn,
                                       request_id="r-1", slot=slot):
            if isinstance(item, StreamStep) and item.tail == "answer":
                started.set()

    task = asyncio.ensure_future(request())
    await asyncio.wait_for(started.wait(), 2)
    await quota.interrupt_all(timeout=2)
    assert quota.streaming == 0
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    saved = await store.message(turn.assistant.id)
    assert (saved.status, saved.content) == ("stopped", "Long answer")
    assert saved.error == f"{INTERRUPTED} (request id r-1)"


async def test_the_text_so_far_is_kept_while_it_streams_and_a_deleted_conversation_ends_it(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reply, "SAVE_EVERY_SECONDS", 0)  # save after every piece
    hold = asyncio.Event()
    provider = Scripted("So ", "far", hold=hold, after=(" never", " saved"))
    turn = await _turn(store)
    events = stream_reply(store, provider, turn, request_id="r-1")
    for _ in range(3):  # the bubble and two pieces
        await anext(events)
    waiting = asyncio.ensure_future(anext(events))  # saves "far", then waits for the model
    await asyncio.sleep(0.05)
    saved = await store.message(turn.assistant.id)
    assert (saved.status, saved.content) == ("streaming", "So far")  # a crash now loses nothing shown

    assert await store.delete_conversation("c1", "alice")  # by another worker
    hold.set()
    rest = [await waiting] + [item async for item in events]
    final = rest[-1]
    assert (final.status, final.content) == ("stopped", "So far never")  # it stops once a save finds it gone
    assert provider.closed and not any(isinstance(e, StreamStep) and "saved" in e.tail for e in rest)
    assert await store.tokens_used_on(datetime.now(UTC).date(), "alice") > 0  # and its tokens count


async def test_text_that_comes_while_the_text_so_far_is_saved_is_saved_after_it(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last piece before a long pause is saved even when it came while the save before it ran
    (a reload on another replica, meanwhile, shows it)."""
    monkeypatch.setattr(reply, "SAVE_EVERY_SECONDS", 0.05)
    turn = await _turn(store)
    saves: list[str] = []
    database_answers, real_save = asyncio.Event(), store.save_partial

    async def save_partial(message_id: int, content: str, reasoning: str) -> bool:
        saves.append(content)
        await database_answers.wait()  # a slow database: the next piece comes meanwhile
        return await real_save(message_id, content, reasoning)

    monkeypatch.setattr(store, "save_partial", save_partial)
    second_piece, rest = asyncio.Event(), asyncio.Event()

    class Pausing(Scripted):
        async def stream(self, messages: list[dict[str, str]], model: str | None = None) -> AsyncIterator[str]:
            yield "Half "
            await second_piece.wait()
            yield "an "
            await rest.wait()  # the model pauses, as one thinking does
            yield "answer"

    events = stream_reply(store, Pausing(), turn, request_id="r-1")
    await anext(events)  # the bubble
    await anext(events)  # "Half "
    reading = asyncio.ensure_future(anext(events))
    while not saves:  # "Half " is being saved
        await asyncio.sleep(0.01)
    second_piece.set()
    await reading  # "an ", while that save runs
    reading = asyncio.ensure_future(anext(events))  # the model pauses
    database_answers.set()
    for _ in range(100):
        if (await store.message(turn.assistant.id)).content == "Half an ":
            break
        await asyncio.sleep(0.02)
    assert saves == ["Half ", "Half an "] and (await store.message(turn.assistant.id)).content == "Half an "
    rest.set()
    await reading
    await events.aclose()


# --- a regeneration that does not work out ----------------------------------------------------------

@pytest.mark.parametrize(("outcome", "old_answer_back"), [
    ("complete", False), ("error", True), ("stopped before any text", True), ("stopped after some text", False),
])
async def test_a_regeneration_that_gives_nothing_brings_the_old_answer_back(store: Store, outcome: str,
                                                                           old_answer_back: bool) -> None:
    conversation = await store.create_conversation("c1", "alice", "")
    await store.add_message("c1", "user", "question", status="complete")
    old = await store.add_message("c1", "assistant", "the old answer", status="complete")
    turn = await start_regeneration(store, conversation, system_prompt=SYSTEM, model="m1")
    if outcome == "complete":
        await _all(store, Scripted("new"), turn)
    elif outcome == "error":
        await _all(store, Scripted("new", then=RuntimeError("a bug")), turn)
    else:
        pieces = ("new ",) if outcome.endswith("some text") else ()
        events = stream_reply(store, Scripted(*pieces, hold=asyncio.Event()), turn, request_id="r-1")
        for _ in range(1 + len(pieces)):
            await anext(events)
        await events.aclose()
    assert (await store.message(old.id)).hidden is not old_answer_back
    shown = [m.content for m in await store.messages("c1") if m.role == "assistant"]
    assert ("the old answer" in shown) is old_answer_back


# --- answers left streaming -------------------------------------------------------------------------

async def test_only_answers_silent_for_too_long_or_whose_writer_died_are_settled(store: Store) -> None:
    await store.heartbeat()  # this process is alive
    await store.create_conversation("c1", "alice", "")
    question = await store.add_message("c1", "user", "q", status="complete")
    abandoned = await store.add_message("c1", "assistant", "Half **an", status="streaming")
    live = await store.add_message("c1", "assistant", "still going", status="streaming")
    orphan = await store.add_message("c1", "assistant", "Its process was killed", status="streaming")
    await store.db.rows("UPDATE messages SET updated_at = '2000-01-01T00:00:00.000+00:00' WHERE id IN (?, ?)",
                        (question.id, abandoned.id))
    await store.db.rows("UPDATE messages SET writer = 'killed' WHERE id = ?", (orphan.id,))
    await store.db.rows("INSERT INTO writers (id, seen_at) VALUES ('killed', ?)", (time.time() - 10,))
    messages = await store.messages("c1")
    settled = await settle_abandoned(store, messages, silent_for=60)

    assert [m.id for m in settled] == [question.id, abandoned.id, live.id, orphan.id]  # in order, one for one
    assert settled[0] == messages[0] and settled[2] == messages[2]  # the finished one and the live one
    assert (settled[3].status, settled[3].content) == ("stopped", "Its process was killed")  # at once
    assert "stopped before it was complete" in settled[3].error
    assert (settled[1].status, settled[1].content) == ("stopped", "Half **an")
    assert str(settled[1].html) == str(render_markdown("Half **an"))  # shown rendered, as any answer
    assert (await store.message(abandoned.id)).status == "stopped"
    assert (await store.message(live.id)).status == "streaming"
