"""Using the app through Quart's test client as a browser would: open a chat, send a message the
htmx way (an event stream of the answer) or the no-JavaScript way (a form post, the answer as a
page), sign in and out. One way to do each, so a change to the forms is made here once."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bs4 import BeautifulSoup, Tag
from quart.testing import QuartClient
from werkzeug.datastructures import Headers

from tests.support import HTMX


def soup(html: str | bytes) -> BeautifulSoup:
    return BeautifulSoup(html, "html.parser")


def parse_sse(body: str) -> list[tuple[str | None, str]]:
    """(event name or None, data) for each frame of an event stream."""
    frames = []
    for block in re.split(r"\n\n", body.strip("\n")):
        event, data = None, []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
        frames.append((event, "\n".join(data)))
    return frames


async def open_chat(client: QuartClient, path: str = "/") -> tuple[str, str]:
    """Load a chat page like a browser would ("/" or "/new" for a fresh draft): returns (form
    action, csrf token)."""
    response = await client.get(path, follow_redirects=True)
    assert response.status_code == 200
    form = soup(await response.get_data()).select_one("form#composer")
    return form["action"], form.select_one("input[name=csrf_token]")["value"]


def conversation_url(action: str) -> str:
    """The conversation's page, from its form's action (".../messages")."""
    return action.removesuffix("/messages")


@dataclass
class Answer:
    """A send's response, read to the end."""

    status_code: int
    mimetype: str
    headers: Headers
    body: str

    @property
    def frames(self) -> list[tuple[str | None, str]]:
        """The event stream's frames (htmx sends answer with one unless they are refused)."""
        assert self.mimetype == "text/event-stream", f"not an event stream: {self.status_code} {self.body[:200]}"
        return parse_sse(self.body)

    @property
    def final(self) -> Tag:
        """The answer as the stream left it: the frame before `done` replaces the whole article."""
        return soup(self.frames[-2][1]).find("article")


async def send(client: QuartClient, action: str, csrf: str, message: str = "hi", *, fields: dict[str, str] | None = None,
               headers: dict[str, str] | None = None, **options: object) -> Answer:
    """Send a message the way htmx does (the token in a header) and read the answer to its end.
    `fields` are more form fields (preset, model); `options` go to client.post (scope_base)."""
    return await _post(client, action, {"message": message, **(fields or {})},
                       {**HTMX, "X-CSRF-Token": csrf, **(headers or {})}, options)


async def send_form(client: QuartClient, action: str, csrf: str, message: str = "hi", *,
                    fields: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                    **options: object) -> Answer:
    """Send a message as the page's form does without JavaScript (the token a field) and read the
    answer page to its end."""
    return await _post(client, action, {"message": message, "csrf_token": csrf, **(fields or {})}, headers or {},
                       options)


async def _post(client: QuartClient, action: str, form: dict[str, str], headers: dict[str, str],
                options: dict[str, object]) -> Answer:
    response = await client.post(action, form=form, headers=headers, **options)
    body = (await response.get_data()).decode()
    return Answer(response.status_code, response.mimetype, response.headers, body)


async def sign_in(client: QuartClient, password: str):
    """Post the passphrase through the sign-in page's form; the response."""
    page = soup(await (await client.get("/login")).get_data())
    csrf = page.select_one("input[name=csrf_token]")["value"]
    return await client.post("/login", form={"password": password, "csrf_token": csrf})


async def sign_out(client: QuartClient) -> None:
    """Sign out through the button on the chat page."""
    page = soup(await (await client.get("/", follow_redirects=True)).get_data())
    csrf = page.select_one("form[action='/logout'] input[name=csrf_token]")["value"]
    assert (await client.post("/logout", form={"csrf_token": csrf})).status_code == 303


async def sign_in_as(client: QuartClient, name: str, password: str, *, next_url: str | None = None):
    """Sign in with a local account through the sign-in page's form; the response."""
    page = soup(await (await client.get("/sign-in")).get_data())
    csrf = page.select_one("input[name=csrf_token]")["value"]
    form = {"name": name, "password": password, "csrf_token": csrf}
    if next_url is not None:
        form["next"] = next_url
    return await client.post("/sign-in", form=form)


async def form_csrf(client: QuartClient, path: str) -> str:
    """The CSRF token of the first form on a page."""
    page = soup(await (await client.get(path, follow_redirects=True)).get_data())
    return page.select_one("input[name=csrf_token]")["value"]
