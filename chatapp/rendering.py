"""Model text → safe HTML: Python-Markdown (raw HTML off) → the allowlist sanitizer (sanitize.py)
→ Markup.

This is the only module that marks model-derived text as safe. `StreamingMarkdown` renders a
growing text block by block, so a streamed answer costs about one render in total.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import markdown
from markdown.extensions.fenced_code import FencedBlockPreprocessor
from markdown.postprocessors import Postprocessor
from markdown.preprocessors import Preprocessor
from markupsafe import Markup

from .sanitize import clean

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


def _make_markdown() -> tuple[markdown.Markdown, _Capture]:
    md = markdown.Markdown(
        extensions=["fenced_code", "tables", "codehilite", "sane_lists"],
        extension_configs={
            "tables": {"use_align_attribute": True},
            "codehilite": {"css_class": "highlight", "guess_lang": False, "noclasses": False},
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


def _render(text: str, fence: str | None) -> str:
    """Sanitized HTML, not yet stripped. `fence`: an unclosed fence at the end, closed here."""
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


@dataclass(frozen=True)
class StreamStep:
    blocks: Markup | None  # HTML of blocks completed by this piece, to append; None if none
    tail: str  # plain (unescaped) text of the unfinished tail; the caller escapes it
    replace_tail: bool  # True: tail replaces the shown tail; False: append it (tail == piece)


class StreamingMarkdown:
    """Renders a growing markdown text block by block; finish() == render_markdown(text).

    A block ends at a blank line outside a fence, decided once the next line's first character
    arrives, and only where rendering the two sides apart gives the same HTML as together (no
    split before indented lines, `>` lines, or list items after a list). Each feed() is
    O(len(piece)) plus the render of the blocks it completes.
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
        if cut is None:
            return StreamStep(None, piece, False)
        tail = "".join(self._tail)
        block, rest = tail[:cut], tail[cut:]
        self._tail = [rest]
        self._pending -= cut
        if self._boundary is not None:
            self._boundary -= cut
        html = _render(block, None)
        blocks = None
        if html:
            blocks = Markup(("\n" if self._parts else "") + html)
            self._parts.append(html)
        return StreamStep(blocks, rest, True)

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
