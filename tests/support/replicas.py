"""Three replicas of the real app behind nginx, as issue 14 deploys them: separate processes and
ports, no shared files, one PostgreSQL database, one SECRET_KEY, each trusting nginx's forwarded
headers (CHATAPP_TRUSTED_PROXIES=127.0.0.1, CHATAPP_HTTPS=true); nginx runs deploy/nginx.conf
(tests/support/nginx.py). Any replica may be killed with SIGKILL, as a crashed host would be.

    with Replicas(directory, database_url, fake.base_url) as replicas:
        async with visitor(replicas.nginx) as browser:
            turn = await take_turn(browser, "Hello")
        replicas.kill(replicas.serving(turn.answer_id) ...)

`take_turn` is what a browser with JavaScript does for one question: load the conversation's page
(wherever nginx sends it), read its composer form, post the question the htmx way and read the
answer's event stream to its end. The tests and bench/replicas.py share it.
"""

from __future__ import annotations

import html
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx2

from .live_server import LiveServer, Started, app_environment
from .nginx import Nginx

SECRET_KEY = "replicas-test-secret-0123456789abcdef01"

_FORM = re.compile(r'<form id="composer"[^>]*action="([^"]+)"')
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_SEND_TOKEN = re.compile(r'name="send_token" value="([^"]*)"')
_ANSWER = re.compile(r'<article id="msg-([^"]+)" class="message assistant"')
_FINAL = re.compile(r'data-role="assistant"\s+data-status="(\w+)" aria-busy="false"')
_ANSWER_STATUS = re.compile(r'data-role="assistant"\s+data-status="(\w+)"')
_ERROR_NOTE = re.compile(r'data-role="error" role="alert">([^<]*)<')


class Replica(LiveServer):
    """One replica: the app under Hypercorn (its master and worker processes), named `name`."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.killed = False
        super().__init__({**env, "CHATAPP_REPLICA": name}, log_path)

    @property
    def pids(self) -> list[int]:
        """Its processes: the Hypercorn master, then its workers (and their helpers)."""
        return [self._process.pid, *_descendants(self._process.pid)]

    @property
    def address(self) -> str:
        """As nginx names it in $upstream_addr."""
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL the replica, workers first (they hold the listening socket and the streams),
        then their master, as a host that dies takes them all at once: no process is told, no
        answer is saved on the way out. Only processes this replica started are signalled."""
        master, *workers = self.pids
        for pid in [*workers, master]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._process.wait(timeout=10)
        self.killed = True

    def stop(self) -> None:
        if self.killed:
            self._log.close()
        else:
            super().stop()


def _descendants(pid: int) -> list[int]:
    """The children of `pid`, theirs, and so on (from /proc), deepest last."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


class Replicas(Started):
    """`count` replicas on the database at `database_url`, answering with the model server at
    `model_url`, behind nginx; logs and nginx's files in `directory`. `settings` are extra
    environment variables for every replica."""

    def __init__(self, directory: Path, database_url: str, model_url: str, *, count: int = 3,
                 connections: int = 4096, **settings: str) -> None:
        env = app_environment(model_url, directory / "unused.db", **{
            "SECRET_KEY": SECRET_KEY, "CHATAPP_DATABASE_URL": database_url,
            "CHATAPP_TRUSTED_PROXIES": "127.0.0.1", "CHATAPP_HTTPS": "true", **settings,
        })
        del env["CHATAPP_DATABASE"]  # no file shared, or used: the database is PostgreSQL's
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.database_url = directory, database_url
        self._env, self._count, self._connections = env, count, connections
        self.replicas: list[Replica] = []
        self.nginx: Nginx | None = None


    def start(self) -> None:
        # The first migrates the database alone; the others start together (on a shared machine
        # that is most of the start-up time).
        try:
            names = [f"replica{i + 1}" for i in range(self._count)]
            self.replicas.append(self._start(names[0]))
            with ThreadPoolExecutor(len(names)) as pool:
                self.replicas += pool.map(self._start, names[1:])
            self.nginx = Nginx([replica.port for replica in self.replicas], self.directory / "nginx",
                               connections=self._connections)
            self.nginx.start()
        except BaseException:
            self.stop()
            raise

    def _start(self, name: str) -> Replica:
        return Replica(name, self._env, self.directory / f"{name}.log")

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for replica in self.replicas:
            replica.stop()

    @property
    def front(self) -> Nginx:
        if self.nginx is None:
            raise RuntimeError("the replicas are not started")
        return self.nginx

    def by_address(self, address: str) -> Replica:
        return next(replica for replica in self.replicas if replica.address == address)

    def log(self, replica: Replica) -> str:
        return (self.directory / f"{replica.name}.log").read_text(errors="replace")


def as_nginx_sends(replica: Replica, browser: httpx2.AsyncClient) -> httpx2.AsyncClient:
    """A client of one replica, straight to its port, carrying `browser`'s cookies and the headers
    nginx adds (the browser's next request, which nginx happened to send to `replica`)."""
    cookies = "; ".join(f"{cookie.name}={cookie.value}" for cookie in browser.cookies.jar)
    headers = {"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "https", "Cookie": cookies}
    return httpx2.AsyncClient(base_url=replica.url, headers=headers, trust_env=False, timeout=30.0)


async def active_streams(replica: Replica) -> int:
    """The answers `replica` is streaming now, from its /metrics."""
    async with httpx2.AsyncClient(base_url=replica.url, trust_env=False, timeout=10.0,
                                  headers={"X-Forwarded-Proto": "https"}) as client:
        response = await client.get("/metrics")
    response.raise_for_status()
    found = re.search(r"^chatapp_active_streams\{[^}]*\} (\S+)$", response.text, re.MULTILINE)
    return round(float(found.group(1))) if found else 0


# --- a browser, through nginx ---------------------------------------------------------------

def visitor(nginx: Nginx, *, timeout: float = 60.0, keep_alive: bool = True) -> httpx2.AsyncClient:
    """One browser (its own cookies: its own session) talking to nginx over HTTPS. nginx picks a
    replica for every request, on a kept connection or not; `keep_alive=False` opens a new
    connection for each request all the same."""
    limits = httpx2.Limits() if keep_alive else httpx2.Limits(max_keepalive_connections=0)
    return httpx2.AsyncClient(base_url=nginx.url, verify=nginx.ssl_context(), trust_env=False,
                              follow_redirects=True, limits=limits,
                              timeout=httpx2.Timeout(timeout, connect=30.0, pool=30.0))


@dataclass
class Composer:
    """What a browser reads off a conversation's page to send a question."""

    action: str
    csrf: str
    send_token: str

    @property
    def conversation(self) -> str:
        """The conversation's page, from the form's action (".../messages")."""
        return self.action.removesuffix("/messages")

    @property
    def conversation_id(self) -> str:
        return self.action.split("/")[2]


def composer(page: str) -> Composer:
    """The composer form of a chat page; ValueError if the page has none."""
    action, csrf, token = _FORM.search(page), _CSRF.search(page), _SEND_TOKEN.search(page)
    if action is None or csrf is None:
        raise ValueError("the page has no composer form")
    return Composer(html.unescape(action.group(1)), html.unescape(csrf.group(1)),
                    html.unescape(token.group(1)) if token else "")


def last_answer(page: str) -> tuple[str | None, str | None]:
    """The status of a chat page's last answer, and the error it shows (None: none)."""
    statuses = _ANSWER_STATUS.findall(page)
    if not statuses:
        return None, None
    tail = page[page.rfind('data-role="assistant"'):]
    error = _ERROR_NOTE.search(tail)
    return statuses[-1], html.unescape(error.group(1)).strip() if error else None


@dataclass
class Turn:
    """One question and how its answer's stream went."""

    question: str
    conversation: str = ""             # the conversation's page, once known
    answer_id: str | None = None       # the answer's public id, from the stream's first frame
    outcome: str = "not sent"          # complete | cut (the stream ended before its end) | error
    reason: str = ""
    page_status: int | None = None
    post_status: int | None = None
    final_status: str | None = None    # the answer's data-status in the stream's last frame
    received: str = ""                 # the stream as received, every frame
    started: float = 0.0               # time.monotonic() of the POST
    ended: float = 0.0
    pieces: int = 0                    # frames between the first and the last
    first_piece: float | None = None   # time.monotonic() of the first piece of text
    composer: Composer | None = field(default=None, repr=False)

    @property
    def conversation_id(self) -> str:
        return self.conversation.rsplit("/", 1)[-1]


async def open_page(browser: httpx2.AsyncClient, path: str) -> tuple[int, Composer | None]:
    """GET a chat page ("/" for this browser's newest or a fresh one): its status and composer."""
    page = await browser.get(path)
    if page.status_code != 200:
        return page.status_code, None
    return 200, composer(page.text)


async def take_turn(browser: httpx2.AsyncClient, question: str, *, path: str = "/", turn: Turn | None = None) -> Turn:
    """Load `path` (the conversation's page), then send `question` the htmx way and read the
    answer's stream to its close event. Every failure is recorded in the Turn, never raised
    (but cancellation is), so a load can count them. Pass `turn` to watch it while it streams."""
    turn = turn or Turn(question)
    try:
        turn.page_status, form = await open_page(browser, path)
        if form is None:
            turn.outcome, turn.reason = "error", f"GET {path} answered {turn.page_status}"
            return turn
        turn.composer, turn.conversation = form, form.conversation
        await _stream(browser, form, turn)
    except httpx2.HTTPError as error:
        if turn.post_status == 200:  # the stream had begun: it was cut off
            turn.outcome = "cut"
        else:
            turn.outcome = "error"
        turn.reason = f"{type(error).__name__}: {error}"
    finally:
        turn.ended = time.monotonic()
    return turn


async def _stream(browser: httpx2.AsyncClient, form: Composer, turn: Turn) -> None:
    headers = {"HX-Request": "true", "X-CSRF-Token": form.csrf}
    data = {"message": turn.question, "send_token": form.send_token}
    turn.started = time.monotonic()
    async with browser.stream("POST", form.action, data=data, headers=headers) as response:
        turn.post_status = response.status_code
        if response.status_code != 200:
            turn.outcome, turn.reason = "error", f"POST answered {response.status_code}"
            return
        buffer = ""
        async for text in response.aiter_text():
            turn.received += text
            buffer += text
            *frames, buffer = buffer.split("\n\n")
            for event, data in map(_frame, frames):
                if turn.answer_id is None:
                    found = _ANSWER.search(data)
                    if found is None:
                        turn.outcome, turn.reason = "error", "the first frame has no answer"
                        return
                    turn.answer_id = found.group(1)
                elif event == "done":
                    complete = turn.final_status == "complete"
                    turn.outcome = "complete" if complete else "error"
                    turn.reason = "" if complete else f"the answer ended {turn.final_status}: {turn.reason}"
                    return
                elif (final := _FINAL.search(data)) is not None:
                    turn.final_status = final.group(1)
                    if (note := _ERROR_NOTE.search(data)) is not None:
                        turn.reason = html.unescape(note.group(1)).strip()
                else:
                    turn.pieces += 1
                    if turn.first_piece is None:
                        turn.first_piece = time.monotonic()
        turn.outcome, turn.reason = "cut", "the stream ended without its close event"


def _frame(frame: str) -> tuple[str | None, str]:
    """(event name or None, data) of one event-stream frame."""
    event, data = None, []
    for line in frame.split("\n"):
        name, _, value = line.partition(": ")
        if name == "event":
            event = value
        elif name == "data" or line == "data:":
            data.append(value)
    return event, "\n".join(data)
