"""A fake OpenAI-compatible server that speaks the real Chat Completions wire format.

It is a plain asyncio HTTP/1.1 server running its own event loop in a background thread, so the
real `openai` SDK can talk to it from pytest-asyncio tests, from sync browser tests, and from an
app served by Hypercorn in another thread or process.

    fake = FakeOpenAI().start()
    fake.script(Reply(tokens=["Hel", "lo"]))       # queue the next response(s)
    fake.script(Reply(reasoning=["Hm", "m."], tokens=["Hi"], finish_reason="length"))  # thinks first
    fake.script(Reply(raw=open("x.sse", "rb").read(), raw_split=7))  # a recorded body, as it is
    client = AsyncOpenAI(base_url=fake.base_url, api_key="sk-test")
    ...
    fake.requests[-1].body["messages"]; fake.wait_for_disconnect(1.0); fake.stop()

One request per connection (`Connection: close`), so a client closing the socket mid-stream is
seen as end-of-file on the read side, even while the server is stalling.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 429: "Too Many Requests", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable"}
ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
               404: "invalid_request_error", 429: "rate_limit_exceeded", 500: "server_error"}


@dataclass
class Reply:
    """One scripted response. `status` other than 200 answers with an OpenAI-shaped error body."""

    tokens: list[str] = field(default_factory=lambda: ["Hello", " from", " the", " fake", " model", "."])
    delay: float = 0.0                  # seconds before each content chunk
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None                    # error JSON (default: {"error": {...}} for the status)
    stall_after: int | None = None      # after this many tokens, go quiet for `stall` seconds
    stall: float = 5.0
    drop_after: int | None = None       # after this many tokens, abort the TCP connection
    malformed_after: int | None = None  # after this many tokens, send a chunk that is not JSON
    reject_stream_options: bool = False  # 400 if the request carries stream_options
    usage: tuple[int, int] | None = None  # (prompt, completion); default: counted from the request
    reasoning: list[str] = field(default_factory=list)  # reasoning pieces, sent before the tokens
    reasoning_field: str = "reasoning_content"  # or "reasoning" (the field name differs by server)
    reasoning_delay: float = 0.0        # seconds before each reasoning chunk
    finish_reason: str | None = "stop"  # on the chunk after the last token (None: null)
    # A whole response body sent as it is instead (an SSE body for status 200, chunked; any other
    # status: the error body, with `content_type`), in writes of `raw_split` bytes (None: one
    # write) `delay` seconds apart. The dialect fixtures replay servers' own bytes through this.
    raw: bytes | None = None
    raw_split: int | None = None
    content_type: str = "application/json"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any                # parsed JSON, or None
    at: float                # time.monotonic()


class FakeOpenAI:
    def __init__(self, default: Reply | None = None, model: str = "fake-model") -> None:
        self.default = self._initial_default = default or Reply()
        self.model = model
        # GET /v1/models: the ids listed (None: `model` alone), or this status with an error body.
        self.listed: list[str] | None = None
        self.models_status = 200
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: deque[Reply] = deque()
        self._requests: list[Request] = []
        self._model_lists: list[Request] = []
        self._disconnects: list[float] = []
        self._completed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()
        self.port = 0

    # --- controls (any thread) ---------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    @property
    def requests(self) -> list[Request]:
        """Every request but those for the model list."""
        with self._lock:
            return list(self._requests)

    @property
    def model_lists(self) -> list[Request]:
        """The requests for the model list (GET /v1/models)."""
        with self._lock:
            return list(self._model_lists)

    @property
    def disconnects(self) -> list[float]:
        """time.monotonic() of each stream whose client left before it ended."""
        with self._lock:
            return list(self._disconnects)

    @property
    def completed(self) -> int:
        """Streams sent to the end ([DONE] and the last chunk written)."""
        with self._lock:
            return self._completed

    def wait_for_disconnect(self, timeout: float, count: int = 1) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self._disconnects) >= count, timeout)

    def reset(self) -> None:
        """Forget the script, the records and any change to `default` (between tests)."""
        with self._lock:
            self.default = self._initial_default
            self.listed, self.models_status = None, 200
            self._queue.clear()
            self._requests.clear()
            self._model_lists.clear()
            self._disconnects.clear()
            self._completed = 0

    def start(self) -> FakeOpenAI:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("fake OpenAI server did not start")
        return self

    def stop(self) -> None:
        if self._loop and self._thread:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- server (its own loop) ---------------------------------------------------------------
    def _run(self, ready: threading.Event) -> None:
        self._loop = loop = asyncio.new_event_loop()
        self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()

    async def _shutdown(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        eof: asyncio.Task | None = None
        try:
            request = await self._read_request(reader)
            if request is None:
                return
            with self._lock:  # model lists apart: the app asks for them in the background
                (self._model_lists if request.path == "/v1/models" else self._requests).append(request)
            if request.method == "GET" and request.path == "/v1/models":
                if self.models_status != 200:
                    return await self._send_json(writer, self.models_status, _error(self.models_status, "no list"))
                models = {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "fake"}
                                                     for name in (self.listed or [self.model])]}
                return await self._send_json(writer, 200, models)
            if request.method != "POST" or request.path != "/v1/chat/completions":
                return await self._send_json(writer, 404, _error(404, f"No route {request.path}"))
            with self._lock:
                reply = self._queue.popleft() if self._queue else self.default
            body = request.body if isinstance(request.body, dict) else {}
            if reply.reject_stream_options and "stream_options" in body:
                error = _error(400, "Unrecognized request argument supplied: stream_options", "stream_options")
                return await self._send_json(writer, 400, error)
            if reply.status != 200 and reply.raw is not None:
                return await self._send_raw(writer, reply)
            if reply.status != 200:
                return await self._send_json(writer, reply.status, reply.body or _error(reply.status), reply.headers)
            eof = asyncio.ensure_future(reader.read(1))  # '' when the client closes the socket
            if reply.raw is not None:
                return await self._replay(writer, reply, eof)
            await self._send_stream(writer, reply, body, eof)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if eof is not None:
                eof.cancel()
            writer.close()
            self._tasks.discard(task)

    async def _read_request(self, reader: asyncio.StreamReader) -> Request | None:
        head = await reader.readuntil(b"\r\n\r\n")
        line, *header_lines = head.decode("latin-1").split("\r\n")
        if not line:
            return None
        method, target, _version = line.split(" ", 2)
        headers = {}
        for header in filter(None, header_lines):
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(headers.get("content-length", 0)))
        body = json.loads(raw) if raw else None
        return Request(method, target.split("?")[0], headers, body, time.monotonic())

    async def _send_json(self, writer: asyncio.StreamWriter, status: int, data: Any,
                         headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        extra = {"content-type": "application/json", "content-length": str(len(payload)), **(headers or {})}
        writer.write(_head(status, extra) + payload)
        await writer.drain()

    async def _send_raw(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        assert reply.raw is not None
        extra = {"content-type": reply.content_type, "content-length": str(len(reply.raw)), **reply.headers}
        writer.write(_head(reply.status, extra) + reply.raw)
        await writer.drain()

    async def _replay(self, writer: asyncio.StreamWriter, reply: Reply, eof: asyncio.Task) -> None:
        """A recorded event-stream body, byte for byte, in writes of `raw_split` bytes."""
        assert reply.raw is not None
        raw, step = reply.raw, reply.raw_split or len(reply.raw) or 1
        writer.write(_head(200, {"content-type": "text/event-stream; charset=utf-8",
                                 "transfer-encoding": "chunked", "cache-control": "no-cache", **reply.headers}))

        async def body() -> bool:
            for start in range(0, len(raw), step):
                if eof.done():
                    raise ConnectionResetError("client went away")
                if start and reply.delay > 0:
                    await asyncio.wait([eof], timeout=reply.delay)
                writer.write(_chunked(raw[start:start + step]))
                await writer.drain()
            return True

        await self._chunked_body(writer, body)

    async def _chunked_body(self, writer: asyncio.StreamWriter, body: Callable[[], Awaitable[bool]]) -> None:
        """Sends a chunked body (`body` writes it, False if it cut the connection on purpose) and
        ends it; a client that left meanwhile is counted as a disconnect."""
        try:
            if not await body():
                return
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            with self._lock:
                self._completed += 1
        except ConnectionError:
            with self._changed:
                self._disconnects.append(time.monotonic())
                self._changed.notify_all()

    async def _send_stream(self, writer: asyncio.StreamWriter, reply: Reply, body: dict, eof: asyncio.Task) -> None:
        model = body.get("model", self.model)
        created = int(time.time())
        chunk_id = f"chatcmpl-fake{len(self._requests)}"

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "system_fingerprint": "fp_fake", "choices": [
                        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        async def send(data: str) -> None:
            if eof.done():
                raise ConnectionResetError("client went away")
            writer.write(_chunked(f"data: {data}\n\n".encode()))
            await writer.drain()

        async def pause(seconds: float) -> None:
            if seconds > 0:
                await asyncio.wait([eof], timeout=seconds)

        writer.write(_head(200, {"content-type": "text/event-stream; charset=utf-8",
                                 "transfer-encoding": "chunked", "cache-control": "no-cache"}))

        async def events() -> bool:
            await send(json.dumps(chunk({"role": "assistant", "content": ""})))
            for thought in reply.reasoning:
                await pause(reply.reasoning_delay)
                await send(json.dumps(chunk({reply.reasoning_field: thought})))
            for sent, token in enumerate(reply.tokens):
                if sent == reply.stall_after:
                    await pause(reply.stall)
                if sent == reply.drop_after:
                    writer.transport.abort()
                    return False
                if sent == reply.malformed_after:
                    await send('{"id": "chatcmpl-broken", "choices": [{"delta": ')
                await pause(reply.delay)
                await send(json.dumps(chunk({"content": token})))
            if len(reply.tokens) == reply.stall_after:
                await pause(reply.stall)
            await send(json.dumps(chunk({}, reply.finish_reason)))
            if (body.get("stream_options") or {}).get("include_usage"):
                counted = (_count(body.get("messages")), len(reply.reasoning) + len(reply.tokens))
                prompt, completion = reply.usage or counted
                usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                         "total_tokens": prompt + completion}
                await send(json.dumps({**chunk({}), "choices": [], "usage": usage}))
            await send("[DONE]")
            return True

        await self._chunked_body(writer, events)


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", "connection: close",
             "x-request-id: req_fake", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _error(status: int, message: str | None = None, param: str | None = None) -> dict:
    message = message or f"Fake upstream error {status}"
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"),
                      "param": param, "code": None}}


def _count(messages: Any) -> int:
    """A rough prompt-token count: one per four characters."""
    return sum(len(str(m.get("content", ""))) for m in messages or []) // 4 + 1
