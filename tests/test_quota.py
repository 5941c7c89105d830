"""quota.py on its own: the stream slots (held, refused, given back once, ended), the rate limits
and budgets as check_send applies them, the sign-in back-off's ceiling and wording, and the
heartbeat that keeps this process's answers alive. A real Store on a real SQLite file throughout."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from chatapp.config import Config
from chatapp.quota import DAY, TOO_FAST, OverLimit, Quota, StreamSlot, _duration
from chatapp.storage import Final, Store


def _quota(**settings: object) -> Quota:
    defaults: dict[str, object] = {"rate_limit_per_session": None, "rate_limit_per_address": None}
    return Quota(Config(**{**defaults, **settings}))


async def _settled(quota: Quota) -> None:
    """Wait for the work the quota runs apart from its callers (a place given back, an answer ended)."""
    while quota.endings:
        await asyncio.gather(*quota.endings)


async def _places(store: Store, owner: str) -> int:
    (count,) = await store._row("SELECT COUNT(*) FROM streams WHERE owner = ?", (owner,))
    return count


# --- stream slots ---------------------------------------------------------------------------------

async def test_a_slot_is_held_here_and_in_the_database_and_release_gives_both_back(store: Store) -> None:
    quota = _quota(max_streams_per_session=2)
    slot = await quota.check_send("alice", "203.0.113.9", store)
    assert slot.claimed and slot.owner == "alice" and slot.task is asyncio.current_task()
    assert quota.streaming == 1 and await _places(store, "alice") == 1

    slot.release()
    slot.release()  # a second release (the answer saved, then the request ended) is harmless
    await _settled(quota)
    assert quota.streaming == 0 and await _places(store, "alice") == 0
    # Both places are free again: the double release did not free someone else's either.
    await quota.check_send("alice", "203.0.113.9", store)
    await quota.check_send("alice", "203.0.113.9", store)
    assert await _places(store, "alice") == 2


async def test_a_second_answer_for_one_owner_is_refused_and_the_refused_slot_does_not_leak(store: Store) -> None:
    quota = _quota(max_streams_per_session=1)
    held = await quota.check_send("alice", "203.0.113.9", store)
    with pytest.raises(OverLimit) as refused:
        await quota.check_send("alice", "203.0.113.9", store)
    assert refused.value.status == 429 and refused.value.retry_after == 5
    assert "already have an answer being written" in refused.value.message
    assert quota.slots == {held} and await _places(store, "alice") == 1
    other = await quota.check_send("bob", "203.0.113.9", store)  # another owner has places of its own
    assert other.claimed and quota.streaming == 2


async def test_the_process_cap_is_a_503_that_claims_nothing(store: Store) -> None:
    quota = _quota(max_streams=1, max_streams_per_session=5)
    await quota.check_send("alice", "203.0.113.9", store)
    with pytest.raises(OverLimit) as refused:
        await quota.check_send("bob", "198.51.100.7", store)
    assert refused.value.status == 503 and "busy" in refused.value.message
    assert quota.streaming == 1 and await _places(store, "bob") == 0


async def test_a_slot_whose_request_ends_before_its_response_is_settled_then_given_back(store: Store) -> None:
    quota = _quota()
    settled: list[bool] = []

    async def settle() -> None:
        settled.append(quota.streaming == 1)  # the slot is still held while the answer is being ended
        await asyncio.sleep(0)

    async def request() -> StreamSlot:
        slot = await quota.check_send("alice", "203.0.113.9", store)
        slot.settle_if_unused(settle)
        return slot  # the request ends without its response ever running

    await asyncio.ensure_future(request())
    await asyncio.sleep(0)
    await _settled(quota)
    assert settled == [True]
    assert quota.streaming == 0 and await _places(store, "alice") == 0


async def test_a_slot_given_back_before_its_request_ends_is_not_settled(store: Store) -> None:
    quota = _quota()
    settled: list[str] = []

    async def settle() -> None:
        settled.append("settled")

    async def request() -> None:
        slot = await quota.check_send("alice", "203.0.113.9", store)
        slot.settle_if_unused(settle)
        slot.release()  # the answer was written and saved

    await asyncio.ensure_future(request())
    await asyncio.sleep(0)
    await _settled(quota)
    assert settled == [] and quota.streaming == 0


async def _answer(quota: Quota, store: Store, owner: str, conversation_id: str, ended: list[str]) -> None:
    """Stands in for a request writing an answer: holds its slot until cancelled, then saves."""
    slot = await quota.check_send(owner, "203.0.113.9", store)
    slot.conversation_id = conversation_id
    try:
        await asyncio.sleep(30)
    finally:
        ended.append(f"{owner}/{conversation_id}{' (interrupted)' if slot.interrupted else ''}")
        await asyncio.sleep(0.01)  # saving takes a moment: the caller waits for it
        slot.release()


async def test_stopping_a_conversations_answers_ends_only_that_owners_answers_in_it(store: Store) -> None:
    quota = _quota(max_streams_per_session=5)
    ended: list[str] = []
    tasks = [asyncio.ensure_future(_answer(quota, store, owner, conversation, ended))
             for owner, conversation in [("alice", "c1"), ("alice", "c1"), ("alice", "c2"), ("bob", "c1")]]
    while quota.streaming < 4 or any(slot.conversation_id is None for slot in quota.slots):  # all claimed
        await asyncio.sleep(0.005)
    await quota.stop_answers_in("c1", "alice")
    assert sorted(ended) == ["alice/c1", "alice/c1"]  # and both were saved before it returned
    assert quota.streaming == 2 and [t.cancelled() for t in tasks] == [True, True, False, False]

    await quota.interrupt_all()
    assert sorted(ended)[2:] == ["alice/c2 (interrupted)", "bob/c1 (interrupted)"]
    assert quota.streaming == 0


async def test_ending_answers_waits_no_longer_than_its_timeout(store: Store) -> None:
    quota = _quota()

    async def stubborn() -> None:
        slot = await quota.check_send("alice", "203.0.113.9", store)
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.4)  # saving takes far too long
            slot.release()

    task = asyncio.ensure_future(stubborn())
    while quota.streaming < 1 or not all(slot.claimed for slot in quota.slots):  # its place claimed
        await asyncio.sleep(0.005)
    started = time.monotonic()
    await quota.interrupt_all(timeout=0.05)
    assert time.monotonic() - started < 0.3 and quota.streaming == 1
    await asyncio.gather(task, return_exceptions=True)


# --- rate limits and budgets ------------------------------------------------------------------------

async def test_the_session_limit_counts_per_owner_and_the_address_limit_across_owners(store: Store) -> None:
    quota = _quota(rate_limit_per_session="2/minute", rate_limit_per_address="3/minute", max_streams_per_session=9)
    for _ in range(2):
        await quota.check_send("alice", "203.0.113.9", store)
    with pytest.raises(OverLimit) as refused:
        await quota.check_send("alice", "203.0.113.9", store)
    assert refused.value.message == TOO_FAST and refused.value.status == 429
    assert 1 <= refused.value.retry_after <= 60
    assert quota.streaming == 2  # a refused send holds no slot
    # Alice's refused third send did not count against the address: Bob gets its last one.
    await quota.check_send("bob", "203.0.113.9", store)
    with pytest.raises(OverLimit):
        await quota.check_send("carol", "203.0.113.9", store)
    await quota.check_send("carol", "198.51.100.7", store)  # another address is not affected


async def _spend(store: Store, owner: str, tokens: int) -> None:
    conversation = await store.create_conversation(f"c-{owner}-{tokens}", owner, "")
    answer = await store.add_message(conversation.id, "assistant", "", status="streaming")
    await store.finish_message(answer.id, Final(content="x", html="x", status="complete", prompt_tokens=tokens, completion_tokens=0), owner=owner)


async def test_a_budget_refuses_at_its_limit_not_before_until_midnight_utc(store: Store) -> None:
    quota = _quota(daily_tokens_per_session=100, daily_tokens=250, max_streams_per_session=9)
    await _spend(store, "alice", 99)
    await quota.check_send("alice", "203.0.113.9", store)  # one token left: allowed
    await _spend(store, "alice", 1)
    with pytest.raises(OverLimit) as refused:
        await quota.check_send("alice", "203.0.113.9", store)
    assert "allowance of 100 tokens" in refused.value.message and refused.value.status == 429
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert abs(refused.value.retry_after - (midnight - now).total_seconds()) <= 2

    await _spend(store, "bob", 99)
    await _spend(store, "carol", 50)
    await quota.check_send("dave", "203.0.113.9", store)  # 249 of the app's 250 spent: allowed
    await _spend(store, "erin", 1)
    with pytest.raises(OverLimit) as refused:
        await quota.check_send("dave", "203.0.113.9", store)  # a newcomer, but the app's budget is spent
    assert "This app has used its allowance" in refused.value.message


# --- sign-in back-off -------------------------------------------------------------------------------

async def test_the_sign_in_wait_never_grows_past_a_day(store: Store) -> None:
    quota = _quota(login_rate_limit="2/hour")
    await quota.take_sign_in_attempt("address:203.0.113.9", store)
    await store.db.rows("UPDATE sign_in_failures SET failures = 60")  # 2**58 hours, were it not capped
    with pytest.raises(OverLimit) as refused:
        await quota.take_sign_in_attempt("address:203.0.113.9", store)
    assert DAY - 5 <= refused.value.retry_after <= DAY
    assert "Wait about 24 hours, then try again." in refused.value.message


@pytest.mark.parametrize(("seconds", "said"), [
    (1, "1 second"), (59, "59 seconds"), (60, "about 1 minute"), (89, "about 1 minute"),
    (150, "about 2 minutes"), (3569, "about 59 minutes"), (3599, "about 1 hour"), (3600, "about 1 hour"),
    (7 * 3600, "about 7 hours"),
])
def test_a_wait_is_said_in_words_for_a_person(seconds: int, said: str) -> None:
    assert _duration(seconds) == said


# --- the heartbeat ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _QuickConfig(Config):
    """A silence limit of a few hundredths of a second, so the heartbeat beats within a test."""

    @property
    def silence_limit(self) -> float:
        return 0.09


async def test_the_heartbeat_keeps_this_processs_answers_alive_and_outlives_a_failing_database(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    quota = Quota(_QuickConfig(rate_limit_per_session=None, rate_limit_per_address=None, max_streams_per_session=1))
    conversation = await store.create_conversation("c1", "alice", "")
    _, answer = await store.add_turn(conversation.id, model="m", question="hi")
    slot = await quota.check_send("alice", "203.0.113.9", store)
    slot.message_id = answer.id
    await store.db.rows("UPDATE messages SET updated_at = '2000-01-01T00:00:00.000+00:00'")
    beating = asyncio.ensure_future(quota.keep_alive(store))
    try:
        await asyncio.sleep(0.2)  # several beats, each longer than the whole silence limit after the claim
        assert (await store.message(answer.id)).updated_at > "2001"  # not left to look abandoned
        # The place is still held: a claim that frees places silent for the limit finds it alive.
        assert not await store.claim_stream("other", "alice", most=1, silent_for=0.09)

        caplog.set_level(logging.ERROR, logger="chatapp.quota")
        await store.close()  # the database fails under it (the fixture's close is then a no-op)
        await asyncio.sleep(0.1)
        assert not beating.done()
        assert any("could not mark the answers" in r.getMessage() for r in caplog.records)
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
        slot.claimed = False  # its place went with the database
        slot.release()
