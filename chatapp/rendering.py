"""Model text → safe HTML: Python-Markdown (raw HTML off) → the allowlist sanitizer (sanitize.py)
→ Markup.

This is the only module that marks model-derived text as safe. `StreamingMarkdown` renders a
growing text block by block, so a streamed answer costs about one render in total.
"""

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import markdown
from markdown.extensions.fenced_code import FencedBlockPreprocessor
from markdown.postprocessors import Postprocessor
from markdown.preprocessors import Preprocessor
from markupsafe import Markup
from pygments.formatters.html import HtmlFormatter

from .sanitize import LANGUAGE_CLASS, clean

# Python-Markdown's link matching takes time quadratic in the `[` of one paragraph: a few thousand of
# them hold the event loop for long, which hostile model output must not be able to buy
# (tests/test_rendering.py pins the limit; no bench times it).
MAX_BRACKETS_PER_PARAGRAPH = 200
_PARAGRAPHS = re.compile(r"\n[ \t]*\n")


class _DefuseBrackets(Preprocessor):
    """A paragraph with more `[` than a person would write gets them escaped: shown, not linked.
    Runs after fenced code is set aside, so code blocks keep their brackets."""

    def run(self, lines: list[str]) -> list[str]:
        text = "\n".join(lines)
        if text.count("[") <= MAX_BRACKETS_PER_PARAGRAPH:
            return lines
        paragraphs = _PARAGRAPHS.split(text)
        separators = _PARAGRAPHS.findall(text)
        out = [p.replace("[", "\\[") if p.count("[") > MAX_BRACKETS_PER_PARAGRAPH else p for p in paragraphs]
        joined = out[0] + "".join(sep + para for sep, para in zip(separators, out[1:], strict=True))
        return joined.split("\n")


class _Capture(Postprocessor):
    """Keeps the output before Markdown's final strip(), so block outputs concatenate exactly."""

    text = ""

    def run(self, text: str) -> str:
        self.text = text
        return text


def _language_only(attrs: Iterable[tuple[str, str]]) -> tuple[str, list[str], dict[str, Any]]:
    """Fence attributes as fenced_code's handle_attrs returns them: no id, the first class only
    (the language), no options."""
    return "", [v for k, v in attrs if k == "."][:1], {}


class _CodeFormatter(HtmlFormatter):
    """Pygments' HTML, with the fence's language as `<code class="language-…">` (for the block's
    header bar); none for a fence without one (CodeHilite calls that "text") or an odd one."""

    def __init__(self, lang_str: str = "", **options: Any) -> None:
        super().__init__(**options)
        lang_str = lang_str.lower()
        self._code = f'<code class="{lang_str}">' \
            if LANGUAGE_CLASS.fullmatch(lang_str) and lang_str != "language-text" else "<code>"

    def _wrap_code(self, inner: Iterable[tuple[int, str]]) -> Iterable[tuple[int, str]]:
        yield 0, self._code
        yield from inner
        yield 0, "</code>"


def _make_markdown() -> tuple[markdown.Markdown, _Capture]:
    md = markdown.Markdown(
        extensions=["fenced_code", "tables", "codehilite", "sane_lists"],
        extension_configs={
            "tables": {"use_align_attribute": True},
            "codehilite": {"css_class": "highlight", "guess_lang": False, "noclasses": False,
                           "pygments_formatter": _CodeFormatter},
        },
    )
    # Raw HTML off: `<script>` in model text is shown as text, never parsed as markup.
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    # Fence attributes (```{ .py noclasses=True style=x }) would reach CodeHilite/Pygments as
    # options, or crash them: keep only the language.
    fences = md.preprocessors["fenced_code_block"]
    if not isinstance(fences, FencedBlockPreprocessor):
        raise TypeError(f"fenced_code_block is a {type(fences).__name__}, not fenced_code's preprocessor")
    fences.handle_attrs = _language_only  # type: ignore[method-assign]  # on this one instance, on purpose
    md.preprocessors.register(_DefuseBrackets(md), "chatapp_defuse_brackets", 24)  # after fences (25)
    capture = _Capture(md)
    md.postprocessors.register(capture, "chatapp_capture", -100)
    return md, capture


# One of each, reused: building them costs far more than a small render. Not thread-safe; the
# app renders on its single event loop.
_md, _capture = _make_markdown()
_OPENER = re.compile(  # a line that opens a fence, as fenced_code's FENCED_BLOCK_RE sees it
    r"(?P<fence>(?:~{3,}|`{3,}))[ ]*((\{[^\n]*\})|(\.?[\w#.+-]*[ ]*)?"
    r"""(hl_lines=(?P<quot>"|').*?(?P=quot)[ ]*)?)"""
)
_LIST_ITEM = re.compile(r"\s*(?:[*+-]|\d+[.)])(?:\s|$)")


def _fence_step(fence: str | None, line: str) -> str | None:
    """The open fence after `line` (None: outside), given the one before it."""
    if "\t" in line:  # Markdown expands tabs before it looks for fences
        line = line.expandtabs(4)
    if fence is None:
        m = _OPENER.fullmatch(line) if line[:1] in "`~" else None
        return m["fence"] if m else None
    return None if line.rstrip(" ") == fence else fence


def _open_fence(text: str) -> str | None:
    fence = None
    if "```" in text or "~~~" in text:
        for line in text.split("\n"):
            fence = _fence_step(fence, line)
    return fence


# One line of words, as the first piece of most answers is: a paragraph of the text as it is, so
# Markdown and the sanitizer need not run (tests/test_rendering.py pins that both agree).
_SIMPLE = re.compile(r"[^\W\d_](?:[^\W_]|[ .,;:!?'\"()/%$@+=-])*")


def _render(text: str, fence: str | None) -> str:
    """Sanitized HTML, not yet stripped. `fence`: an unclosed fence at the end, closed here."""
    if _SIMPLE.fullmatch(text):
        return f"<p>{text}</p>"
    if fence:
        text += ("" if text.endswith("\n") else "\n") + fence + "\n"
    _md.reset()
    _capture.text = ""  # convert() returns early, skipping postprocessors, on blank text
    _md.convert(text)
    return clean(_capture.text)


def render_markdown(text: str) -> Markup:
    """The one function that turns model (or user) text into HTML: Python-Markdown → bleach allowlist → Markup."""
    if "\r" in text:  # as Markdown's own normalization does, so _open_fence sees its lines
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return Markup(_render(text, _open_fence(text)).strip())


# --- the unfinished tail, shown rendered while it streams ---------------------------------------
# Re-rendering the tail for every piece would cost O(tail) a piece: a long paragraph or table would
# make an answer quadratic. So most pieces are added as text where the tail's text goes on (exact
# when the piece is plain words, and always inside an open code block), and a render is paid from
# a budget that grows with the text fed: at most RENDER_BUDGET characters rendered per character
# fed (plus RENDER_COST a render), so the live tail costs O(1) a character, amortized, however long
# the answer or its tail. Past LIVE_RENDER_LIMIT a tail is no longer re-rendered at all, so no one
# piece stalls the event loop for long. bench/render.py measures both.
RENDER_BUDGET = 0.5
RENDER_COST = 100  # a render's fixed cost, in characters of text rendered
RENDER_CREDIT_START = 2000  # so a short answer's tail is rendered at every piece that needs it
RENDER_CREDIT_MAX = 16000
LIVE_RENDER_LIMIT = 8000
_PLAIN = re.compile(r"(?:[^\W_]|[ \t.,;:!?'\"()/%$@+=-])*")  # text Markdown shows as it is, mid-line
_OK_END = frozenset(".,;:!?'\"%")  # after these (or a letter or digit) plain text may follow as is
# A line with only block markers so far (`## `, `- `, `1.`, `|`, `>`, a rule) or a fence forming:
# not shown until it says more, so the reader never sees the bare marker.
_MARKERS_ONLY = re.compile(r"[\s#>*+\-=_|:.)\d`~]*|[ \t]*(?:```|~~~).*")


def _close_inline(line: str) -> tuple[str, int]:
    """The unfinished last line with its open `**`, `*` and code spans closed, so that it shows
    as it will end; an opener with nothing after it yet is left out. Returns the line to render
    and how many characters of `line` it shows."""
    openers: list[tuple[str, int]] = []
    code: tuple[str, int] | None = None
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c == "\\":
            i += 2
        elif c == "`":
            j = i
            while j < n and line[j] == "`":
                j += 1
            if code is None:
                code = (line[i:j], i)
            elif line[i:j] == code[0]:
                code = None
            i = j
        elif c == "*" and code is None:
            marker = "**" if line.startswith("**", i) else "*"
            after = line[i + len(marker):i + len(marker) + 1]
            if openers and openers[-1][0] == marker:
                openers.pop()
            elif after not in (" ", "\t") and not (i == 0 and marker == "*" and after == " "):
                openers.append((marker, i))
            i += len(marker)
        else:
            i += 1
    if code is not None:
        openers.append(code)
    end = len(line)
    while openers and not line[openers[-1][1] + len(openers[-1][0]):end].strip():
        end = openers.pop()[1]
    return line[:end].rstrip() + "".join(m for m, _ in reversed(openers)), end


def _prepare(tail: str) -> tuple[str, int, bool]:
    """The tail as it should look now: the Markdown to render, how many characters of the tail it
    shows, and whether plain text may be added after it as is."""
    start = tail.rfind("\n") + 1
    line = tail[start:].rstrip(" \t")
    if _MARKERS_ONLY.fullmatch(line):
        source, shown, ok = tail[:start], start, False
    else:
        closed, kept = _close_inline(line)
        source, shown = tail[:start] + closed, start + kept
        ok = kept == len(line) and (line[-1].isalnum() or line[-1] in _OK_END)
    # A table's first row, before its delimiter row: shown as the table's head already.
    if source.lstrip(" ").startswith("|") and "\n" not in source.rstrip("\n"):
        head = source.rstrip("\n")
        source = head + "\n|" + "---|" * (head.strip().strip("|").count("|") + 1)
    return source, shown, ok


def _end_point(html: str) -> int:
    """Where text added to this HTML goes: after its last text, inside the elements that close
    after it (and not inside a table's empty body, where a parser would move it out)."""
    end = len(html)
    while True:
        end = len(html[:end].rstrip())
        start = html.rfind("<", 0, end)
        if not html.endswith(">", 0, end) or not (html.startswith("</", start)
                                                  or html.startswith("<tbody>", start)):
            return end
        end = start


def _cut(html: str) -> tuple[Markup, Markup]:
    at = _end_point(html)
    return Markup(html[:at]), Markup(html[at:])


def _code_frame(lead: str, opener: str, fence: str) -> tuple[Markup, Markup]:
    """The tail up to an open code block, rendered once, and that block's frame (as its final
    render will have it), cut where the code's text goes."""
    lead_html = _render(lead, None).strip() if lead.strip() else ""
    head, foot = _empty_block(opener, fence)
    return Markup((lead_html + "\n" if lead_html else "") + head), foot


@functools.lru_cache(maxsize=64)
def _empty_block(opener: str, fence: str) -> tuple[Markup, Markup]:
    """An empty code block cut where its code goes; kept, as Pygments takes long to find a lexer."""
    head, foot = _cut(_render(opener + "\n", fence).strip())
    # The empty block's own newline goes: the code's text brings its own, and one more would show
    # as a blank line that the finished block does not have.
    return head, Markup(foot.lstrip())


_DELIMITER_ROW = re.compile(r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-*:?[ \t]*)*\|?[ \t]*$\n?", re.M)
_LINE_MARK = re.compile(r"^[ \t]*(?:#{1,6}[ \t]+|[*+-][ \t]+|>[ \t]?)", re.M)
_INLINE_MARK = re.compile(r"!?\[|\]\([^)\s]*\)?|\]|\*+|`+|\\(?=[^\w\s])")


def _plainly(text: str) -> str:
    """Text added to the tail before the budget allows its render: its words without the Markdown
    marks (headings', list items', emphasis', code spans', links', a table's pipes), so the reader
    sees no raw syntax meanwhile. O(len(text)); the next render shows it formatted."""
    text = _LINE_MARK.sub("", _DELIMITER_ROW.sub("", text))
    return _INLINE_MARK.sub("", text).replace("|", " ")


def _hold_fence_line(code: str) -> tuple[str, str]:
    """Code to show, and an unfinished last line held back that may yet be the closing fence."""
    start = code.rfind("\n") + 1
    if code[start:start + 1] in ("`", "~"):
        return code[:start], code[start:]
    return code, ""


@dataclass(frozen=True)
class Shown:
    """How the unfinished tail looks now. With `head`, the shown tail becomes head + text + foot:
    sanitized HTML cut where its text goes on (inside its last element: a paragraph, a heading, a
    table cell, an open code block). Without, `text` is added at that point of the shown tail."""

    text: str  # plain (unescaped) text; the caller escapes it
    head: Markup | None = None
    foot: Markup = Markup("")


@dataclass(frozen=True)
class StreamStep:
    blocks: Markup | None  # HTML of blocks completed by this piece, to append; None if none
    tail: str  # plain (unescaped) text of the unfinished tail; the caller escapes it
    replace_tail: bool  # True: tail replaces the shown tail; False: append it (tail == piece)
    shown: Shown  # the tail as it should look: `tail` rendered (the writers show this)


class StreamingMarkdown:
    """Renders a growing markdown text block by block; finish() == render_markdown(text).

    A block ends at a blank line outside a fence, decided once the next line's first character
    arrives, and only where rendering the two sides apart gives the same HTML as together (no
    split before indented lines, `>` lines, or list items after a list). Each feed() is
    O(len(piece)) plus the render of the blocks it completes, plus the live tail's renders, paid
    from a budget that grows with the text fed (see RENDER_BUDGET).
    """

    def __init__(self) -> None:
        self._chunks: list[str] = []  # the whole text, joined lazily by .text
        self._tail: list[str] = []  # text after the last rendered block
        self._line: list[str] = []  # the current unfinished line (also inside _tail)
        self._pending = 0  # chars at the start of _tail's joined text forming finished lines
        self._fence: str | None = None
        self._has_list = False  # the unrendered text has a line that may be a list item
        self._content = False  # the unrendered text has a non-blank line
        self._boundary: int | None = None  # offset in tail where the next block may start
        self._parts: list[str] = []  # rendered blocks, non-empty only
        self._global = False  # text that reaches across blocks (reference definitions)
        self._nosplit = False  # characters Markdown rewrites (\r, STX, ETX): no more blocks
        # The tail as shown (see Shown): what of it is not shown yet, and how the shown part ends.
        self._tail_len = 0
        self._unshown: list[str] = []  # the end of the tail, not shown yet
        self._new_tail = True  # the shown tail must be replaced (a block took the old one)
        self._appendable = False  # plain text added at the end point shows as a render would
        self._stale = False  # text was added as it is: render when the budget allows
        self._code = ""  # "open": shown as an open code block; "closed": its fence has closed since
        self._opener_at = self._code_at = self._close_at = 0  # offsets in the tail of the fence lines
        self._frame_at = -1  # the opener whose block the shown frame is
        self._credit = float(RENDER_CREDIT_START)

    @property
    def text(self) -> str:
        """The full text so far (joins once per call; don't call it per token)."""
        if len(self._chunks) > 1:
            self._chunks = ["".join(self._chunks)]
        return self._chunks[0] if self._chunks else ""

    def feed(self, piece: str) -> StreamStep:
        """Adds a piece; returns newly finished blocks and the tail to show."""
        self._chunks.append(piece)
        if not self._nosplit and ("\r" in piece or "\x02" in piece or "\x03" in piece):
            self._nosplit = True
            self._boundary = None
        cut = None
        start = 0
        while start < len(piece):
            if self._boundary is not None and not self._line:
                c = piece[start]
                if c not in " \t\n":
                    cut = self._decide(c, cut)
            nl = piece.find("\n", start)
            if nl < 0:
                self._line.append(piece[start:])
                self._tail.append(piece[start:])
                break
            self._line.append(piece[start:nl])
            self._tail.append(piece[start:nl + 1])
            line = "".join(self._line)
            self._line = []
            self._pending += len(line) + 1
            self._end_line(line)
            start = nl + 1
        self._tail_len += len(piece)
        self._credit = min(self._credit + RENDER_BUDGET * len(piece), RENDER_CREDIT_MAX)
        if cut is None:
            self._unshown.append(piece)
            return StreamStep(None, piece, False, self._show())
        tail = "".join(self._tail)
        block, rest = tail[:cut], tail[cut:]
        self._tail = [rest]
        self._tail_len -= cut
        self._pending -= cut
        self._opener_at -= cut
        self._code_at -= cut
        self._close_at -= cut
        if self._boundary is not None:
            self._boundary -= cut
        html = _render(block, None)
        blocks = None
        if html:
            blocks = Markup(("\n" if self._parts else "") + html)
            self._parts.append(html)
        self._unshown, self._new_tail, self._code = [rest], True, ""
        return StreamStep(blocks, rest, True, self._show())

    def _show(self) -> Shown:
        """What changes in the shown tail: text added at its end point, or a new render of it."""
        pending = "".join(self._unshown)
        if self._fence is not None and not self._nosplit:
            return self._show_code(pending)
        if self._code == "open":  # the fence has closed: the code before it still goes in
            self._code = "closed"
            shown_at = self._tail_len - len(pending)
            code, pending = pending[:max(self._close_at - shown_at, 0)], pending[max(self._close_at - shown_at, 0):]
            self._unshown = [pending]
            self._appendable = False
            return Shown(code)
        if self._code == "closed" and not pending[pending.find("\n") + 1:].strip():
            self._unshown = [pending]
            return Shown("")  # only the closing fence and blank lines: nothing to show yet
        if not self._new_tail and not self._stale and self._appendable and _PLAIN.fullmatch(pending):
            self._unshown = []
            return Shown(pending)
        cost = self._tail_len + RENDER_COST
        if self._tail_len <= LIVE_RENDER_LIMIT and self._credit >= cost:
            self._credit -= cost
            return self._render_tail()
        if self._code == "closed":
            return Shown("")  # text must not go into the closed code block: it waits for a render
        # No budget now: the text goes in without its marks (and not at all while it is only a
        # marker or a fence being written); the tail is rendered when the budget allows.
        start = pending.rfind("\n") + 1
        if _MARKERS_ONLY.fullmatch(pending[start:]):
            pending, self._unshown = pending[:start], [pending[start:]]
        else:
            self._unshown = []
        self._stale = True
        if self._new_tail:
            self._new_tail = False
            return Shown(_plainly(pending), Markup(""), Markup(""))
        return Shown(_plainly(pending))

    def _render_tail(self) -> Shown:
        tail = "".join(self._tail)
        source, shown, ok = _prepare(tail)
        html = _render(source, _open_fence(source) if self._nosplit else None).strip()
        head, foot = _cut(html)
        rest = tail[shown:]
        self._new_tail = self._stale = False
        self._code = ""
        self._appendable = ok and not rest.strip(" \t")
        self._unshown = [] if self._appendable else [rest]
        return Shown(rest if self._appendable else "", head, foot)

    def _show_code(self, pending: str) -> Shown:
        """Inside an open fence: its code goes in as text, never re-rendered; the tail before it
        and the block's frame are rendered once, when the fence opens."""
        if self._code == "open" and not self._new_tail and self._frame_at == self._opener_at:
            code, held = _hold_fence_line(pending)
            self._unshown = [held]
            return Shown(code)
        tail = "".join(self._tail)
        self._credit -= self._code_at + RENDER_COST  # paid even in debt: a code block must look like one
        head, foot = _code_frame(tail[:self._opener_at], tail[self._opener_at:self._code_at - 1], self._fence or "")
        code, held = _hold_fence_line(tail[self._code_at:])
        self._unshown = [held]
        self._code, self._new_tail, self._stale, self._appendable = "open", False, False, False
        self._frame_at = self._opener_at
        return Shown(code, head, foot)

    def _decide(self, first: str, cut: int | None) -> int | None:
        """At a possible boundary whose next line starts with `first`: split there, or not."""
        boundary, self._boundary = self._boundary, None
        if first == ">" or (self._has_list and (first in "*+-" or first.isdigit())):
            return cut
        self._has_list = False
        self._content = False
        return boundary

    def _end_line(self, line: str) -> None:
        fence = self._fence
        self._fence = _fence_step(fence, line)
        if fence is None and self._fence is not None:
            self._opener_at, self._code_at = self._pending - len(line) - 1, self._pending
        elif fence is not None and self._fence is None:
            self._close_at = self._pending - len(line) - 1
        if "]:" in line:
            self._global = True
        if fence is not None or self._fence is not None:
            self._content = True
            return
        if line.strip(" \t"):
            if self._boundary is not None:  # an indented line after a blank one: same block
                self._boundary = None
            self._content = True
            if _LIST_ITEM.match(line):
                self._has_list = True
        elif self._content and not self._nosplit:
            self._boundary = self._pending

    def finish(self) -> Markup:
        """The final HTML: exactly render_markdown(self.text)."""
        line = "".join(self._line)
        fence = _fence_step(self._fence, line) if line else self._fence
        if self._global or self._nosplit or "]:" in line or not self._parts:
            return render_markdown(self.text)
        tail = _render("".join(self._tail), fence)
        return Markup("\n".join(self._parts + [tail] if tail else self._parts).strip())
