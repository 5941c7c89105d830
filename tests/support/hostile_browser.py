"""Every hostile input in Chromium, as the model's answers and the user's messages, then as the
model's reasoning (and the answer after it), with JavaScript on (htmx streaming, then the page
reloaded) and off (the plain form, the answer streamed as a page), watching for dialogs,
`window.__pwned`, CSP violations, script errors and requests to other hosts."""

from __future__ import annotations

import random
import re

from chatapp.rendering import _open_fence
from tests.support.browser import send
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.hostile_checks import frame_violations, page_violations, soup, valid_message
from tests.support.hostile_corpus import VECTORS
from tests.support.hostile_paths import REASONING_WAYS, Tally, pieces, reasoning_reply

# Installed by the browser before any page script, so the page's CSP does not apply to it.
WATCH_PAGE = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', e => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


def answers(vectors: list[tuple[str, str]] = VECTORS, size: int = 7000) -> list[list[tuple[str, str]]]:
    """The corpus cut into answers of several vectors each (an unclosed fence ends its answer)."""
    out: list[list[tuple[str, str]]] = [[]]
    for name, text in vectors:
        if out[-1] and sum(len(t) + 2 for _, t in out[-1]) + len(text) > size:
            out.append([])
        out[-1].append((name, text))
        if _open_fence(text):
            out.append([])
    return [a for a in out if a]


class Watch:
    """Everything a page did that it must not: dialogs, script errors, CSP reports, foreign requests."""

    def __init__(self, page, origin: str) -> None:
        self.page = page
        self.seen: dict[str, list[str]] = {"dialogs": [], "page errors": [], "console CSP": [], "foreign requests": []}
        page.on("dialog", lambda d: (self.seen["dialogs"].append(f"{d.type}: {d.message}"), d.dismiss()))
        page.on("pageerror", lambda e: self.seen["page errors"].append(str(e)))
        page.on("console", lambda m: "Content Security Policy" in m.text and self.seen["console CSP"].append(m.text))
        page.on("request", lambda r: r.url.startswith(origin + "/") or self.seen["foreign requests"].append(r.url))
        page.add_init_script(WATCH_PAGE)

    def problems(self, *, js: bool = True) -> list[str]:
        """What happened since the last call (so each answer is blamed only for its own)."""
        found = [f"{kind}: {items[:3]}" for kind, items in self.seen.items() if items]
        for items in self.seen.values():
            items.clear()
        if js:
            if self.page.evaluate("typeof window.__pwned") != "undefined":
                found.append("window.__pwned was set")
            violations = self.page.evaluate("window.__cspViolations.splice(0)")
            if violations:
                found.append(f"CSP violations: {violations[:3]}")
        return found


def _browser_dom_violations(html: str, users: list[str]) -> list[str]:
    # htmx may leave its own settle classes on swapped elements for a moment, and app.js adds copy
    # buttons to code blocks: neither is model text.
    html = re.sub(r' class="(htmx-[\w-]+ ?)+"', "", html)
    html = re.sub(r'<button type="button" class="copy code-copy">Copy</button>', "", html)
    html = html.replace('<pre class="has-copy">', "<pre>")
    return page_violations(html, users)


def _wait_for_answers(page, count: int) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('article[data-role=assistant][aria-busy=false]').length >= n"
        " && !document.querySelector('[aria-busy=true]')", arg=count, timeout=20_000)


def _replies(n: int, text: str, user: str) -> list[tuple[str, Reply, str]]:
    """Batch `n` twice: as the answer to the user's message `user`, then as the model's reasoning
    (each batch its way in turn) with the same text as the answer after it. (path, reply, message)"""
    rng = random.Random(n)
    return [("", Reply(tokens=pieces(text, rng, 40)), user),
            ("reasoning, ", reasoning_reply(text, text, rng, REASONING_WAYS[n % len(REASONING_WAYS)], 40),
             "Think it over.")]


# The corpus is spread over this many conversations: each page (checked whole after every answer)
# holds all of its conversation, so one long conversation costs time in the square of its length.
CONVERSATIONS = 4


def _conversations(batches: list[list[tuple[str, str]]], conversations: int) -> list[int]:
    """Where each conversation starts in `batches`."""
    return list(range(0, len(batches), -(-len(batches) // conversations)))


def browser_js_on(browser, server, fake: FakeOpenAI, tally: Tally, conversations: int = CONVERSATIONS) -> None:
    """The corpus as the model's answers and reasoning and the user's messages, streamed by htmx."""
    batches = answers()
    per_chat = -(-len(batches) // conversations)
    for start in _conversations(batches, conversations):
        context = browser.new_context()
        page = context.new_page()
        watch = Watch(page, server.url)
        page.goto(server.url + "/new")
        users: list[str] = []
        for n, batch in enumerate(batches[start:start + per_chat], start):
            text = "\n\n".join(t for _, t in batch)
            for path, reply, user in _replies(n, text, text if valid_message(text) else "Please answer."):
                fake.script(reply)
                send(page, user)
                problems = []
                try:
                    _wait_for_answers(page, len(users) + 1)
                except Exception as error:  # the page never settled: a structure was broken
                    problems.append(f"the answer did not finish: {str(error)[:200]}")
                users.append(user)
                problems += watch.problems() + _browser_dom_violations(page.content(), users)
                for name, _ in batch:
                    tally.record(f"browser, JS on ({path}streamed)", name, problems)
        page.reload()
        problems = watch.problems() + _browser_dom_violations(page.content(), users)
        for batch in batches[start:start + per_chat]:
            for name, _ in batch:
                tally.record("browser, JS on (reloaded)", name, problems)
        context.close()


def browser_js_off(browser, server, fake: FakeOpenAI, tally: Tally, conversations: int = CONVERSATIONS) -> None:
    """The corpus as answers, reasoning and messages through the plain form, the answer streamed as
    a page."""
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    watch = Watch(page, server.url)
    batches = answers()
    starts = _conversations(batches, conversations)
    users: list[str] = []
    for n, batch in enumerate(batches):
        if n in starts:
            page.goto(server.url + "/new")
            users = []
        text = "\n\n".join(t for _, t in batch)
        valid = valid_message(text)
        if not valid:  # first the refusal, which gives the text back in the form
            send(page, text, javascript=False)
            problems = watch.problems(js=False) + frame_violations(soup(page.content()))
            if page.locator("#composer textarea[name=message]").input_value() != text.replace("\r\n", "\n").replace("\r", "\n"):
                problems.append("the refused text is not given back")
            for name, _ in batch:
                tally.record("browser, JS off (refused input)", name, problems)
        for path, reply, user in _replies(n, text, text if valid else "Please answer."):
            fake.script(reply)
            send(page, user, javascript=False)
            users.append(user)
            problems = watch.problems(js=False) + page_violations(page.content(), users, live=True)
            for name, _ in batch:
                tally.record(f"browser, JS off ({path}streamed page)", name, problems)
    context.close()
