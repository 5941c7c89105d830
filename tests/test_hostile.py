"""Hostile input, everywhere it can enter: the renderer, the views, and a real browser.

Every vector of tests/hostile_corpus.py goes through
1. `render_markdown` and `StreamingMarkdown` (random piece sizes: each step's blocks, the escaped
   tail partial, and `finish()`);
2. the views, as model output and as user input, on the htmx SSE path, the no-JS chunked page and
   the page reloaded from storage;
3. Chromium, with JavaScript on (htmx streaming) and off, watching for dialogs, `window.__pwned`,
   CSP violations, script errors and requests to any other host;
then hypothesis looks for what the corpus missed. The checks only look at what came from the model
or the user (the page's own markup is trusted), and each path reports how many vectors it tried
and which got through (`test_*_paths_report`, and bench/hostile_report.py prints the figures).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import time
import warnings
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, Tag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quart import Quart
from quart.testing import QuartClient

from chatapp import create_app
from chatapp.web import sse
from chatapp.rendering import StreamingMarkdown, render_markdown
from chatapp.sanitize import ALLOWED_TAGS, PYGMENTS_CLASSES
from chatapp.web.forms import normalize
from tests.conftest import CANARY_KEY, app_settings, parse_sse
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.hostile_corpus import VECTORS
from tests.support import HTMX

try:  # a spec-conformant HTML parser (bleach vendors html5lib): it parses like a browser does
    from bleach._vendor import html5lib
except ImportError:  # pragma: no cover - bleach without its vendored copy
    html5lib = None

MAX_CHARS = 8000  # the app's default message limit (Config.max_message_chars)
PAGE_MARK = "<!--chatapp:answer-->"

# --- what may appear in model- or user-derived HTML ----------------------------------------------
SAFE_TAGS = frozenset(ALLOWED_TAGS) - {"img"}  # "img" is in the bleach list only to be rewritten
NEVER_TAGS = frozenset(
    "img iframe frame frameset object embed script style form input button textarea select template "
    "meta base link svg math video audio source applet portal dialog noscript title head body html "
    "area map details marquee".split()
)
SAFE_ATTRIBUTES = {
    "a": {"href", "title", "rel"}, "th": {"align"}, "td": {"align"}, "ol": {"start"},
    "span": {"class"}, "div": {"class"}, "code": {"class"},
}
LINK_PREFIXES = ("http:", "https:", "mailto:")
LINK_REL = {"nofollow", "noopener", "noreferrer"}
HX_TAG = re.compile(r"</?hx-", re.I)  # htmx rewrites `<hx-…` and `</hx-…>` even inside text
RAW_NEVER = [
    (HX_TAG, "an <hx-…> tag in the raw text"),
    (re.compile(r"</?template", re.I), "a <template> tag in the raw text"),
    (re.compile(r"<!--", re.I), "an HTML comment"),
    (re.compile(r"<\s*/?\s*(script|style|iframe|object|embed|svg|math|img|meta|base|link|form)\b", re.I),
     "a forbidden tag in the raw text"),
    (re.compile(r"<\s*/?\s*(head|body|html)\b", re.I), "<head>/<body>/<html> (htmx parses those apart)"),
]


def _soup(html: str) -> BeautifulSoup:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        return BeautifulSoup(html, "html.parser")


def raw_violations(raw: str) -> list[str]:
    """Problems visible in the raw text of model- or user-derived HTML, before any parsing."""
    found = [f"{what}: {m.group(0)!r}" for pattern, what in RAW_NEVER if (m := pattern.search(raw))]
    if PAGE_MARK in raw:
        found.append("the internal page mark")
    return found


def _attribute_violations(name: str, attrs: dict[str, object]) -> list[str]:
    found = []
    for attr, value in attrs.items():
        attr = attr.lower()
        value = " ".join(value) if isinstance(value, list) else str(value)
        if attr.startswith("on") or attr in ("style", "id", "name", "srcdoc", "formaction", "action") \
                or attr.startswith(("hx-", "hx:", "data-", "xlink", "xmlns")):
            found.append(f"<{name} {attr}={value!r}>: forbidden attribute")
        elif attr not in SAFE_ATTRIBUTES.get(name, ()):
            found.append(f"<{name} {attr}={value!r}>: attribute outside the allowlist")
        elif attr == "href":
            if not value.strip().lower().startswith(LINK_PREFIXES) or value != value.strip():
                found.append(f"<a href={value!r}>: not an http(s)/mailto link")
        elif attr == "class":
            odd = [c for c in value.split() if c not in PYGMENTS_CLASSES]
            if odd:
                found.append(f"<{name} class={value!r}>: classes {odd} are not Pygments'")
        elif attr == "rel" and not LINK_REL <= set(value.split()):
            found.append(f"<a rel={value!r}>: missing nofollow noopener noreferrer")
    if name == "a" and "href" in attrs and "rel" not in attrs:
        found.append(f"<a href={attrs['href']!r}> without rel")
    return found


def element_violations(elements: Iterable[Tag]) -> list[str]:
    """Problems in parsed model- or user-derived elements (each given element and its descendants)."""
    found = []
    for root in elements:
        for tag in [root, *root.find_all(True)]:
            name = tag.name.lower()
            if name in NEVER_TAGS or name.startswith("hx-"):
                found.append(f"<{name}>: forbidden element")
            elif name not in SAFE_TAGS:
                found.append(f"<{name}>: element outside the allowlist")
            found += _attribute_violations(name, tag.attrs)
    return found


def _html5_violations(html: str) -> list[str]:
    """The same element checks on a browser-like (HTML5 algorithm) parse of the fragment."""
    if html5lib is None:
        return []
    found = []
    fragment = html5lib.parseFragment(html, treebuilder="etree", namespaceHTMLElements=False)
    for element in fragment.iter():
        if not isinstance(element.tag, str) or element is fragment:
            continue  # comments are ProcessingInstruction/Comment callables
        name = element.tag.split("}")[-1].lower()
        if name in NEVER_TAGS or name.startswith("hx-") or name not in SAFE_TAGS:
            found.append(f"html5: <{name}> outside the allowlist")
        found += [f"html5: {v}" for v in _attribute_violations(name, dict(element.attrib))]
    return found


def fragment_violations(html: str) -> list[str]:
    """All checks on a fragment that is entirely model- or user-derived."""
    parsed = _soup(html)
    return raw_violations(html) + element_violations(parsed.find_all(True, recursive=False)) \
        + _html5_violations(html)


def tail_violations(partial: str) -> list[str]:
    """A streamed tail partial: exactly one `<hx-partial>` wrapper, and only escaped text inside."""
    found = []
    m = re.fullmatch(r'<hx-partial hx-target="#[\w-]+" hx-swap="(?:innerHTML|beforeend)">(.*)</hx-partial>',
                     partial, re.S)
    if len(HX_TAG.findall(partial)) != 2 or partial.count("<hx-partial") != 1 or m is None:
        return [f"tail partial is not one wrapper around text: {partial[:200]!r}"]
    if "<" in m.group(1) or ">" in m.group(1):
        found.append(f"unescaped markup in a tail: {m.group(1)[:200]!r}")
    return found


def pieces(text: str, rng: random.Random, largest: int = 12) -> list[str]:
    """`text` cut into pieces of 1..largest characters, like a model's tokens."""
    out, i = [], 0
    while i < len(text):
        n = rng.randint(1, largest)
        out.append(text[i:i + n])
        i += n
    return out or [text]


# --- path 1: the renderer ------------------------------------------------------------------------
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


def test_corpus_is_big_and_named() -> None:
    assert len(VECTORS) >= 100
    assert all(isinstance(name, str) and isinstance(text, str) and text for name, text in VECTORS)


def test_renderer_paths_report() -> None:
    tally = renderer_paths()
    assert tally.tried == {"render_markdown": len(VECTORS), "StreamingMarkdown": len(VECTORS)}
    assert tally.failures() == []


def test_streaming_finish_equals_one_shot_render_for_every_vector() -> None:
    for name, text in VECTORS:
        stream = StreamingMarkdown()
        for piece in pieces(text, random.Random(name)):
            stream.feed(piece)
        assert stream.finish() == render_markdown(text), name


def test_the_checks_catch_what_they_are_meant_to_catch() -> None:
    """The assertions can fail: each of these would be a hole."""
    bad = [
        '<p><img src="x" onerror="alert(1)"></p>',
        '<p><a href="javascript:alert(1)" rel="nofollow noopener noreferrer">x</a></p>',
        '<p><a href="jav&#x09;ascript:alert(1)" rel="nofollow noopener noreferrer">x</a></p>',
        '<p onclick="x">x</p>', '<div style="x">x</div>', '<div data-hx-get="/">x</div>',
        '<span id="composer">x</span>', "<p>&lt;ok&gt; <hx-partial hx-target=body></p>",
        "<p><!--chatapp:answer--></p>", "</template>", "<script>x</script>", '<div class="evil">x</div>',
        '<a href="https://ok.example">x</a>',  # no rel
    ]
    for html in bad:
        assert fragment_violations(html), html
    assert tail_violations(sse.text_partial("t", "innerHTML", "<x>")) == []
    assert tail_violations('<hx-partial hx-target="#t" hx-swap="innerHTML"><b>x</b></hx-partial>')
    ok = str(render_markdown("# T\n\n*a* [l](https://ok.example) `c`\n\n```python\nx = 1\n```\n\n| a |\n|:-|\n| b |"))
    assert fragment_violations(ok) == []


# --- path 2: the views ---------------------------------------------------------------------------
WRAPPER = re.compile(
    r'<hx-partial hx-target="(?P<target>#msg-[0-9a-f]{16}(?:-blocks|-tail|-notice)?|#send-token|#context-note|#messages \.redo'
    r'|#conversation-list|#no-conversations)" '
    r'hx-swap="(?P<swap>beforeend|afterbegin|innerHTML|outerHTML|delete)">(?P<body>.*?)</hx-partial>', re.S)
# The first frame's own partials: a new send token, the old controls cleared, the context note.
OPENING_PARTIALS = ["#context-note", "#messages .redo", "#send-token"]


def _cleaned(text: str) -> str:
    """What the app should store for `text` (the README's rules: newlines, no control chars, trimmed)."""
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text.replace("\r\n", "\n").replace("\r", "\n")).strip()


def _valid_message(text: str) -> bool:
    return 0 < len(_cleaned(text)) <= MAX_CHARS


def _partials(data: str) -> tuple[list[re.Match], list[str]]:
    """A frame's `<hx-partial>` wrappers; problems if it is anything but whole wrappers."""
    found = list(WRAPPER.finditer(data))
    problems = []
    if "".join(m.group(0) for m in found) != data:
        problems.append(f"frame is not a sequence of partials: {data[:200]!r}")
    if len(HX_TAG.findall(data)) != 2 * len(found):
        problems.append(f"extra <hx-…> tags in a frame: {data[:200]!r}")
    return found, problems


def _content_elements(article: Tag) -> list[Tag]:
    return [child for content in article.select(":scope > .content") for child in content.find_all(True, recursive=False)]


def sse_violations(frames: list[tuple[str | None, str]], user_text: str) -> list[str]:
    problems = []
    if not frames or frames[-1][0] != sse.CLOSE_EVENT:
        problems.append("the stream does not end with the close event")
    if any(event is not None for event, _ in frames[:-1]):
        problems.append(f"unexpected named events: {[e for e, _ in frames[:-1] if e]}")
    bubbles, steps, final = frames[0][1], frames[1:-2], frames[-2][1] if len(frames) >= 3 else ""
    # The bubbles: two articles and the send-token partial; the user's text shown exactly, as text.
    problems += raw_violations(WRAPPER.sub("", bubbles))
    wrappers = WRAPPER.findall(bubbles)
    own = sorted(w[0] for w in wrappers if w[0] not in ("#conversation-list", "#no-conversations"))
    if len(HX_TAG.findall(bubbles)) != 2 * len(wrappers) or own != OPENING_PARTIALS:
        problems.append("extra <hx-…> tags in the bubbles frame")
    page = _soup(bubbles)
    articles = page.find_all("article", recursive=False)
    if [a.get("data-role") for a in articles] != ["user", "assistant"]:
        problems.append(f"bubbles frame structure: {[a.get('data-role') for a in articles]}")
    else:
        user = articles[0].select_one(".content.plain")
        if user is None or user.find(True) is not None or user.get_text() != _cleaned(user_text):
            problems.append("the user's text is not shown exactly, as text")
    if len(articles) == 2:  # the empty answer: just its two targets, nothing from the model yet
        inner = [(t.name, t.get("id")) for t in articles[1].select(".content *")]
        if inner != [("div", f"{articles[1]['id']}-blocks"), ("div", f"{articles[1]['id']}-tail")]:
            problems.append(f"the empty answer bubble holds {inner}")
    # Each step: whole partials; blocks are sanitized HTML, tails are escaped text.
    for _, data in steps:
        found, frame_problems = _partials(data)
        problems += frame_problems
        for m in found:
            if m["target"].endswith(("-tail", "-notice")):
                problems += tail_violations(m.group(0))
            elif m["target"].endswith("-blocks") and m["swap"] == "beforeend":
                problems += fragment_violations(m["body"])
            else:
                problems.append(f"unexpected partial target in a step: {m['target']}")
    # The final frame: the answer, then the question again (with its edit control); both one article.
    found, frame_problems = _partials(final)
    problems += frame_problems
    question = _soup(found[1]["body"]).find("article") if len(found) == 2 else None
    if question is None or question.select_one(".content.plain").get_text() != _cleaned(user_text):
        problems.append("the question is not given back exactly in the final frame")
    if len(found) != 2 or found[0]["swap"] != "outerHTML":
        problems.append(f"final frame: {final[:200]!r}")
    else:
        body = found[0]["body"]
        parsed = _soup(body)
        articles = parsed.find_all("article", recursive=False)
        if len(articles) != 1 or articles[0].get("aria-busy") != "false" or parsed.find_all("article")[1:]:
            problems.append("final frame structure")
        else:
            content = articles[0].select_one(":scope > .content")
            problems += raw_violations(content.decode_contents() if content else "")
            problems += element_violations(_content_elements(articles[0]))
    return problems


def page_violations(html: str, user_texts: list[str], *, live: bool = False) -> list[str]:
    """A whole page: trusted frame, untrusted content inside articles and the no-JS draft."""
    problems = []
    if PAGE_MARK in html:
        problems.append("the internal page mark is in the page")
    if HX_TAG.search(html):
        problems.append(f"an <hx-…> tag in the page: {HX_TAG.search(html).group(0)!r}")
    if re.search(r"</?template", html, re.I):
        problems.append("a <template> tag in the page")
    if len(re.findall(r"<script", html, re.I)) != 3:
        problems.append(f"{len(re.findall(r'<script', html, re.I))} <script> tags in the page")
    page = _soup(html)
    problems += frame_violations(page)
    articles = page.find_all("article")
    users = [a for a in articles if a.get("data-role") == "user"]
    shown = [u.select_one(".content.plain").get_text() if u.select_one(".content.plain") else None for u in users]
    if shown != [_cleaned(t) for t in user_texts]:
        problems.append("the users' texts are not shown exactly, as text")
    for article in articles:
        problems += element_violations(_content_elements(article))
        problems += [f"user bubble holds markup: {c.name}" for u in [article] if u.get("data-role") == "user"
                     for c in u.select(".content.plain *")]
    drafts = page.select(".draft")
    if live:
        if len(drafts) != 1:
            problems.append(f"{len(drafts)} drafts in a live page")
        else:
            draft = drafts[0]
            after = draft.find_next_sibling(True)
            if after is None or after.name != "article" or after.get("aria-busy") != "false":
                problems.append("the finished message does not follow the draft")
            content = draft.select_one(":scope > .content")
            for child in content.find_all(True, recursive=False) if content else []:
                if "block" in child.get("class", []) and child.name == "div":
                    problems += element_violations(child.find_all(True, recursive=False))
                elif "raw" in child.get("class", []) and child.name == "span":
                    if child.find(True) is not None:
                        problems.append("markup inside a raw draft piece")
                else:
                    problems.append(f"unexpected element in the draft: <{child.name} {child.attrs}>")
    elif drafts:
        problems.append("a draft in a finished page")
    return problems


def frame_violations(page: BeautifulSoup) -> list[str]:
    """The page's own frame stayed whole: only its own forms and controls, its scripts, no stray
    active elements; and nothing active inside the text of any message."""
    problems = []
    messages = page.select_one("section#messages")
    if messages is None:
        return ["no #messages section"]
    if len(page.find_all("article")) != len(messages.find_all("article", recursive=False)):
        problems.append("an article outside #messages or nested in another")
    ids = [f.get("id") for f in page.find_all("form") if f.get("id")]
    if ids != ["regenerate-form", "edit-form", "composer"]:
        problems.append("the page's form was tampered with")
    for form in page.find_all("form"):
        own = (form.get("id") in ("composer", "regenerate-form", "edit-form")
               or form.find_parent(class_="conversation-settings") is not None
               or form.get("action") in ("/logout", "/theme"))
        if not own or not str(form.get("action", "")).startswith(("/c/", "/logout", "/theme")):
            problems.append("the page's form was tampered with")
    for textarea in page.find_all("textarea"):
        if textarea.find_parent("form") is None and textarea.get("form") != "edit-form":
            problems.append("a text box outside the page's forms")
    for content in page.select(".content"):
        if content.find(["form", "textarea", "input", "select", "details", "article"]) or any(
                "code-copy" not in b.get("class", []) for b in content.find_all("button")):
            problems.append("a control inside a message's text")
    scripts = page.find_all("script")
    if len(scripts) != 3 or not all(s.get("src", "").startswith("/static/") and not s.string for s in scripts):
        problems.append("unexpected script elements")
    for name in ("iframe", "frame", "object", "embed", "img", "svg", "math", "style", "base", "template", "video",
                 "audio", "dialog", "input[type=image]"):
        if page.select(name):
            problems.append(f"a <{name}> in the page")
    for details in page.find_all("details"):
        if "conversation-settings" not in details.get("class", []) and details.find_parent(class_="actions") is None:
            problems.append("a <details> in the page")
    if len(page.find_all("meta")) != 4 or len(page.find_all("link")) != 2:
        problems.append("extra meta or link elements")
    for tag in page.find_all(True):
        for attr in tag.attrs:
            if attr.lower().startswith("on") or attr.lower() == "style":
                problems.append(f"<{tag.name} {attr}> in the page")
            elif attr.lower().startswith(("hx-", "data-hx")) and tag.name != "form" and not (
                    tag.name == "a" and tag.find_parent(class_="earlier") is not None) and not (
                    tag.name == "article" and tag.get("aria-busy") == "true" and attr in ("hx-get", "hx-trigger", "hx-swap")):
                problems.append(f"<{tag.name} {attr}> outside the page's own forms")
        if tag.name == "a" and not str(tag.get("href", "")).startswith(("/", "http:", "https:", "mailto:")):
            problems.append(f"<a href={tag.get('href')!r}> in the page")
    return problems


@dataclass
class Chat:
    client: QuartClient
    action: str
    csrf: str
    users: list[str] = field(default_factory=list)  # user messages stored, in order

    @property
    def url(self) -> str:
        return self.action.removesuffix("/messages")


async def new_chat(app: Quart) -> Chat:
    client = app.test_client()
    response = await client.get("/", follow_redirects=True)
    assert response.status_code == 200
    form = _soup((await response.get_data()).decode()).select_one("form#composer")
    return Chat(client, form["action"], form.select_one("input[name=csrf_token]")["value"])


async def _send(chat: Chat, message: str, *, htmx: bool) -> tuple[int, str, str]:
    headers = {**HTMX, "X-CSRF-Token": chat.csrf} if htmx else {}
    form = {"message": message} if htmx else {"message": message, "csrf_token": chat.csrf}
    response = await chat.client.post(chat.action, form=form, headers=headers)
    return response.status_code, response.mimetype, (await response.get_data()).decode()


async def refused_violations(chat: Chat, message: str, status: int, mimetype: str, body: str, htmx: bool) -> list[str]:
    """A message the app must refuse: a 4xx that says why, and (without JS) the text given back."""
    problems = []
    if not 400 <= status < 500:
        problems.append(f"status {status} for an invalid message")
    if status == 413:  # the body is over MAX_CONTENT_LENGTH: an error page
        page = _soup(body)
        if page.select_one("[data-role=error]") is None or len(page.find_all("script")) != (0 if htmx else 3):
            problems.append("413 error page")
    elif htmx:
        error = _soup(body).select_one("[data-role=error]")
        if error is None or HX_TAG.search(body) or "<script" in body:
            problems.append("htmx error fragment")
    else:
        problems += frame_violations(_soup(body))
        typed = _soup(body).select_one("form#composer textarea[name=message]")
        if typed is None or typed.get_text() != normalize(message):  # control characters go, the rest stays
            problems.append("the typed text is not given back exactly")
    return problems


async def views_paths(app: Quart, fake: FakeOpenAI, vectors: list[tuple[str, str]] = VECTORS) -> Tally:
    """Each vector as the user's message and as the model's answer: htmx, no-JS, and reloaded."""
    tally = Tally()
    for name, text in vectors:
        rng = random.Random(name)
        chat = await new_chat(app)
        for htmx, path in ((True, "htmx SSE"), (False, "no-JS page")):
            problems: list[str] = []
            user_message = text
            if not _valid_message(text):
                status, mimetype, body = await _send(chat, text, htmx=htmx)
                tally.record(f"user input refused ({path})", name,
                             await refused_violations(chat, text, status, mimetype, body, htmx))
                user_message = "Please answer."
            fake.script(Reply(tokens=pieces(text, rng, 24)))
            status, mimetype, body = await _send(chat, user_message, htmx=htmx)
            if status != 200:
                problems.append(f"status {status}")
            elif htmx:
                problems += sse_violations(parse_sse(body), user_message)
            else:
                problems += page_violations(body, [*chat.users, user_message], live=True)
            chat.users.append(user_message)
            if CANARY_KEY in body:
                problems.append("the API key is in a response")
            tally.record(f"model+user ({path})", name, problems)
        response = await chat.client.get(chat.url)
        html = (await response.get_data()).decode()
        tally.record("stored page", name,
                     [f"status {response.status_code}"] if response.status_code != 200 else page_violations(html, chat.users))
    return tally


@pytest.fixture
async def hostile_app(tmp_path: Path, fake_upstream: FakeOpenAI) -> AsyncIterator[Quart]:
    app = create_app(app_settings(tmp_path, fake_upstream, max_message_chars=MAX_CHARS))
    async with app.test_app():
        yield app


async def test_views_paths_report(hostile_app: Quart, fake_upstream: FakeOpenAI) -> None:
    tally = await views_paths(hostile_app, fake_upstream)
    refused = sum(not _valid_message(text) for _, text in VECTORS)
    assert tally.tried == {
        "model+user (htmx SSE)": len(VECTORS), "model+user (no-JS page)": len(VECTORS),
        "stored page": len(VECTORS),
        **({"user input refused (htmx SSE)": refused, "user input refused (no-JS page)": refused} if refused else {}),
    }
    assert tally.failures() == []


async def test_the_view_checks_catch_a_hole(hostile_app: Quart, fake_upstream: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the sanitizer switched off, the same checks report the vectors that get through."""
    import bleach

    import chatapp.sanitize as sanitize
    loose = bleach.Cleaner(tags={"p", "a", "img", "script"}, attributes={"*": ["href", "src", "onerror"]},
                           protocols={"http", "https", "javascript"}, strip_comments=True)
    monkeypatch.setattr(sanitize, "_cleaner", loose)
    tally = await views_paths(hostile_app, fake_upstream, [
        ("md-link-javascript", "[x](javascript:alert(1))"),
        ("safe", "plain *text*"),
    ])
    assert [f.split(":")[0] for f in tally.failures()] == [
        "[model+user (htmx SSE)] md-link-javascript", "[model+user (no-JS page)] md-link-javascript",
        "[stored page] md-link-javascript",
    ]


# --- path 3: a real browser ----------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Installed by the browser before any page script, so the page's CSP does not apply to it.
WATCH_PAGE = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', e => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


def answers(vectors: list[tuple[str, str]] = VECTORS, size: int = 7000) -> list[list[tuple[str, str]]]:
    """The corpus cut into answers of several vectors each (an unclosed fence ends its answer)."""
    from chatapp.rendering import _open_fence

    out: list[list[tuple[str, str]]] = [[]]
    for name, text in vectors:
        if out[-1] and sum(len(t) + 2 for _, t in out[-1]) + len(text) > size:
            out.append([])
        out[-1].append((name, text))
        if _open_fence(text):
            out.append([])
    return [a for a in out if a]


@pytest.fixture  # not module-scoped: Playwright's sync loop must be gone before the next async test
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        if os.environ.get("CHATAPP_REQUIRE_BROWSER"):
            raise RuntimeError("CHATAPP_REQUIRE_BROWSER is set but Debian's chromium is not installed")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def server(tmp_path: Path, fake_upstream: FakeOpenAI) -> Iterator[object]:
    from tests.support.live_server import LiveServer, app_environment

    live = LiveServer(app_environment(fake_upstream.base_url, tmp_path / "chat.db"), tmp_path / "server.log")
    yield live
    live.stop()


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


def browser_js_on(browser, server, fake: FakeOpenAI, tally: Tally, conversations: int = 2) -> None:
    """The corpus as the model's answers and the user's messages, streamed by htmx."""
    batches = answers()
    per_chat = -(-len(batches) // conversations)
    for start in range(0, len(batches), per_chat):
        context = browser.new_context()
        page = context.new_page()
        watch = Watch(page, server.url)
        page.goto(server.url + "/new")
        users: list[str] = []
        for n, batch in enumerate(batches[start:start + per_chat], 1):
            text = "\n\n".join(t for _, t in batch)
            user = text if _valid_message(text) else "Please answer."
            fake.script(Reply(tokens=pieces(text, random.Random(n), 40)))
            page.fill("#composer textarea[name=message]", user)
            page.keyboard.press("Enter")
            problems = []
            try:
                _wait_for_answers(page, n)
            except Exception as error:  # the page never settled: a structure was broken
                problems.append(f"the answer did not finish: {str(error)[:200]}")
            users.append(user)
            problems += watch.problems() + _browser_dom_violations(page.content(), users)
            for name, _ in batch:
                tally.record("browser, JS on (streamed)", name, problems)
        page.reload()
        problems = watch.problems() + _browser_dom_violations(page.content(), users)
        for batch in batches[start:start + per_chat]:
            for name, _ in batch:
                tally.record("browser, JS on (reloaded)", name, problems)
        context.close()


def browser_js_off(browser, server, fake: FakeOpenAI, tally: Tally) -> None:
    """The corpus as answers and messages through the plain form, the answer streamed as a page."""
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    watch = Watch(page, server.url)
    page.goto(server.url + "/new")
    users: list[str] = []
    for n, batch in enumerate(answers(), 1):
        text = "\n\n".join(t for _, t in batch)
        valid = _valid_message(text)
        if not valid:  # first the refusal, which gives the text back in the form
            with page.expect_navigation():
                page.fill("#composer textarea[name=message]", text)
                page.click("#composer button[type=submit]")
            problems = watch.problems(js=False) + frame_violations(_soup(page.content()))
            if page.locator("#composer textarea[name=message]").input_value() != text.replace("\r\n", "\n").replace("\r", "\n"):
                problems.append("the refused text is not given back")
            for name, _ in batch:
                tally.record("browser, JS off (refused input)", name, problems)
        user = text if valid else "Please answer."
        fake.script(Reply(tokens=pieces(text, random.Random(n), 40)))
        page.fill("#composer textarea[name=message]", user)
        with page.expect_navigation():
            page.click("#composer button[type=submit]")
        users.append(user)
        problems = watch.problems(js=False) + page_violations(page.content(), users, live=True)
        for name, _ in batch:
            tally.record("browser, JS off (streamed page)", name, problems)
    context.close()


def test_browser_paths_report(browser, server, fake_upstream: FakeOpenAI) -> None:
    started = time.monotonic()
    tally = Tally()
    browser_js_on(browser, server, fake_upstream, tally)
    browser_js_off(browser, server, fake_upstream, tally)
    refused = sum(len(b) for b in answers() if not _valid_message("\n\n".join(t for _, t in b)))
    assert tally.tried == {
        "browser, JS on (streamed)": len(VECTORS), "browser, JS on (reloaded)": len(VECTORS),
        "browser, JS off (streamed page)": len(VECTORS),
        **({"browser, JS off (refused input)": refused} if refused else {}),
    }
    assert tally.failures() == []
    assert time.monotonic() - started < 90


# --- path 4: what the corpus missed (hypothesis) -------------------------------------------------
MARKDOWNISH = st.lists(
    st.sampled_from([
        "[", "]", "(", ")", "![", "](", "]: ", "<", ">", "</", "\"", "'", "`", "```", "~~~", "\n", "\n\n", " ",
        "    ", "> ", "- ", "1. ", "| ", "|---|", "*", "_", "\\", "&", "&#", "&#x", ";", "&colon;", "&#106;",
        "javascript:", "JaVaScRiPt:", "vbscript:", "data:text/html,", "java\tscript:", "https://", "mailto:",
        "//", "attacker.example", "alert(1)", "hx-", "<hx-partial", "</hx-partial>", "hx-get=", "data-hx-",
        "on", "onerror=", "onclick=", "style=", "id=", "class=", "img", "script", "svg", "iframe", "template",
        "<!--", "-->", "chatapp:answer", "{", "}", ".", "#", "=", "title", "\x00", "\x02", "\x03", "\r",
        "\u202e", "\u200b", "＜", "@",
    ]) | st.text(max_size=8),
    max_size=40,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=st.text() | MARKDOWNISH, data=st.data())
def test_property_renderer_never_lets_markup_through(text: str, data: st.DataObject) -> None:
    assert fragment_violations(str(render_markdown(text))) == []
    stream = StreamingMarkdown()
    for piece in pieces(text, random.Random(data.draw(st.integers(0, 2**32)))):
        step = stream.feed(piece)
        if step.blocks is not None:
            assert fragment_violations(str(step.blocks)) == []
        assert tail_violations(sse.text_partial("msg-1-tail", "innerHTML", step.tail)) == []
    assert stream.finish() == render_markdown(text)


MESSAGES = (
    st.text(st.characters(exclude_categories=["Cs"]), max_size=300)
    | MARKDOWNISH
    # huge: a short unit repeated past (or up to) the limit, in 1- to 4-byte characters
    | st.builds(lambda unit, n: (unit * n)[:12_000], st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=4),
                st.integers(1, 12_000))
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=MESSAGES, htmx=st.booleans())
async def test_property_any_message_gets_an_answer_or_a_reason(
        hostile_app: Quart, fake_upstream: FakeOpenAI, message: str, htmx: bool) -> None:
    chat = await new_chat(hostile_app)
    status, mimetype, body = await _send(chat, message, htmx=htmx)
    assert status < 500
    if _valid_message(message) and _form_bytes(message) > MAX_BODY:
        # A valid message whose url-encoded form is over MAX_CONTENT_LENGTH.
        assert status == 413
    elif _valid_message(message):
        assert status == 200, (status, body[:300])
        if htmx:
            assert sse_violations(parse_sse(body), message) == []
        else:
            assert page_violations(body, [message], live=True) == []
    else:
        assert 400 <= status < 500
        assert await refused_violations(chat, message, status, mimetype, body, htmx) == []


MAX_BODY = MAX_CHARS * 12 + 16_384  # chatapp/web/app.py: MAX_CONTENT_LENGTH


def _form_bytes(message: str) -> int:
    from urllib.parse import urlencode

    return len(urlencode({"message": message, "csrf_token": "x" * 32, "send_token": "x" * 16}))


@pytest.mark.parametrize("message", ["😀" * 8000, "漢" * 6000, "𐀀" * 4100], ids=["emoji-8000", "cjk-6000", "astral-4100"])
async def test_a_message_within_the_character_limit_is_never_too_large(hostile_app: Quart, message: str) -> None:
    chat = await new_chat(hostile_app)
    status, _, _ = await _send(chat, message, htmx=True)
    assert status == 200


def test_an_image_alt_text_is_shown_as_written() -> None:
    for target in ("https://x.example/i.png", "javascript:x"):
        assert _soup(str(render_markdown(f"![a<b & c]({target})"))).get_text() == "a<b & c"
