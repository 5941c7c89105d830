"""Driving one reply: store the question, stream the answer, save it whatever happens.

The routes only choose how to write the events out (web/streams.py: SSE for htmx, a chunked page
without JavaScript); everything that must hold for both lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from markupsafe import Markup

from . import metrics
from .history import estimate_tokens
from .llm import Ending, LLMError, Provider, Retrying, Thought, Usage
from .llm.thinking import split_after_closing_tag
from .quota import StreamSlot
from .rendering import StreamingMarkdown, StreamStep, render_markdown
from .storage import COMPLETE, ERROR, STOPPED, Final, Message, Store
from .turns import Turn

log = logging.getLogger(__name__)

# How often the partial answer is written while it streams: often enough that a crash or a
# reload loses at most this much, rarely enough that a fast model is not slowed by the disk.
SAVE_EVERY_SECONDS = 1.0

# A stream gives way to the others at least every this many pieces (more often costs a loop turn
# per token; never let one stream with a backlog hold the loop for seconds).
YIELD_EVERY = 16

UNEXPECTED = "Something went wrong on our side while answering. Please try again."
INTERRUPTED = "The server restarted before this answer was complete. Please ask again."
ABANDONED = "The server writing this answer stopped before it was complete. Please ask again."


@dataclass(frozen=True)
class Notice:
    """Word on an answer that has not started yet (the model server is being tried again)."""

    text: str


@dataclass(frozen=True)
class ThoughtStep:
    """A piece of the model's reasoning, rendered as the answer's text is (rendering.StreamStep)."""

    step: StreamStep
    first: bool  # the first piece of reasoning: the reasoning block opens


@dataclass(frozen=True)
class DoneThinking:
    """The answer's text begins after the reasoning: the whole reasoning, rendered once, and how
    long the model thought, so the reasoning block can close with its summary."""

    html: Markup
    seconds: float


# What stream_reply yields, in order: the answer as it starts (a Message, busy), then Notices
# (before the model's first piece), ThoughtSteps, a DoneThinking, StreamSteps, and the finished Message.
Event = StreamStep | ThoughtStep | DoneThinking | Notice | Message


class Answer:
    """An answer as it is written: its text and its reasoning, each rendered block by block, and
    when each began."""

    def __init__(self) -> None:
        self.text = StreamingMarkdown()
        self.reasoning = StreamingMarkdown()
        self.first_piece_at: float | None = None
        self.thinking_since: float | None = None
        self.thinking_seconds: float | None = None  # set once the answer's text begins
        self.ending: str | None = None

    def feed(self, piece: str | Thought) -> list[StreamStep | ThoughtStep | DoneThinking]:
        now = time.monotonic()
        if self.first_piece_at is None:
            self.first_piece_at = now
        if isinstance(piece, Thought):
            first = self.thinking_since is None
            if first:
                self.thinking_since = now
            return [ThoughtStep(self.reasoning.feed(piece.text), first)]
        events: list[StreamStep | ThoughtStep | DoneThinking] = []
        if self.thinking_since is not None and self.thinking_seconds is None:
            self.thinking_seconds = now - self.thinking_since
            events.append(DoneThinking(self.reasoning.finish(), self.thinking_seconds))
        if self.thinking_seconds is not None and not self.text.text:
            piece = piece.lstrip("\r\n")  # the model's break between its reasoning and its answer
            if not piece:
                return events
        events.append(self.text.feed(piece))
        return events

    def final(self, status: str, error: str | None, usage: Usage) -> Final:
        thinking_seconds = self.thinking_seconds
        if thinking_seconds is None and self.thinking_since is not None:  # it never got past thinking
            thinking_seconds = time.monotonic() - self.thinking_since
        reasoning, content = self.reasoning.text, self.text.text
        html, reasoning_html = str(self.text.finish()), str(self.reasoning.finish()) if reasoning else None
        if not reasoning and "</think" in content and (split := split_after_closing_tag(content)):
            reasoning, content = split  # a block the chat template opened: known only now
            html, reasoning_html = str(render_markdown(content)), str(render_markdown(reasoning))
        return Final(
            content=content, html=html, status=status, error=error,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            reasoning=reasoning, reasoning_html=reasoning_html, thinking_seconds=thinking_seconds,
            finish_reason=self.ending)


def thought_for(seconds: float | None) -> str:
    """The reasoning's summary once it is done: "Thought for 42 s"."""
    if seconds is None:
        return "Thought"
    whole = round(seconds)
    if whole < 1:
        return "Thought for less than a second"
    minutes, rest = divmod(whole, 60)
    if not minutes:
        return f"Thought for {rest} s"
    return f"Thought for {minutes} min" + (f" {rest} s" if rest else "")


def retry_notice(retrying: Retrying) -> str:
    cause = "is busy" if retrying.reason == "rate_limit" else "did not answer"
    return (f"The model server {cause}; trying again in {retrying.wait:.0f} s "
            f"(try {retrying.attempt} of {retrying.tries})…")


async def settle_abandoned(store: Store, messages: list[Message], *, silent_for: float) -> list[Message]:
    """Answers still marked `streaming` whose process stopped saying it is alive (killed, its host
    lost), or silent for longer than any live stream can be (the response never started), are
    saved as interrupted with their text so far, so they show as cut off and can be tried again
    instead of looking busy forever. Any process does it, the first to show one."""
    settled = []
    cutoff = datetime.now(UTC) - timedelta(seconds=silent_for)
    for message in messages:
        if message.busy and (datetime.fromisoformat(message.updated_at) < cutoff
                             or (message.writer is not None and await store.writer_gone(message.writer))):
            log.info("settling an abandoned answer message_id=%s", message.id)
            reasoning_html = str(render_markdown(message.reasoning)) if message.reasoning else None
            message = await store.finish_message(message.id, Final(
                content=message.content, html=str(render_markdown(message.content)), status=STOPPED,
                error=ABANDONED, reasoning=message.reasoning, reasoning_html=reasoning_html,
                thinking_seconds=message.thinking_seconds, finish_reason=message.finish_reason,
            )) or message
        settled.append(message)
    return settled


class PartialSaver:
    """Writes an answer's text so far while it streams: its first piece at once, then at most once
    a second, and at the latest a second after its last piece (a model pausing to think must not
    leave its last words unsaved for a reload on another replica, nor a replica killed lose a
    young answer whole). One write at a time, so an older text never lands after a newer one."""

    def __init__(self, store: Store, message_id: int, answer: Answer):
        self._store, self._message_id, self._answer = store, message_id, answer
        self._saved_at = time.monotonic() - SAVE_EVERY_SECONDS  # the first piece is saved at once
        # The next save waits on a timer, and runs in a task only once due: a task sleeping its
        # second away for each open stream would cost memory and a task a second.
        self._due: asyncio.TimerHandle | None = None
        self._saving: asyncio.Task | None = None
        self._unsaved = False  # text came since the last save started
        self.gone = False  # the answer is no longer being written: its conversation was deleted

    def changed(self) -> None:
        self._unsaved = True
        if self._due is None and self._saving is None:
            self._schedule()

    def _schedule(self) -> None:
        delay = max(self._saved_at + SAVE_EVERY_SECONDS - time.monotonic(), 0)
        self._due = asyncio.get_running_loop().call_later(delay, self._start)

    def _start(self) -> None:
        self._due, self._unsaved = None, False
        self._saving = asyncio.ensure_future(self._save())

    async def _save(self) -> None:
        try:
            self.gone = not await self._store.save_partial(self._message_id, self._answer.text.text,
                                                           self._answer.reasoning.text)
        except Exception:  # a busy or failing database: the final save will try again
            log.exception("could not save the answer so far message_id=%s", self._message_id)
        finally:
            self._saving = None
        self._saved_at = time.monotonic()
        if self._unsaved and not self.gone:  # text that came while this save ran gets its own
            self._schedule()

    def close(self) -> None:
        if self._due is not None:
            self._due.cancel()
        if self._saving is not None:
            self._saving.cancel()


async def stream_reply(
    store: Store, provider: Provider, turn: Turn, *, request_id: str, slot: StreamSlot | None = None
) -> AsyncGenerator[Event, None]:
    """Yield the answer as it starts (busy), a ThoughtStep per piece of reasoning, a DoneThinking
    as its text begins, a StreamStep per piece of text (before all that, a Notice while the model
    server is tried again), then the finished Message.

    Everything after the first yield is covered: the answer is saved in `finally`, so it survives
    an upstream error, a bug, or the client leaving (CancelledError, re-raised: the caller is being
    torn down and yields nothing more). `slot`, the answer's place among those streaming at once, is
    given back at the end.
    """
    answer = Answer()
    status, error, usage, error_kind = STOPPED, None, None, None
    stream_id = slot.id if slot is not None and slot.claimed else None
    saver = PartialSaver(store, turn.assistant.id, answer)
    started = time.monotonic()
    pieces_read = 0
    metrics.ACTIVE_STREAMS.inc()
    try:
        # aclosing: however this generator ends, the upstream response is closed at once.
        async with contextlib.aclosing(provider.stream(turn.history, turn.assistant.model)) as pieces:
            # The request to the model goes out first (a paced provider reads ahead in a task of
            # its own: one turn of the loop starts it); the page's first frame is written while
            # the model server works on it.
            await asyncio.sleep(0)
            yield turn.assistant
            async for piece in pieces:
                if isinstance(piece, Usage):
                    usage = piece
                    continue
                if isinstance(piece, Retrying):
                    metrics.RETRIES.inc()
                    yield Notice(retry_notice(piece))
                    continue
                if isinstance(piece, Ending):
                    answer.ending = piece.reason
                    continue
                if saver.gone:  # deleted by another process (this one's answers are stopped first)
                    log.info("answer no longer being written (its conversation was deleted) "
                             "request_id=%s message_id=%s", request_id, turn.assistant.id)
                    break
                pieces_read += 1
                for event in answer.feed(piece):
                    yield event
                if pieces_read % YIELD_EVERY == 0:
                    # Let other streams run: with the upstream's bytes already buffered, reading
                    # does not wait, and one stream that fell behind could hold the event loop.
                    await asyncio.sleep(0)
                saver.changed()
        status = STOPPED if saver.gone else COMPLETE
    except LLMError as failure:
        status, error, error_kind = ERROR, f"{failure.user_message} (request id {request_id})", failure.kind
        log.warning(
            "upstream error kind=%s request_id=%s message_id=%s detail=%s",
            failure.kind, request_id, turn.assistant.id, failure.detail,
        )
    except Exception:
        status, error = ERROR, f"{UNEXPECTED} (request id {request_id})"
        log.exception("reply failed request_id=%s message_id=%s", request_id, turn.assistant.id)
    finally:
        saver.close()
        metrics.ACTIVE_STREAMS.dec()
        if usage is None and status == ERROR and answer.first_piece_at is None:
            usage = Usage(0, 0)  # refused or unreachable before any text: the model did no work
        elif usage is None:  # the server sent none: count what was sent and received, roughly
            prompt = estimate_tokens("".join(m["content"] for m in turn.history))
            usage = Usage(prompt, estimate_tokens(answer.text.text) + estimate_tokens(answer.reasoning.text))
        metrics.answer_ended(
            status=status, first_token=answer.first_piece_at and answer.first_piece_at - started,
            duration=time.monotonic() - started, tokens=usage.completion_tokens, error_kind=error_kind,
            client_left=status == STOPPED and not (slot is not None and slot.interrupted),
        )
        if status == STOPPED and slot is not None and slot.interrupted:
            error = f"{INTERRUPTED} (request id {request_id})"
            log.info("answer interrupted by shutdown request_id=%s message_id=%s", request_id, turn.assistant.id)
        elif status == STOPPED:
            log.info("client left mid-answer request_id=%s message_id=%s", request_id, turn.assistant.id)
        # A regeneration that failed, or was stopped before any text: the answer it was to replace
        # comes back (in the same transaction), rather than leave the question with no answer.
        gave_nothing = status == ERROR or not answer.text.text.strip()
        restore = turn.replaced if turn.replaced and not turn.new_question and gave_nothing else []
        try:
            final = answer.final(status, error, usage)
            saved = await store.finish_message(turn.assistant.id, final, owner=turn.owner or None,
                                               stream_id=stream_id, restore=restore)
            if slot is not None:
                slot.claimed = False  # saving gave the owner's place back
            # None: the conversation was deleted meanwhile; the tokens were counted all the same.
            finished = saved or dataclasses.replace(turn.assistant, **{
                **dataclasses.asdict(final), "html": Markup(final.html),
                "reasoning_html": Markup(final.reasoning_html) if final.reasoning_html is not None else None})
        finally:
            # Only now: a server stopping waits for the slots to empty before it closes the database.
            if slot is not None:
                slot.release()
    yield finished
