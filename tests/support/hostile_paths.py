"""Every hostile input through the renderer and the views, tallied: how many went through each path
and which got through (there should be none). The browser paths are in hostile_browser.py."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from quart import Quart
from quart.testing import QuartClient

from chatapp.rendering import StreamingMarkdown, render_markdown
from chatapp.web import sse
from tests.support.client import Answer, conversation_url, open_chat, send_form
from tests.support.client import send as send_htmx
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.hostile_checks import (
    fragment_violations, page_violations, refused_violations, sse_violations, tail_violations, valid_message,
)
from tests.support.hostile_corpus import VECTORS
from tests.support.live_server import CANARY_KEY


def pieces(text: str, rng: random.Random, largest: int = 12) -> list[str]:
    """`text` cut into pieces of 1..largest characters, like a model's tokens."""
    out, i = [], 0
    while i < len(text):
        n = rng.randint(1, largest)
        out.append(text[i:i + n])
        i += n
    return out or [text]


# How a model's reasoning reaches the app, taken in turn: the two fields servers put it in, and a
# <think> block at the start of the text (split off by chatapp/llm/thinking.py as it streams).
REASONING_WAYS = ("reasoning_content", "reasoning", "<think>")


def reasoning_reply(thought: str, answer: str, rng: random.Random, way: str, largest: int = 24) -> Reply:
    """`thought` as the model's reasoning (streamed the `way` given), then `answer` as its text."""
    if way == "<think>":
        return Reply(tokens=pieces(f"<think>{thought}</think>\n\n{answer}", rng, largest))
    return Reply(reasoning=pieces(thought, rng, largest), reasoning_field=way, tokens=pieces(answer, rng, largest))


@dataclass
class Tally:
    """How many vectors went through each path, and which got through (should be none)."""

    tried: dict[str, int] = field(default_factory=dict)
    through: dict[str, list[str]] = field(default_factory=dict)

    def record(self, path: str, name: str, problems: list[str]) -> None:
        self.tried[path] = self.tried.get(path, 0) + 1
        self.through.setdefault(path, [])
        if problems:
            self.through[path].append(f"{name}: {problems[:3]}")

    def failures(self) -> list[str]:
        return [f"[{path}] {item}" for path, items in self.through.items() for item in items]


def renderer_paths(vectors: list[tuple[str, str]] = VECTORS, seeds: Iterable[int] = (1, 2, 3)) -> Tally:
    """Each vector rendered at once, and streamed in random pieces (each seed its own cut)."""
    tally = Tally()
    for name, text in vectors:
        tally.record("render_markdown", name, fragment_violations(str(render_markdown(text))))
        problems = tail_violations(sse.text_partial("msg-1-tail", "innerHTML", text))  # the whole text as a tail
        for seed in seeds:
            stream = StreamingMarkdown()
            for piece in pieces(text, random.Random(f"{name}/{seed}")):
                step = stream.feed(piece)
                if step.blocks is not None:
                    problems += fragment_violations(str(step.blocks))
                swap = "innerHTML" if step.replace_tail else "beforeend"
                problems += tail_violations(sse.text_partial("msg-1-tail", swap, step.tail))
            problems += fragment_violations(str(stream.finish()))
        tally.record("StreamingMarkdown", name, problems)
    return tally


@dataclass
class Chat:
    client: QuartClient
    action: str
    csrf: str
    users: list[str] = field(default_factory=list)  # user messages stored, in order


async def new_chat(app: Quart) -> Chat:
    """A new visitor (a client of its own) on the start page, ready to send."""
    client = app.test_client()
    return Chat(client, *await open_chat(client))


async def send(chat: Chat, message: str, *, htmx: bool) -> Answer:
    """`message` sent the htmx way (an event stream) or through the plain form (a page)."""
    return await (send_htmx if htmx else send_form)(chat.client, chat.action, chat.csrf, message)


async def views_paths(app: Quart, fake: FakeOpenAI, vectors: list[tuple[str, str]] = VECTORS) -> Tally:
    """Each vector as the user's message and as the model's answer, then as its reasoning (the answer
    after it the same text): no-JS, htmx, and the page reloaded with all four."""
    tally = Tally()
    for n, (name, text) in enumerate(vectors):
        rng = random.Random(name)
        chat = await new_chat(app)
        # No-JS first: its page holds the conversation so far, so it is checked while that is short.
        for htmx, path in ((False, "no-JS page"), (True, "htmx SSE")):
            user_message = text
            if not valid_message(text):
                refused = await send(chat, text, htmx=htmx)
                tally.record(f"user input refused ({path})", name,
                             refused_violations(text, refused.status_code, refused.body, htmx))
                user_message = "Please answer."
            fake.script(Reply(tokens=pieces(text, rng, 24)))
            tally.record(f"model+user ({path})", name, await _answer_violations(chat, user_message, htmx))
            fake.script(reasoning_reply(text, text, rng, REASONING_WAYS[n % len(REASONING_WAYS)]))
            tally.record(f"reasoning+answer ({path})", name, await _answer_violations(chat, "Think it over.", htmx))
        response = await chat.client.get(conversation_url(chat.action))
        html = (await response.get_data()).decode()
        tally.record("stored page", name,
                     [f"status {response.status_code}"] if response.status_code != 200 else page_violations(html, chat.users))
    return tally


async def _answer_violations(chat: Chat, user_message: str, htmx: bool) -> list[str]:
    """`user_message` sent, the answer the model was scripted to give checked as it streamed."""
    problems: list[str] = []
    answer = await send(chat, user_message, htmx=htmx)
    if answer.status_code != 200:
        problems.append(f"status {answer.status_code}")
    elif htmx:
        problems += sse_violations(answer.body, user_message)
    else:
        problems += page_violations(answer.body, [*chat.users, user_message], live=True)
    chat.users.append(user_message)
    if CANARY_KEY in answer.body:
        problems.append("the API key is in a response")
    return problems
