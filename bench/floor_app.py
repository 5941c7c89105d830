"""The floor of the stack for a stream's start: the least a Quart app under Hypercorn must do to
relay the model's answer as Server-Sent Events through chatapp's own provider, and nothing else.

    hypercorn --workers 2 'bench.floor_app:create_app()'     (bench/load.py --floor runs it)

GET / answers a page with a composer form (an action naming a random conversation, a token), as
bench/load.py's clients expect. POST /c/<id>/messages reads the form, asks the model (chatapp.llm's
OpenAIProvider, paced as the app paces it: the openai SDK on its aiohttp transport, the same
request) in a task started at once, answers an SSE response whose first frame (a busy bubble) goes
out at once, then a frame per paced piece of text, a final frame and the close event, in the
shapes bench/load.py reads. No session, no CSRF check, no database, no templates, no Markdown:
what the app does beyond this is what it adds to the time to first token and to a start's CPU.

Settings from the environment, as the app's: OPENAI_BASE_URL, OPENAI_MODEL, CHATAPP_STREAM_INTERVAL_MS
(50), CHATAPP_CONNECT_TIMEOUT (10), CHATAPP_FIRST_TOKEN_TIMEOUT (30).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator

from markupsafe import escape
from quart import Quart, Response, request

from chatapp.llm import OpenAIProvider, PacedProvider, Provider

PAGE = ('<!doctype html><title>floor</title><form id="composer" method="post" action="/c/{id}/messages">'
        '<input type="hidden" name="csrf_token" value="floor"><textarea name="message"></textarea></form>')


def _frame(html: str) -> bytes:
    return ("".join(f"data: {line}\n" for line in html.split("\n")) + "\n").encode()


def create_app() -> Quart:
    app = Quart(__name__)
    providers: list[Provider] = []

    @app.before_serving
    async def _open() -> None:
        first_token = float(os.environ.get("CHATAPP_FIRST_TOKEN_TIMEOUT", "30"))
        provider = OpenAIProvider(api_key=os.environ.get("OPENAI_API_KEY", "no-key-needed"),
                                  base_url=os.environ["OPENAI_BASE_URL"], model=os.environ.get("OPENAI_MODEL", "m"),
                                  connect_timeout=float(os.environ.get("CHATAPP_CONNECT_TIMEOUT", "10")),
                                  first_token_timeout=first_token, idle_timeout=first_token, max_retries=0)
        interval = int(os.environ.get("CHATAPP_STREAM_INTERVAL_MS", "50")) / 1000
        providers.append(PacedProvider(provider, interval) if interval else provider)

    @app.after_serving
    async def _close() -> None:
        await providers[0].aclose()

    @app.get("/")
    async def index() -> str:
        return PAGE.format(id=secrets.token_hex(8))

    @app.get("/healthz")
    async def healthz() -> str:
        return "ok"

    @app.post("/c/<conversation_id>/messages")
    async def send(conversation_id: str) -> Response:
        form = await request.form
        pieces = providers[0].stream([{"role": "user", "content": form["message"]}])
        first = asyncio.ensure_future(anext(pieces, None))  # the request goes out while the first frame is written

        async def frames() -> AsyncIterator[bytes]:
            try:
                yield _frame('<div id="answer" aria-busy="true"></div>')
                piece = await first
                while piece is not None:
                    if isinstance(piece, str):
                        yield _frame(str(escape(piece)))
                    piece = await anext(pieces, None)
                yield _frame('<div hx-swap="outerHTML" data-status="complete" aria-busy="false"></div>')
                yield b"event: done\ndata: \n\n"
            finally:
                first.cancel()
                await pieces.aclose()

        response = Response(frames(), mimetype="text/event-stream")
        response.timeout = None
        return response

    return app
