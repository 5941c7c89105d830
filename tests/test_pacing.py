"""Pacing (chatapp/llm/pacing.py): text gathered and handed on at most once per interval, nothing lost.

`Paced` sits between the model and the page for every answer, so what matters is that it changes
only how often text is written, never what is written or in which order: the text joins back
exactly, items that are not text keep their place, the first text and anything after a pause are
not held back, an error of the source still reaches the caller after the text before it, and
leaving early (closing the stream, or a client disconnecting) closes the source, so the model
server stops generating. The sources are small async generators run on the real event loop; the
wrapped provider is the real demo model. Times are measured, with generous margins, and only ever
to check that nothing is held back or that pacing happened, never how fast anything is.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from dataclasses import dataclass

import pytest

from chatapp.llm import Ending, Thought, Usage
from chatapp.llm.demo import DemoProvider
from chatapp.llm.pacing import Paced, PacedProvider

HISTORY = [{"role": "user", "content": "Hello there"}]


@dataclass(frozen=True)
class Notice:
    """Something that is not text, like a Usage or a Retrying notice."""

    number: int


class Source:
    """A scripted source: each step is a piece to yield, a pause (a float, in seconds), or an
    exception to raise. Records when each piece was yielded and whether it was closed."""

    def __init__(self, *steps: object, forever: str | None = None, every: float = 0.01) -> None:
        self.steps, self.forever, self.every = steps, forever, every
        self.yielded_at: list[tuple[object, float]] = []
        self.closed = False

    async def run(self):
        loop = asyncio.get_running_loop()
        try:
            for step in self.steps:
                if isinstance(step, float):
                    await asyncio.sleep(step)
                elif isinstance(step, BaseException):
                    raise step
                else:
                    self.yielded_at.append((step, loop.time()))
                    yield step
            while self.forever is not None:
                await asyncio.sleep(self.every)
                yield self.forever
        finally:
            self.closed = True


async def timed(stream) -> list[tuple[object, float]]:
    """Each item of the stream with the loop time at which it was handed on."""
    loop = asyncio.get_running_loop()
    got = []
    async with contextlib.aclosing(stream) as items:
        async for item in items:
            got.append((item, loop.time()))
    return got


def spaced(pieces: list[str], gap: float) -> list[object]:
    """The steps of a source that yields `pieces` `gap` seconds apart."""
    steps: list[object] = []
    for piece in pieces:
        steps += [gap, piece]
    return steps


def assert_only_this_task_left() -> None:
    assert asyncio.all_tasks() == {asyncio.current_task()}


# --- what is handed on ---------------------------------------------------------------------------

async def test_text_joins_back_exactly_in_far_fewer_pieces():
    pieces = [f"w{i} " for i in range(60)]
    source = Source(*spaced(pieces, 0.005))
    loop = asyncio.get_running_loop()
    started = loop.time()

    got = await timed(Paced(source.run(), 0.05))

    elapsed = loop.time() - started
    texts = [item for item, _ in got]
    assert "".join(texts) == "".join(pieces)
    assert all(type(text) is str and text for text in texts)
    # At most one write per tick of the clock (plus the first and the last), however long it took...
    assert len(texts) <= elapsed / 0.05 + 3
    # ...which for pieces 5 ms apart is a small fraction of them (about 7 of 60 on an idle machine).
    assert len(texts) <= len(pieces) // 4


async def test_text_is_handed_on_at_most_once_per_interval():
    source = Source(*spaced([f"{i}," for i in range(40)], 0.01))

    got = await timed(Paced(source.run(), 0.1))

    times = [at for _, at in got]
    # Text goes on the ticks of a clock shared by every answer (loop time, every 0.1 s): after the
    # first (at once) and before the last (the end goes at once), no two in the same tick.
    ticks = [int(at // 0.1) for at in times[1:-1]]
    assert len(ticks) >= 3
    assert all(a < b for a, b in zip(ticks, ticks[1:])), times


async def test_first_text_is_handed_on_at_once():
    source = Source("first", *spaced(["second", "third"], 0.02))
    loop = asyncio.get_running_loop()
    started = loop.time()

    got = await timed(Paced(source.run(), 0.5))

    (first, first_at), *rest = got
    assert first == "first"  # alone: not held back to gather what follows
    assert first_at - started < 0.25
    # What follows waits for the shared clock's next tick: together, unless a tick fell between them.
    assert "".join(item for item, _ in rest) == "secondthird" and len(rest) <= 2


async def test_text_before_a_pause_is_not_held_until_the_next_piece():
    source = Source("a", 0.02, "b", 1.0, "c")

    got = await timed(Paced(source.run(), 0.05))

    assert "".join(item for item, _ in got) == "abc"
    b_made = dict(source.yielded_at)["b"]
    b_sent = next(at for item, at in got if "b" in item)
    assert "c" not in next(item for item, _ in got if "b" in item)
    assert b_sent - b_made < 0.5  # about the interval, not the 1 s pause


async def test_the_end_of_the_answer_is_not_held_back():
    source = Source("a", 0.02)  # ends 20 ms after its text
    loop = asyncio.get_running_loop()
    started = loop.time()

    got = await timed(Paced(source.run(), 0.5))

    assert [item for item, _ in got] == ["a"]
    assert loop.time() - started < 0.25  # the interval is 0.5 s: the end did not wait for it


# --- items that are not text ---------------------------------------------------------------------

async def test_items_that_are_not_text_keep_their_place_and_are_not_joined():
    steps = ["a", 0.005, "b", 0.005, Notice(1), 0.005, "c", 0.005, "d", Notice(2), Notice(3), 0.005, "e"]
    source = Source(*steps)

    got = [item for item, _ in await timed(Paced(source.run(), 0.05))]

    # Split the output at the notices: the text between them is the text between them in the source.
    segments: list[object] = []
    for item in got:
        if isinstance(item, str) and segments and isinstance(segments[-1], str):
            segments[-1] += item
        else:
            segments.append(item)
    assert segments == ["ab", Notice(1), "cd", Notice(2), Notice(3), "e"]


async def test_waiting_text_goes_out_as_one_piece_just_before_a_notice():
    usage = Usage(prompt_tokens=3, completion_tokens=4)
    source = Source("a", 0.01, "b", 0.01, "c", 0.01, usage, 0.01, "d")

    got = [item for item, _ in await timed(Paced(source.run(), 0.5))]

    # "a" went at once; "b" and "c" waited for the interval, and the usage came in meanwhile.
    assert got == ["a", "bc", usage, "d"]


async def test_a_notice_after_text_is_not_paced():
    source = Source("a", 0.02, Notice(1), 1.0, "b")
    loop = asyncio.get_running_loop()
    started = loop.time()

    got = await timed(Paced(source.run(), 0.5))

    assert [item for item, _ in got] == ["a", Notice(1), "b"]
    assert got[1][1] - started < 0.25  # not held for the 0.5 s interval


# --- reasoning ----------------------------------------------------------------------------------

async def test_reasoning_is_joined_apart_from_the_answer_and_in_order():
    steps = [Thought("I "), 0.005, Thought("think"), 0.005, "The ", 0.005, "answer", 0.005,
             Thought(" more"), 0.005, "!", Ending("stop"), Usage(1, 2)]
    source = Source(*steps)

    got = [item for item, _ in await timed(Paced(source.run(), 0.05))]

    # Each kind joins back exactly within its run, and the runs keep their order.
    runs: list[object] = []
    for item in got:
        if runs and type(item) is type(runs[-1]) is str:
            runs[-1] += item
        elif runs and type(item) is type(runs[-1]) is Thought:
            runs[-1] = Thought(runs[-1].text + item.text)
        else:
            runs.append(item)
    assert runs == [Thought("I think"), "The answer", Thought(" more"), "!", Ending("stop"), Usage(1, 2)]
    assert len(got) < len(steps)  # and gathered: fewer pieces than came
    assert all(not (type(item) is Thought and "answer" in item.text) for item in got)


async def test_a_run_of_reasoning_waits_for_the_interval_like_text():
    pieces = [Thought(f"t{i} ") for i in range(40)]
    steps: list[object] = []
    for piece in pieces:
        steps += [0.005, piece]
    source = Source(*steps)

    got = [item for item, _ in await timed(Paced(source.run(), 0.05))]

    assert all(type(item) is Thought for item in got)
    assert "".join(item.text for item in got) == "".join(p.text for p in pieces)
    assert len(got) <= len(pieces) // 4  # paced: reasoning is not urgent


async def test_the_ending_is_not_held_back_behind_reasoning():
    source = Source(Thought("a"), 0.02, Thought("b"), 0.02, Ending("length"), 1.0, "c")
    loop = asyncio.get_running_loop()
    started = loop.time()

    got = await timed(Paced(source.run(), 0.5))

    assert [item for item, _ in got] == [Thought("a"), Thought("b"), Ending("length"), "c"]
    assert got[2][1] - started < 0.25  # the ending went at once, with the reasoning before it


# --- errors and leaving early --------------------------------------------------------------------

async def test_an_error_of_the_source_is_raised_after_the_text_before_it():
    boom = RuntimeError("the model server went away")
    source = Source("one", 0.01, " two", 0.01, boom)
    got: list[object] = []

    with pytest.raises(RuntimeError) as raised:
        async for item in Paced(source.run(), 0.05):
            got.append(item)

    assert raised.value is boom
    assert "".join(got) == "one two"
    assert source.closed
    assert_only_this_task_left()


async def test_closing_early_cancels_the_reader_and_closes_the_source():
    source = Source("first", forever="more", every=0.01)

    async with contextlib.aclosing(Paced(source.run(), 0.05)) as stream:
        async for item in stream:
            assert item == "first"
            break
        assert not source.closed

    assert source.closed  # before aclose returned
    assert_only_this_task_left()


async def test_reading_starts_at_once_and_closing_before_reading_closes_the_source():
    source = Source("first", forever="more", every=0.01)

    stream = Paced(source.run(), 0.05)
    await asyncio.sleep(0.05)
    read_ahead = len(source.yielded_at)  # the request to the model goes out before anyone asks
    await stream.aclose()

    assert read_ahead >= 1
    assert source.closed
    assert_only_this_task_left()


async def test_leaving_after_the_source_failed_leaves_no_unretrieved_task_error(caplog):
    # The source fails right after its text; the consumer leaves before asking for more.
    source = Source("only", RuntimeError("unseen"))

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        async with contextlib.aclosing(Paced(source.run(), 0.05)) as stream:
            async for item in stream:
                assert item == "only"
                break
        assert source.closed
        del stream, source  # (the source holds the error, whose traceback holds the reader)
        gc.collect()  # an unretrieved task exception is reported when the task is collected

    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert_only_this_task_left()


async def test_cancelling_the_consumer_closes_the_source():
    source = Source("first", forever="more", every=0.01)
    got: list[object] = []
    first = asyncio.Event()

    async def consume():
        async for item in Paced(source.run(), 0.05):
            got.append(item)
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert got[0] == "first" and "".join(got[1:]).replace("more", "") == ""
    assert source.closed
    assert_only_this_task_left()


# --- no pacing, and the provider wrapper ---------------------------------------------------------

async def test_interval_zero_hands_on_every_piece_as_it_comes():
    pieces = ["a", "bb", "ccc", "d"] + [str(i) for i in range(20)]
    source = Source(*spaced(pieces, 0.001), Notice(9))

    got = [item for item, _ in await timed(Paced(source.run(), 0))]

    assert got == pieces + [Notice(9)]


async def test_paced_provider_gives_the_demo_text_in_fewer_pieces():
    demo = DemoProvider(delay=0.005)
    wrapped = PacedProvider(DemoProvider(delay=0.005), 0.05)

    async def collect(provider):
        async with contextlib.aclosing(provider.stream(HISTORY)) as stream:
            return [item async for item in stream]

    plain, paced_items = await asyncio.gather(collect(demo), collect(wrapped))

    *plain_text, plain_usage = plain
    *paced_text, paced_usage = paced_items
    assert "".join(paced_text) == "".join(plain_text)
    assert all(type(text) is str for text in paced_text)
    assert paced_usage == plain_usage and isinstance(paced_usage, Usage)
    assert len(paced_text) <= len(plain_text) // 3
    assert wrapped.label == demo.label and wrapped.is_demo is True
    await wrapped.check()
    await wrapped.aclose()
