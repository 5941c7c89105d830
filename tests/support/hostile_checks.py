"""What model- or user-derived HTML may hold, and the checks that say where it holds more: each
`*_violations` function returns the problems it found (an empty list when there are none).

The checks look only at what came from the model or the user; the page's own markup is trusted,
but `frame_violations` makes sure it stayed whole. tests/test_hostile.py asserts them on every
vector of tests/support/hostile_corpus.py, and bench/hostile_report.py counts them.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Iterable

from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, Tag

from chatapp.sanitize import ALLOWED_TAGS, PYGMENTS_CLASSES
from chatapp.web import sse
from chatapp.web.forms import normalize
from tests.support.client import parse_sse

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
# A code block's language, on its <code> only: written here apart from the sanitizer's own pattern,
# so that a looser one there is caught.
LANGUAGE_CLASS = re.compile(r"language-[a-z0-9+#-]{1,30}")
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


def soup(html: str) -> BeautifulSoup:
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
            languages = [c for c in odd if name == "code" and LANGUAGE_CLASS.fullmatch(c)]
            if len(languages) > 1 or len(odd) > len(languages):
                found.append(f"<{name} class={value!r}>: classes {odd} are not Pygments' (nor one language)")
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
    parsed = soup(html)
    return raw_violations(html) + element_violations(parsed.find_all(True, recursive=False)) \
        + _html5_violations(html)


def tail_violations(partial: str) -> list[str]:
    """A streamed tail partial, exactly one `<hx-partial>` wrapper: escaped text (added to a tail, or
    a notice), or (swapped into a `…-tail`) a render of the tail, checked by `rendered_tail_violations`."""
    found = []
    m = re.fullmatch(r'<hx-partial hx-target="#([\w-]+)" hx-swap="(innerHTML|beforeend)">(.*)</hx-partial>',
                     partial, re.S)
    if len(HX_TAG.findall(partial)) != 2 or partial.count("<hx-partial") != 1 or m is None:
        return [f"tail partial is not one wrapper around text: {partial[:200]!r}"]
    if m.group(2) == "innerHTML" and m.group(1).endswith("-tail"):
        return rendered_tail_violations(m.group(3), m.group(1))
    if "<" in m.group(3) or ">" in m.group(3):
        found.append(f"unescaped markup in a tail: {m.group(3)[:200]!r}")
    return found


def rendered_tail_violations(body: str, tail_id: str) -> list[str]:
    """A render of an unfinished tail (streams._tail_html): escaped text, or model-derived HTML
    checked as strictly as a block, holding the one span its text goes on in: that span is the only
    id, has only its id and class, holds only escaped text, and a browser-like parse finds it."""
    if "<" not in body and ">" not in body:
        return []
    span = f'<span id="{tail_id}-end" class="end">'
    m = re.fullmatch(rf'(?P<head>.*){re.escape(span)}(?P<text>[^<>]*)</span>(?P<foot>.*)', body, re.S)
    if m is None or body.count(span) != 1:
        return [f"a rendered tail without its one end span: {body[:200]!r}"]
    problems = fragment_violations(m["head"] + m["text"] + m["foot"])
    if html5lib is not None:
        fragment = html5lib.parseFragment(body, treebuilder="etree", namespaceHTMLElements=False)
        ids = [e for e in fragment.iter() if isinstance(e.tag, str) and e.get("id")]
        if len(ids) != 1 or dict(ids[0].attrib) != {"id": f"{tail_id}-end", "class": "end"} or len(ids[0]):
            problems.append(f"the rendered tail's end span was broken: {body[:200]!r}")
    return problems


# --- the views: the frames of a streamed answer, whole pages, refusals ---------------------------
WRAPPER = re.compile(
    r'<hx-partial hx-target="(?P<target>#msg-[0-9a-f]{16}'
    r'(?:-thinking-blocks|-thinking-tail-end|-thinking-tail|-thinking|-blocks|-tail-end|-tail|-notice|-status|-actions)?'
    r'|#send-token|#context-note|#messages \.redo|#conversation-list|#no-conversations)" '
    r'hx-swap="(?P<swap>beforeend|afterbegin|innerHTML|outerHTML|delete)">(?P<body>.*?)</hx-partial>', re.S)
# The first frame's own partials: a new send token, the old controls cleared, the context note.
OPENING_PARTIALS = ["#context-note", "#messages .redo", "#send-token"]


def cleaned(text: str) -> str:
    """What the app should store for `text` (the README's rules: newlines, no control chars, trimmed)."""
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text.replace("\r\n", "\n").replace("\r", "\n")).strip()


def valid_message(text: str) -> bool:
    return 0 < len(cleaned(text)) <= MAX_CHARS


def partials(data: str) -> tuple[list[re.Match], list[str]]:
    """A frame's `<hx-partial>` wrappers; problems if it is anything but whole wrappers."""
    found = list(WRAPPER.finditer(data))
    problems = []
    if "".join(m.group(0) for m in found) != data:
        problems.append(f"frame is not a sequence of partials: {data[:200]!r}")
    if len(HX_TAG.findall(data)) != 2 * len(found):
        problems.append(f"extra <hx-…> tags in a frame: {data[:200]!r}")
    return found, problems


def content_elements(article: Tag) -> list[Tag]:
    """The model- or user-derived elements of a message: its text's, and its reasoning's (finished, or
    the blocks of one still being written)."""
    return [child for content in article.select(
        ":scope > .content, :scope > details.thinking:not(.live) > .thinking-text,"
        " :scope > details.thinking.live > .thinking-text > .thinking-inner > div[id$='-thinking-blocks']")
        for child in content.find_all(True, recursive=False)]


# The app's own reasoning partials (templates/_partials.html): the block opened with its first
# piece, and the block closed with the whole reasoning once the answer's text begins. Only the
# named groups are model-derived; everything else must be exactly the template's.
def _live_thinking(answer: str) -> re.Pattern:
    a = re.escape(answer)
    return re.compile(
        rf'<details id="{a}-thinking" class="thinking live" open>\s*<summary>Thinking…</summary>\s*'
        rf'<div class="thinking-text markdown"><div class="thinking-inner"><div id="{a}-thinking-blocks">(?P<blocks>.*)</div>'
        rf'<div id="{a}-thinking-tail" class="tail">(?P<tail>.*)</div></div></div>\s*</details>', re.S)


def _done_thinking(answer: str) -> re.Pattern:
    a = re.escape(answer)
    return re.compile(
        rf'<details id="{a}-thinking" class="thinking">\s*<summary>Thought[^<>]*</summary>\s*'
        rf'<div class="thinking-text markdown">(?P<html>.*)</div>\s*</details>', re.S)


def _thinking_partial_violations(body: str, answer: str, *, live: bool) -> list[str]:
    """A reasoning block swapped in whole: the template's frame around sanitized blocks (and, live,
    an escaped tail), and an HTML5 parse that finds the targets where the template put them (a
    block that closed the frame early would move them)."""
    m = (_live_thinking if live else _done_thinking)(answer).fullmatch(body)
    if m is None:
        return [f"a reasoning block that is not the app's: {body[:200]!r}"]
    problems = fragment_violations(m["blocks" if live else "html"])
    if live:
        problems += rendered_tail_violations(m["tail"], f"{answer}-thinking-tail")
    if html5lib is not None:
        fragment = html5lib.parseFragment(body, treebuilder="etree", namespaceHTMLElements=False)
        ids = [e.get("id") for e in fragment.iter() if isinstance(e.tag, str) and e.get("id")]
        expected = [f"{answer}-thinking", f"{answer}-thinking-blocks", f"{answer}-thinking-tail"] if live \
            else [f"{answer}-thinking"]
        if live and "<" in m["tail"]:
            expected.append(f"{answer}-thinking-tail-end")
        if ids != expected or len(list(fragment)) != 1:
            problems.append(f"the reasoning block's frame was broken: ids {ids}")
    return problems


def thinking_violations(article: Tag) -> list[str]:
    """A message's reasoning block is the app's: only in an answer, one, right in its article, with
    the template's attributes and parts (its content is checked with `content_elements`)."""
    blocks = [d for d in article.find_all("details") if "thinking" in d.get("class", [])]
    if not blocks:
        return []
    details = blocks[0]
    if article.get("data-role") != "assistant" or len(blocks) != 1 or details.parent is not article:
        return [f"a reasoning block where none belongs ({len(blocks)} in a {article.get('data-role')} message)"]
    problems = []
    live = article.get("aria-busy") == "true"
    expected = {"id": f"{article.get('id')}-thinking", "class": ["thinking", "live"] if live else ["thinking"]}
    if live:
        expected["open"] = ""
    if details.attrs != expected:
        problems.append(f"the reasoning block's attributes: {details.attrs}")
    children = details.find_all(True, recursive=False)
    summary, text = (children + [None, None])[:2]
    if len(children) != 2 or summary.name != "summary" or text.name != "div" \
            or text.attrs != {"class": ["thinking-text", "markdown"]}:
        return [*problems, "the reasoning block's parts are not the app's"]
    if summary.find(True) is not None or not summary.get_text().startswith("Thinking…" if live else "Thought"):
        problems.append(f"the reasoning block's summary: {summary.decode_contents()[:100]!r}")
    if _stray_text(details):
        problems.append("text outside the reasoning block's parts")
    if live:
        aid = article.get("id")
        inner = text.find_all(True, recursive=False)
        parts = inner[0].find_all(True, recursive=False) if len(inner) == 1 else []
        if len(inner) != 1 or inner[0].attrs != {"class": ["thinking-inner"]} or _stray_text(text) \
                or [p.attrs for p in parts] != [{"id": f"{aid}-thinking-blocks"},
                                                {"id": f"{aid}-thinking-tail", "class": ["tail"]}] \
                or parts[1].find(True) is not None or _stray_text(inner[0]):
            problems.append("the live reasoning block's parts are not the app's")
    return problems


def _stray_text(tag: Tag) -> bool:
    """Text (not blank) right inside `tag`, outside its elements."""
    return any(not isinstance(c, Tag) and c.strip() for c in tag.children)


def message_violations(article: Tag) -> list[str]:
    """What a message holds of the model's or the user's: its text and its reasoning."""
    return element_violations(content_elements(article)) + thinking_violations(article)


def sse_violations(body: str, user_text: str) -> list[str]:
    """An htmx answer stream: the bubbles, then whole partials (blocks sanitized, tails escaped, the
    reasoning block opened and closed as the app does), the final message with the question given
    back, and the close event."""
    frames = parse_sse(body)
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
    page = soup(bubbles)
    articles = page.find_all("article", recursive=False)
    answer = ""
    if [a.get("data-role") for a in articles] != ["user", "assistant"]:
        problems.append(f"bubbles frame structure: {[a.get('data-role') for a in articles]}")
    else:
        user = articles[0].select_one(".content.plain")
        if user is None or user.find(True) is not None or user.get_text() != cleaned(user_text):
            problems.append("the user's text is not shown exactly, as text")
        # The empty answer: its two targets and the reasoning's placeholder, nothing from the model yet.
        answer = articles[1].get("id", "")
        inner = [(t.name, t.get("id")) for t in articles[1].select(".content *")]
        if inner != [("div", f"{answer}-blocks"), ("div", f"{answer}-tail")]:
            problems.append(f"the empty answer bubble holds {inner}")
        placeholder = articles[1].select(f":scope > #{answer}-thinking")
        if len(placeholder) != 1 or placeholder[0].attrs != {"id": f"{answer}-thinking", "hidden": ""} \
                or placeholder[0].contents:
            problems.append("the answer bubble's reasoning placeholder is not the app's")
    problems += _step_violations([data for _, data in steps], answer)
    # The final frame: the answer, one article; then the question's edit control, its text given
    # back exactly, as the textarea's text, into the question's actions.
    found, frame_problems = partials(final)
    problems += frame_problems
    question = articles[0].get("id", "") if len(articles) == 2 else ""
    edit = soup(found[1]["body"]) if len(found) == 2 else None
    textarea = edit.select_one("details.edit textarea") if edit is not None else None
    if edit is None or (found[1]["target"], found[1]["swap"]) != (f"#{question}-actions", "innerHTML") \
            or textarea is None or textarea.find(True) is not None or textarea.get_text() != cleaned(user_text) \
            or edit.find("article") is not None:
        problems.append("the question's edit control is not given back, with its text exactly, in the final frame")
    else:
        problems += raw_violations(found[1]["body"])
    if len(found) != 2 or found[0]["swap"] != "outerHTML" or found[0]["target"] != f"#{answer}":
        problems.append(f"final frame: {final[:200]!r}")
    else:
        body = found[0]["body"]
        problems += raw_violations(body)  # the app's own frame of a message has none of these either
        parsed = soup(body)
        articles = parsed.find_all("article", recursive=False)
        if len(articles) != 1 or articles[0].get("aria-busy") != "false" or parsed.find_all("article")[1:]:
            problems.append("final frame structure")
        else:
            problems += message_violations(articles[0])
    return problems


def _step_violations(steps: list[str], answer: str) -> list[str]:
    """The frames between the bubbles and the final message, each whole partials for this answer:
    its text's blocks (sanitized) and tail (escaped), notices (escaped), and its reasoning as the app
    streams it: the block opened once in place of the placeholder (with the screen readers' status,
    in the same frame), pieces to its blocks and tail while it is open, then closed once, alone in
    its frame, before the answer's text goes on."""
    problems = []
    thinking = "none"  # then "live" once opened, "done" once closed
    for data in steps:
        found, frame_problems = partials(data)
        problems += frame_problems
        kinds = [(m["target"].removeprefix(f"#{answer}"), m["swap"]) for m in found]
        for m, (part, swap) in zip(found, kinds, strict=True):
            if not answer or not m["target"].startswith(f"#{answer}") or not m["target"][len(answer) + 1:] == part:
                problems.append(f"a step partial for another element: {m['target']}")
            elif (part, swap) == ("-thinking", "outerHTML") and thinking != "done":
                opening = thinking == "none"
                if kinds != ([("-thinking", "outerHTML"), ("-status", "innerHTML")] if opening else [(part, swap)]):
                    problems.append(f"a reasoning block {'opened' if opening else 'closed'} in an odd frame: {kinds}")
                problems += _thinking_partial_violations(m["body"], answer, live=opening)
                thinking = "live" if opening else "done"
            elif (part, swap) == ("-status", "innerHTML") and thinking == "live" and kinds[0] == ("-thinking", "outerHTML"):
                if m["body"] != "Thinking…":
                    problems.append(f"the status says {m['body'][:100]!r}")
            elif part in ("-blocks", "-thinking-blocks") and swap == "beforeend" \
                    and (part == "-thinking-blocks") == (thinking == "live"):
                problems += fragment_violations(m["body"])
            elif part in ("-tail", "-thinking-tail", "-tail-end", "-thinking-tail-end") \
                    and part.startswith("-thinking") == (thinking == "live") \
                    or part == "-notice":
                problems += tail_violations(m.group(0))
            else:
                problems.append(f"unexpected partial in a step: {m['target']} {swap} (reasoning {thinking})")
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
    page = soup(html)
    problems += frame_violations(page)
    articles = page.find_all("article")
    users = [a for a in articles if a.get("data-role") == "user"]
    shown = [u.select_one(".content.plain").get_text() if u.select_one(".content.plain") else None for u in users]
    if shown != [cleaned(t) for t in user_texts]:
        problems.append("the users' texts are not shown exactly, as text")
    for article in articles:
        problems += message_violations(article)
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
            problems += _draft_piece_violations(content.find_all(True, recursive=False) if content else [],
                                                reasoning_allowed=True)
    elif drafts:
        problems.append("a draft in a finished page")
    return problems


def _draft_piece_violations(children: list[Tag], reasoning_allowed: bool) -> list[str]:
    """The draft holds rendered blocks, raw text pieces, and (first) the model's reasoning, made of
    the same two kinds of piece inside the block that streams.THINKING_DRAFT_OPEN opens: one, with
    that exact frame."""
    problems = []
    reasoning = 0
    for child in children:
        if child.name == "div" and child.attrs == {"class": ["block"]}:
            problems += element_violations(child.find_all(True, recursive=False))
        elif child.name == "span" and child.attrs == {"class": ["raw"]}:
            if child.find(True) is not None:
                problems.append("markup inside a raw draft piece")
        elif child.name == "div" and child.attrs == {"class": ["live"]}:
            # A render of the tail (streams._Draft): model-derived HTML checked as a block is, and
            # the one span its text goes on in, holding only text.
            piece = copy.copy(child)
            ends = piece.find_all("span", class_="end")
            if len(ends) != 1 or ends[0].attrs != {"class": ["end"]} or ends[0].find(True) is not None:
                problems.append(f"a live draft piece without its one end span: {str(child)[:200]!r}")
            else:
                ends[0].unwrap()
                problems += element_violations(piece.find_all(True, recursive=False))
        elif reasoning_allowed and child.name == "details" and "thinking" in child.get("class", []):
            reasoning += 1
            parts = child.find_all(True, recursive=False)
            text = parts[1] if len(parts) == 2 else None
            inner = text.find_all(True, recursive=False) if text is not None else []
            if child.attrs != {"class": ["thinking", "live"], "open": ""} or reasoning > 1 or text is None \
                    or parts[0].name != "summary" or parts[0].find(True) is not None \
                    or parts[0].get_text() != "Thinking…" or _stray_text(child) \
                    or text.name != "div" or text.attrs != {"class": ["thinking-text", "markdown"]} \
                    or _stray_text(text) or len(inner) != 1 or inner[0].name != "div" \
                    or inner[0].attrs != {"class": ["thinking-inner"]}:
                problems.append(f"a reasoning block in the draft that is not the app's: {str(child)[:200]!r}")
            else:
                problems += _draft_piece_violations(inner[0].find_all(True, recursive=False), reasoning_allowed=False)
        else:
            problems.append(f"unexpected element in the draft: <{child.name} {child.attrs}>")
    return problems


PAGE_NEVER = ["iframe", "frame", "object", "embed", "img", "svg", "math", "style", "base", "template", "video",
              "audio", "dialog", "input"]  # input: only type=image


# The page's own links within itself: the skip links, and the custom instructions' note.
PAGE_OWN_FRAGMENTS = ("#conversation-list", "#message", "#system-prompt")


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
    examples = [i for i in ids if re.fullmatch(r"example-[1-9]", i)]  # an empty chat's example questions
    if [i for i in ids if i not in examples] != ["regenerate-form", "continue-form", "edit-form", "composer"] \
            or examples != [f"example-{n}" for n in range(1, len(examples) + 1)]:
        problems.append("the page's form was tampered with")
    for form in page.find_all("form"):
        example = form.get("id") in examples and str(form.get("action", "")).endswith("/messages")
        own = (form.get("id") in ("composer", "regenerate-form", "continue-form", "edit-form") or example
               or form.find_parent(class_="conversation-settings") is not None
               or form.get("action") in ("/logout", "/theme"))
        if not own or not str(form.get("action", "")).startswith(("/c/", "/logout", "/theme")):
            problems.append("the page's form was tampered with")
    for textarea in page.find_all("textarea"):
        if textarea.find_parent("form") is None and textarea.get("form") != "edit-form":
            problems.append("a text box outside the page's forms")
    # The draft's reasoning block: the draft checks check it (ids: a Tag compares equal by its contents).
    draft_reasoning = {id(d) for d in page.select(".draft > .content > details.thinking")}
    for content in page.select(".content, .thinking-text"):
        if any(id(c) not in draft_reasoning for c in content.find_all(["form", "textarea", "input", "select", "details",
                                                                   "article"])) or any(
                "code-copy" not in b.get("class", []) for b in content.find_all("button")):
            problems.append("a control inside a message's text")
    scripts = page.find_all("script")
    if len(scripts) != 3 or not all(s.get("src", "").startswith("/static/") and not s.string for s in scripts):
        problems.append("unexpected script elements")
    # One pass over the page (a CSS select per name costs a pass each, and the pages are long).
    present = {t.name if t.name != "input" else "input[type=image]" for t in page.find_all(PAGE_NEVER)
               if t.name != "input" or str(t.get("type", "")).lower() == "image"}
    problems += [f"a <{name}> in the page" for name in sorted(present)]
    for details in page.find_all("details"):
        reasoning = "thinking" in details.get("class", []) and (
            details.parent.name == "article" and details.parent.get("data-role") == "assistant"
            or id(details) in draft_reasoning)
        # The page's menus: the conversation list's (narrow screens), each entry's, the title bar's.
        menu = ("conversations-menu" in details.get("class", []) and details.parent.name == "nav"
                or "entry-menu" in details.get("class", []) and details.find_parent(id="conversation-list") is not None)
        if "conversation-settings" not in details.get("class", []) and details.find_parent(class_="actions") is None \
                and not reasoning and not menu:
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
        if tag.name == "a" and not str(tag.get("href", "")).startswith(("/", "http:", "https:", "mailto:")) \
                and tag.get("href") not in PAGE_OWN_FRAGMENTS:
            problems.append(f"<a href={tag.get('href')!r}> in the page")
    return problems


def refused_violations(message: str, status: int, body: str, htmx: bool) -> list[str]:
    """A message the app must refuse: a 4xx that says why, and (without JS) the text given back."""
    problems = []
    if not 400 <= status < 500:
        problems.append(f"status {status} for an invalid message")
    if status == 413:  # the body is over MAX_CONTENT_LENGTH: an error page
        page = soup(body)
        if page.select_one("[data-role=error]") is None or len(page.find_all("script")) != (0 if htmx else 3):
            problems.append("413 error page")
    elif htmx:
        error = soup(body).select_one("[data-role=error]")
        if error is None or HX_TAG.search(body) or "<script" in body:
            problems.append("htmx error fragment")
    else:
        problems += frame_violations(soup(body))
        typed = soup(body).select_one("form#composer textarea[name=message]")
        if typed is None or typed.get_text() != normalize(message):  # control characters go, the rest stays
            problems.append("the typed text is not given back exactly")
    return problems
