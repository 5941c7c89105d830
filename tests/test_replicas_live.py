"""Three replicas of the real app (Hypercorn processes) on one PostgreSQL database, behind nginx
running deploy/nginx.conf as shipped: every request free to land on any replica. A load with no
errors and every message stored once; a replica killed mid-answer; Stop and reload mid-answer on
another replica than the one streaming. Needs nginx and PostgreSQL (both required in CI).
tests/test_replicas.py covers the same ground with two apps in this process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from chatapp.reply import ABANDONED
from chatapp.storage import Message, Store
from tests.support import nginx
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.postgres import PostgresServer, missing as postgres_missing, skip_or_fail
from tests.support.replicas import Replicas, Turn, active_streams, as_nginx_sends, take_turn, visitor

TOKENS = [f"word{i} " for i in range(19)] + ["word19."]
ANSWER = "".join(TOKENS)


def _needs_nginx_and_postgres() -> None:
    reason = nginx.missing()
    if reason is not None:
        nginx.skip_or_fail(reason)
    reason = postgres_missing()
    if reason is not None:
        skip_or_fail(reason)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(default=Reply(tokens=TOKENS, delay=0.01)) as server:
        yield server


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    _needs_nginx_and_postgres()
    with PostgresServer() as server:
        yield server


def _replicas(postgres: PostgresServer, fake: FakeOpenAI, directory: Path) -> Iterator[Replicas]:
    with Replicas(directory, postgres.create_database("replicas"), fake.base_url) as replicas:
        yield replicas


@pytest.fixture(scope="module")
def replicas(postgres: PostgresServer, fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Three replicas behind nginx, for the tests that kill none."""
    yield from _replicas(postgres, fake, tmp_path_factory.mktemp("replicas"))


@pytest.fixture
def fresh_replicas(postgres: PostgresServer, fake: FakeOpenAI, tmp_path: Path) -> Iterator[Replicas]:
    """Three replicas of this test's own, one of which it may kill."""
    yield from _replicas(postgres, fake, tmp_path)


@pytest.fixture(autouse=True)
def _reset(fake: FakeOpenAI) -> None:
    fake.reset()


async def _stored(replicas: Replicas, conversation_ids: list[str]) -> dict[str, tuple[list[Message], int]]:
    """Each conversation's visible messages, and how many rows it has in all (hidden ones too),
    read through the app's own store."""
    store = await Store.open(replicas.database_url, pool_size=2, migrate=False)
    try:
        found = {}
        for conversation_id in conversation_ids:
            [(count,)] = await store.db.rows("SELECT COUNT(*) FROM messages WHERE conversation_id = ?",
                                             (conversation_id,))
            found[conversation_id] = (await store.messages(conversation_id), count)
        return found
    finally:
        await store.close()


def _assistant(page: str) -> BeautifulSoup:
    return BeautifulSoup(page, "html.parser").select("article[data-role=assistant]")[-1]


async def test_a_load_through_nginx_lands_on_every_replica_and_stores_each_message_once(replicas: Replicas) -> None:
    conversations, turns = 30, 2

    async def conversation(index: int) -> list[Turn]:
        # A new connection for each request, as many browsers behind one nginx would make.
        async with visitor(replicas.front, keep_alive=False) as browser:
            done = [await take_turn(browser, f"question {index}.0", path="/new")]
            for turn in range(1, turns):
                done.append(await take_turn(browser, f"question {index}.{turn}", path=done[0].conversation))
            return done

    results = await asyncio.gather(*(conversation(i) for i in range(conversations)))
    failed = [(turn.question, turn.reason) for done in results for turn in done if turn.outcome != "complete"]
    assert not failed

    by_id = {done[0].conversation_id: done for done in results}
    assert len(by_id) == conversations  # each browser its own conversation
    for conversation_id, (messages, rows) in (await _stored(replicas, list(by_id))).items():
        expected = [("user", turn.question) for turn in by_id[conversation_id]]
        assert [(m.role, m.content) for m in messages if m.role == "user"] == expected
        assert [(m.role, m.status, m.content) for m in messages if m.role == "assistant"] == [
            ("assistant", "complete", ANSWER)] * turns
        assert rows == 2 * turns  # nothing stored twice, not even hidden

    served = Counter(access.served_by for access in replicas.front.accesses() if access.method == "POST")
    assert set(served) == {replica.address for replica in replicas.replicas}, served
    assert not [access for access in replicas.front.accesses() if access.status >= 500]


async def test_a_replica_killed_mid_answer_its_answers_settle_with_their_text_and_the_others_serve_on(
        fresh_replicas: Replicas, fake: FakeOpenAI) -> None:
    replicas = fresh_replicas
    fake.default = Reply(tokens=TOKENS * 3, delay=0.1)  # six seconds an answer
    async with contextlib.AsyncExitStack() as stack:
        browsers = [await stack.enter_async_context(visitor(replicas.front)) for _ in range(6)]
        turns = [Turn(f"question {i}") for i in range(len(browsers))]
        tasks = [asyncio.create_task(take_turn(browser, turn.question, path="/new", turn=turn))
                 for browser, turn in zip(browsers, turns)]
        stack.callback(lambda: [task.cancel() for task in tasks])
        # Every answer streaming, and its text saved at least once (at the latest a second after a piece).
        deadline = time.monotonic() + 15
        while not all(turn.first_piece and time.monotonic() - turn.first_piece > 1.5 for turn in turns):
            assert time.monotonic() < deadline and not any(task.done() for task in tasks), turns
            await asyncio.sleep(0.05)
        counts = await asyncio.gather(*(active_streams(replica) for replica in replicas.replicas))
        assert sum(counts) == len(turns), counts
        victim = replicas.replicas[counts.index(max(counts))]
        victim.kill()
        killed_at, killed_epoch = time.monotonic(), time.time()
        await asyncio.gather(*tasks)

        cut = [turn for turn in turns if turn.outcome == "cut"]
        assert len(cut) == max(counts), [(turn.outcome, turn.reason) for turn in turns]
        assert all(turn.ended - killed_at < 2 for turn in cut)  # the connection ends with the replica
        assert all(turn.outcome == "complete" for turn in turns if turn not in cut)

        # Any replica's next view (the same browser's) settles each cut answer as interrupted,
        # with the text it had saved.
        for turn in cut:
            browser = browsers[turns.index(turn)]
            while True:
                page = await browser.get(turn.conversation)
                assert page.status_code == 200
                answer = _assistant(page.text)
                if answer["data-status"] != "streaming":
                    break
                assert time.monotonic() - killed_at < 8, "the answer is still shown as being written"
                await asyncio.sleep(0.25)
            assert answer["data-status"] == "stopped"
            assert answer.select_one("[data-role=error]").get_text(strip=True) == ABANDONED
            [(messages, _)] = (await _stored(replicas, [turn.conversation_id])).values()
            saved = messages[-1]
            assert saved.status == "stopped" and saved.error == ABANDONED
            assert saved.content and (ANSWER * 3).startswith(saved.content)  # the text so far, kept
            assert saved.content.split()[-1] in turn.received  # no more than the browser was sent
            assert saved.content.split()[-1] in answer.get_text()

        # New conversations keep working: nginx tries the next replica when one refuses.
        fake.default = Reply(tokens=TOKENS, delay=0.01)
        after = await asyncio.gather(*(take_turn(browser, "after", path="/new") for browser in browsers))
    assert [turn.outcome for turn in after] == ["complete"] * len(after), [turn.reason for turn in after]
    late = [access for access in replicas.front.accesses() if access.started >= killed_epoch]
    assert not [access for access in late if access.status >= 500], replicas.front.errors()
    assert victim.address not in {access.served_by for access in late}


async def test_stop_and_reload_mid_answer_on_another_replica(replicas: Replicas, fake: FakeOpenAI) -> None:
    fake.script(Reply(tokens=["one ", "two ", "three "], stall_after=2, stall=20))
    async with visitor(replicas.front) as browser:
        turn = Turn("a question to stop")
        streaming = asyncio.create_task(take_turn(browser, turn.question, path="/new", turn=turn))
        deadline = time.monotonic() + 10
        while "one two" not in turn.received:
            assert time.monotonic() < deadline and not streaming.done(), turn
            await asyncio.sleep(0.05)
        counts = await asyncio.gather(*(active_streams(replica) for replica in replicas.replicas))
        assert sorted(counts) == [0, 0, 1], counts
        writer = replicas.replicas[counts.index(1)]
        other = next(replica for replica in replicas.replicas if replica is not writer)

        async with as_nginx_sends(other, browser) as elsewhere:
            # A reload there shows the text so far, saved within a second of its last piece.
            while True:
                page = await elsewhere.get(turn.conversation)
                assert page.status_code == 200
                answer = _assistant(page.text)
                if "one two" in answer.get_text() or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert answer["aria-busy"] == "true" and "one two" in answer.get_text()
            stop = answer.select_one("form.stop-form")
            csrf = stop.select_one("input[name=csrf_token]")["value"]
            asked_at = time.monotonic()
            stopped = await elsewhere.post(stop["action"], data={"csrf_token": csrf}, headers={"HX-Request": "true"})
            assert stopped.status_code == 200
            assert fake.wait_for_disconnect(timeout=3)
            assert fake.disconnects[-1] - asked_at < 1.0  # the model's connection closed within a second
        # The writer ends its stream as if the browser had left (the page then fetches the saved
        # answer), or with the stopped answer.
        await asyncio.wait_for(streaming, 5)
        assert turn.outcome == "cut" or turn.final_status == "stopped", turn.reason

        reloaded = await browser.get(turn.conversation)  # through nginx, wherever it lands
        answer = _assistant(reloaded.text)
        assert answer["data-status"] == "stopped" and "one two" in answer.get_text()
    [(messages, _)] = (await _stored(replicas, [turn.conversation_id])).values()
    assert (messages[-1].status, messages[-1].content.strip()) == ("stopped", "one two")
