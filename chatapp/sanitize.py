"""The allowlist sanitizer behind rendering.render_markdown: what HTML may reach a page.

bleach does the work (the user chose it; it no longer gets releases), so this is the one module
that knows it: moving to another sanitizer such as nh3 means rewriting this file and nothing else,
with tests/test_rendering.py and tests/test_hostile.py pinning the result.
"""

import re
from collections.abc import Callable, Iterator
from typing import Any

import bleach
# bleach's vendored html5lib Filter, re-exported here at run time; types-bleach leaves it out on
# purpose (it is not public), and html5lib's own stubs describe another copy of the class.
from bleach.html5lib_shim import Filter  # type: ignore[attr-defined]
from bleach.html5lib_shim import convert_entities
from pygments.token import STANDARD_TYPES

# "img" reaches _SafetyFilter only, which turns every one into a link or plain text.
ALLOWED_TAGS = frozenset(
    "p br hr h1 h2 h3 h4 h5 h6 strong em del code pre blockquote ul ol li table thead tbody tr "
    "th td a span div sup sub img".split()
)


def _align(tag: str, name: str, value: str) -> bool:
    return name == "align" and value in ("left", "right", "center")


ALLOWED_ATTRIBUTES: dict[str, list[str] | Callable[[str, str, str], bool]] = {
    "a": ["href", "title"], "img": ["src", "alt"], "th": _align, "td": _align,
    "ol": lambda tag, name, value: name == "start" and value.isdigit() and len(value) < 10,
    "span": ["class"], "div": ["class"], "code": ["class"],
}
# Class names Pygments/codehilite emit; _SafetyFilter drops every other one.
PYGMENTS_CLASSES = frozenset(STANDARD_TYPES.values()) | {"highlight", "hll"}
# A code block's language (rendering writes it on the block's <code>), for its header bar: kept on
# <code> only, one of them, and only a short lowercase token.
LANGUAGE_CLASS = re.compile(r"language-[a-z0-9+#-]{1,30}")
LINK_PREFIXES = ("http:", "https:", "mailto:")
LINK_REL = "nofollow noopener noreferrer"
_HREF, _SRC, _ALT, _CLASS, _REL = ((None, n) for n in ("href", "src", "alt", "class", "rel"))


class _SafetyFilter(Filter):
    """Runs after bleach's sanitizer: link policy, no images, Pygments classes only (and a
    language on <code>)."""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        links: list[bool] = []  # one entry per open <a>: was it kept?
        for token in super().__iter__():
            kind, name = token["type"], token.get("name")
            if name == "a" and kind == "StartTag":
                href = convert_entities(token["data"].get(_HREF, ""))
                links.append(href[:7].lower().startswith(LINK_PREFIXES))
                if links[-1]:
                    token["data"][_REL] = LINK_REL
                    yield token
            elif name == "a" and kind == "EndTag":
                if links.pop() if links else False:
                    yield token
            elif name == "img":
                # Never a remote load: an image becomes a link to it (outside other links) or its alt.
                src, alt = token["data"].get(_SRC, ""), token["data"].get(_ALT, "")
                src, alt = convert_entities(src), convert_entities(alt)  # bleach holds them escaped
                if src[:8].lower().startswith(("http:", "https:")) and not any(links):
                    yield {"type": "StartTag", "name": "a", "namespace": token.get("namespace"),
                           "data": {_HREF: src, _REL: LINK_REL}}
                    yield {"type": "Characters", "data": alt or src}
                    yield {"type": "EndTag", "name": "a", "namespace": token.get("namespace")}
                elif alt:
                    yield {"type": "Characters", "data": alt}
            else:
                if kind == "StartTag" and _CLASS in token["data"]:
                    classes = token["data"][_CLASS].split()
                    kept = [c for c in classes if c in PYGMENTS_CLASSES]
                    if name == "code":
                        kept += [c for c in classes if LANGUAGE_CLASS.fullmatch(c)][:1]
                    if kept:
                        token["data"][_CLASS] = " ".join(kept)
                    else:
                        del token["data"][_CLASS]
                yield token


# strip=False: any tag outside the list is shown escaped rather than silently dropped. With raw
# HTML off, only Markdown's own elements reach bleach, so this is a second wall, not the first.
_cleaner = bleach.Cleaner(
    tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, protocols={"http", "https", "mailto"},
    strip=False, strip_comments=True, filters=[_SafetyFilter],
)


def clean(html: str) -> str:
    """Markdown's HTML, with everything outside the allowlist escaped or dropped."""
    return _cleaner.clean(html)
