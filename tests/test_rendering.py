"""rendering: hostile input never yields active HTML; streamed output equals the one-shot render."""

import time
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import Markup, escape

from chatapp import rendering
from chatapp.rendering import StreamingMarkdown, StreamStep, render_markdown
from chatapp.sanitize import ALLOWED_TAGS, LINK_REL, PYGMENTS_CLASSES, clean
from tests.support.hostile_checks import fragment_violations

SAFE_HREF = ("http:", "https:", "mailto:")
EMITTED_TAGS = ALLOWED_TAGS - {"img"}


class _Tree(HTMLParser):
    """Collects (tag, attrs) of every element and the text, as a browser's tokenizer sees them."""

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.elements, self.text = [], []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)

    def tags(self, name):
        return [attrs for tag, attrs in self.elements if tag == name]


def _assert_inert(html):
    assert isinstance(html, Markup)
    tree = _Tree(str(html))
    for tag, attrs in tree.elements:
        assert tag in EMITTED_TAGS, tag
        for name, value in attrs.items():
            assert not name.startswith(("on", "hx-", "data-", "style", "id")), name
            if name == "href":
                assert value.lower().startswith(SAFE_HREF), value
                assert attrs["rel"] == LINK_REL
            if name == "class":
                language = [c for c in value.split() if tag == "code" and c.startswith("language-")]
                assert set(value.split()) - set(language) <= PYGMENTS_CLASSES, value
                assert len(language) <= 1 and all(c[9:].isascii() and len(c) <= 39 for c in language), value
    assert "<hx-" not in str(html).lower().replace("&lt;", "")
    return tree


HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](java&#x09;script:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD4=)",
    "[x](vbscript:msgbox(1))",
    "[x](/relative/path)",
    "[x](  javascript:alert(1))",
    "<javascript:alert(1)>",
    '<div hx-get="/x" hx-trigger="load">',
    '<a href="/" hx-post="/c/1">x</a>',
    '<hx-partial hx-target="body">pwn</hx-partial>',
    "<iframe src=https://evil.example></iframe>",
    "<svg onload=alert(1)>",
    "<math><mi xlink:href=javascript:alert(1)>x</mi></math>",
    "<style>body{display:none}</style>",
    "<form action=/x><input name=a></form>",
    "<template><script>alert(1)</script></template>",
    "<!-- comment --><b onclick=alert(1)>b</b>",
    "```{ .python onclick=alert(1) #id style=x data-x=1 }\nx = 1\n```",
    "``` evil\" onmouseover=\"alert(1)\nx\n```",
    "![a\" onerror=\"alert(1)](https://e.example/x.png)",
    '[t](https://a.example "\\" onmouseover=alert(1) x=\\"")',
    "&lt;script&gt; &#60;script&#62; &amp;",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_input_is_inert(text):
    tree = _assert_inert(render_markdown(text))
    assert not tree.tags("a") or all(a["href"].startswith("http") for a in tree.tags("a"))


@pytest.mark.parametrize(
    "text", ["<script>alert(1)</script>", '<hx-partial hx-target="body">pwn</hx-partial>']
)
def test_raw_html_is_shown_as_text(text):
    html = render_markdown(text)
    assert _Tree(str(html)).elements == [("p", {})]
    assert "".join(_Tree(str(html)).text) == text


@pytest.mark.parametrize(
    "link", ["javascript:alert(1)", "JaVaScRiPt:alert(1)", "java&#x09;script:alert(1)",
             "data:text/html;base64,PHNjcmlwdD4=", "vbscript:msgbox(1)", "/relative"],
)
def test_unsafe_link_keeps_only_its_text(link):
    tree = _Tree(str(render_markdown(f"see [the text]({link}) here")))
    assert tree.elements == [("p", {})]
    assert "".join(tree.text) == "see the text here"


def test_link_gets_rel_and_title_is_escaped():
    html = str(render_markdown('[t](https://a.example "<hx-partial hx-target=body>")'))
    assert "<hx-partial" not in html and "&lt;hx-partial" in html
    (a,) = _Tree(html).tags("a")
    assert a == {"href": "https://a.example", "rel": LINK_REL,
                 "title": "<hx-partial hx-target=body>"}


def test_mailto_and_autolinks():
    tree = _Tree(str(render_markdown("<https://x.example/a> and [m](mailto:a@b.example)")))
    assert [a["href"] for a in tree.tags("a")] == ["https://x.example/a", "mailto:a@b.example"]


@pytest.mark.parametrize(
    ("text", "link", "shown"),
    [
        ("![alt text](https://evil.example/x.png?secret=1)", "https://evil.example/x.png?secret=1",
         "alt text"),
        ("![](https://evil.example/x.png)", "https://evil.example/x.png",
         "https://evil.example/x.png"),
        ("![alt text](x.png)", None, "alt text"),
        ("![alt text](data:image/png;base64,AAAA)", None, "alt text"),
        ("[![inner](https://e.example/i.png)](https://outer.example)", "https://outer.example",
         "inner"),
        ("![r][i]\n\n[i]: https://e.example/r.png", "https://e.example/r.png", "r"),
    ],
)
def test_images_never_load(text, link, shown):
    tree = _assert_inert(render_markdown(text))
    assert not tree.tags("img")
    assert [a["href"] for a in tree.tags("a")] == ([link] if link else [])
    assert "".join(tree.text).strip() == shown


def test_code_is_highlighted_with_classes_only():
    tree = _assert_inert(render_markdown("```python\nimport os\n```"))
    assert tree.tags("div") == [{"class": "highlight"}]
    assert {"class": "kn"} in tree.tags("span")
    assert "".join(tree.text).strip() == "import os"


def test_user_classes_on_fences_are_dropped():
    tree = _assert_inert(render_markdown("``` { .python .evil #x }\nx = 1\n```"))
    assert tree.tags("div") == [{"class": "highlight"}]
    assert tree.tags("code") == [{"class": "language-python"}]  # the first class is the language


@pytest.mark.parametrize(
    ("text", "language"),
    [("```python\nx = 1\n```", "language-python"), ("```C++\nx;\n```", "language-c++"),
     ("~~~ .js\nx\n~~~", "language-js"), ("```f#\nx\n```", "language-f#"),
     ("```nosuchlang\nx\n```", "language-nosuchlang"),  # unknown to Pygments: shown as plain text
     ("```python\nx = 1", "language-python"),  # still open
     ("```\nx\n```", None), ("```text\nx\n```", None), ("    x = 1\n", None),
     ("```" + "a" * 31 + "\nx\n```", None), ("```py.x\nx\n```", None), ('```{ .x"onclick=y }\nx\n```', None)],
)
def test_a_code_block_keeps_its_language_for_its_header(text, language):
    tree = _assert_inert(render_markdown(text))
    assert tree.tags("code") == [{"class": language} if language else {}]
    assert tree.tags("div") == [{"class": "highlight"}] and tree.tags("pre") == [{}]


@pytest.mark.parametrize(
    ("html", "kept"),
    [('<code class="language-python">x</code>', '<code class="language-python">x</code>'),
     ('<code class="language-python language-js">x</code>', '<code class="language-python">x</code>'),
     ("<code class='language-x\" onclick=y'>x</code>", "<code>x</code>"),
     ('<code class="language-x&quot; onclick=y">x</code>', "<code>x</code>"),
     ('<code class="language-py&#32;evil">x</code>', "<code>x</code>"),
     ('<code class="language-' + "a" * 200 + '">x</code>', "<code>x</code>"),
     ('<code class="language-">x</code>', "<code>x</code>"), ('<code class="LANGUAGE-PY">x</code>', "<code>x</code>"),
     ('<code class="hljs evil">x</code>', "<code>x</code>"),
     ('<pre class="language-py">x</pre>', "<pre>x</pre>"), ('<span class="language-py">x</span>', "<span>x</span>"),
     ('<div class="highlight language-py">x</div>', '<div class="highlight">x</div>')],
)
def test_the_sanitizer_keeps_one_strict_language_class_on_code_only(html, kept):
    assert clean(html) == kept


def test_the_hostile_checks_allow_one_strict_language_on_code_only():
    assert fragment_violations('<pre><code class="language-c++">x</code></pre>') == []
    for html in ('<code class="language-py language-js">x</code>', '<code class="language-' + "a" * 200 + '">x</code>',
                 '<code class="language-x&quot;">x</code>', '<code class="hljs evil">x</code>',
                 '<div class="language-py">x</div>', '<span class="language-py">x</span>',
                 '<code class="language-">x</code>', '<code class="language-Py">x</code>'):
        assert fragment_violations(html), html


def test_table_uses_align_attribute():
    tree = _assert_inert(render_markdown("| a | b | c |\n|:--|--:|:-:|\n| 1 | 2 | 3 |"))
    assert [th.get("align") for th in tree.tags("th")] == ["left", "right", "center"]
    assert len(tree.tags("td")) == 3


def test_lists_headings_quotes():
    tree = _assert_inert(render_markdown("# H\n\n3. a\n4. b\n\n- c\n\n> q\n\n---"))
    assert [t for t, _ in tree.elements] == ["h1", "ol", "li", "li", "ul", "li", "blockquote",
                                             "p", "hr"]
    assert tree.tags("ol") == [{"start": "3"}]


def test_unclosed_fence_renders_as_code():
    tree = _assert_inert(render_markdown("text\n\n```python\nprint(1)"))
    assert tree.tags("div") == [{"class": "highlight"}]
    assert "```" not in "".join(tree.text)


@pytest.mark.parametrize(
    "text",
    ["x" * 300_000, "a\x00b\x00<script>\x00", "> " * 100 + "deep", ">" * 100 + " deep",
     "- " * 100 + "deep", "*" * 20_000, "[" * 1000 + "]" * 1000, "`" * 10_000, "\x02\x03\r\n\t"],
)
def test_pathological_input_is_bounded(text):
    start = time.process_time()
    _assert_inert(render_markdown(text))
    assert time.process_time() - start < 2.0


def test_nul_is_dropped():
    assert "\x00" not in render_markdown("a\x00b")


def _full_render(text):
    """Markdown and the sanitizer, without rendering._render's shortcut for a line of words."""
    rendering._md.reset()
    rendering._capture.text = ""
    rendering._md.convert(text)
    return clean(rendering._capture.text)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.one_of(st.sampled_from(list(" .,;:!?'\"()/%$@+=-_*#`[]<>&\\|~\t\n")),
                                  st.characters(categories=["L", "N", "M", "Pc", "Zs"])), max_size=40))
def test_a_line_of_words_renders_as_markdown_and_the_sanitizer_would(text):
    if rendering._SIMPLE.fullmatch(text):  # the others go through Markdown anyway
        assert rendering._render(text, None) == _full_render(text) == f"<p>{text}</p>"


@pytest.mark.parametrize("text", ["word0 ", "Hello, world.", 'She said "hi" (twice) at 5% + $3/day.', "naïve café 東京"])
def test_the_usual_first_words_take_the_shortcut(text):
    assert rendering._SIMPLE.fullmatch(text)
    assert rendering._render(text, None) == _full_render(text)


# --- streaming ------------------------------------------------------------------------------

class _Page:
    """The unfinished tail as a page shows it: a render replaces it, text goes in at its end point."""

    def __init__(self):
        self.head = self.foot = Markup("")
        self.text = ""

    def show(self, shown):
        if shown.head is not None:
            self.head, self.text, self.foot = shown.head, "", shown.foot
        self.text += shown.text
        return self.html()

    def html(self):
        return Markup(self.head + escape(self.text) + self.foot)


def _live(*pieces):
    """The tail's HTML as shown after feeding `pieces`, parsed."""
    s, page = StreamingMarkdown(), _Page()
    for piece in pieces:
        page.show(s.feed(piece).shown)
    return _assert_inert(page.html())


def _stream(text, sizes):
    """Feeds text in pieces of the given sizes; checks each StreamStep; returns finish()."""
    s, shown_blocks, shown_tail, fed = StreamingMarkdown(), [], "", 0
    page = _Page()
    sizes = iter(sizes)
    while fed < len(text):
        piece = text[fed:fed + next(sizes, 7) or 1]
        fed += len(piece)
        step = s.feed(piece)
        assert isinstance(step, StreamStep)
        _assert_inert(page.show(step.shown))  # every state of the shown tail is as safe as a block
        if step.blocks is not None:
            assert step.replace_tail and isinstance(step.blocks, Markup) and step.blocks
            shown_blocks.append(step.blocks)
        if step.replace_tail:
            shown_tail = step.tail
        else:
            assert step.tail == piece
            shown_tail += step.tail
        assert s.text == text[:fed]
        assert text[:fed].endswith(shown_tail)
        if "]:" not in text:  # rendered blocks are final as soon as they are shown
            done = text[:fed - len(shown_tail)]
            assert "".join(shown_blocks).strip() == render_markdown(done)
    return s.finish()


_word = st.sampled_from(["word", "Mixed", "x", "`code`", "*em*", "**strong**", "[l](https://a.b)",
                         "![i](https://a.b/i.png)", "<https://a.b>", "<b>", "&amp;", "a_b",
                         "1.", "-", "*", ">", "#", "|", "\\", "`", "```", "~~~", "[r]", "]:",
                         "\t", "  ", "==="])
_inline = st.lists(_word, min_size=1, max_size=6).map(" ".join)
_indent = st.sampled_from(["", "", "", " ", "  ", "   ", "    ", "\t", "     ", "        "])
_line = st.builds(lambda i, t: i + t, _indent, _inline)
_fence = st.builds(
    lambda f, lang, body, close: f"{f}{lang}\n" + "\n".join(body) + ("\n" + f if close else ""),
    st.sampled_from(["```", "~~~", "````"]),
    st.sampled_from(["", "python", " js", "{ .py }", "\t", " x y"]),
    st.lists(st.one_of(_line, st.just(""), st.just("```"), st.just("  ")), max_size=5),
    st.booleans(),
)
_list = st.builds(
    lambda marks, items, sep: sep.join(m + " " + t for m, t in zip(marks, items)),
    st.lists(st.sampled_from(["-", "*", "+", "1.", "2.", "10.", "1)", "  -", "    -", "   1."]),
             min_size=1, max_size=4),
    st.lists(_inline, min_size=4, max_size=4),
    st.sampled_from(["\n", "\n\n", "\n\n    "]),
)
_block = st.one_of(
    st.lists(_line, min_size=1, max_size=3).map("\n".join),
    st.builds(lambda n, t: "#" * n + " " + t, st.integers(1, 6), _inline),
    _list, _fence,
    st.lists(_line, min_size=1, max_size=3).map(lambda ls: "\n".join("> " + x for x in ls)),
    st.builds(lambda t: "| a | b |\n|:--|--:|\n| " + t + " | x |", _inline),
    st.builds(lambda t: t + "\n===", _inline),
    st.sampled_from(["---", "* * *", ">", "> > nested", "[r]: https://ref.example", "    code",
                     "   ", ""]),
)
_sep = st.sampled_from(["\n", "\n\n", "\n\n", "\n\n\n", "\n  \n", "\n\t\n", "\r\n\r\n", "\n\n\n\n"])
_doc = st.builds(lambda bs, seps: "".join(b + s for b, s in zip(bs, seps)),
                 st.lists(_block, min_size=1, max_size=8), st.lists(_sep, min_size=8, max_size=8))
_sizes = st.lists(st.integers(1, 12), max_size=300)
_fast = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_fast
@given(_doc, _sizes)
def test_streamed_equals_one_shot(text, sizes):
    assert _stream(text, sizes) == render_markdown(text)


@_fast
@given(_doc, st.booleans())
def test_stream_token_sizes(text, whole):
    sizes = [len(text)] if whole else [1] * len(text)
    assert _stream(text, sizes) == render_markdown(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>/=\"' hxonerrorclikdatsyle-:[]()!`*#\n&;")),
               max_size=120) | _doc)
def test_output_is_always_inert(text):
    _assert_inert(render_markdown(text))


def test_blocks_arrive_before_the_end():
    s = StreamingMarkdown()
    step = s.feed("# Title\n\nfirst")
    assert (step.blocks, step.tail, step.replace_tail) == (Markup("<h1>Title</h1>"), "first", True)
    step = s.feed(" para")
    assert (step.blocks, step.tail, step.replace_tail) == (None, " para", False)
    step = s.feed("graph\n\nsec")
    assert step.replace_tail and step.tail == "sec"
    assert _Tree(str(step.blocks)).elements == [("p", {})] and "paragraph" in step.blocks
    assert s.finish() == render_markdown("# Title\n\nfirst paragraph\n\nsec")


def test_loose_list_stays_one_list_when_streamed():
    text = "1. a\n\n2. b\n\n3. c\n\nafter"
    result = _stream(text, [1] * len(text))
    assert [t for t, _ in _Tree(str(result)).elements].count("ol") == 1
    assert result == render_markdown(text)


@pytest.mark.parametrize(
    "text",
    ["```\na\n ```\n\nb\n```\n\nc", "```\na\n```` \n\nb\n```\n\nc", "```py x\na\n\n```\nb\n\n```",
     "~~~\t\na\n\n~~~\t\n\nb", "    code\n\n\n\npara\n\n    more", "> a\n\n> b\n\nc",
     "- a\n\n  b\n\n- c\n\n1. d\n\n2. e", "para\n```\ncode\n\n```\nmore\n\nend",
     "[a]\n\n[a]: https://x.example\n\ntext", "x\r\n\r\n```\r\ncode\r\n\r\n```\r\n\r\ny"],
)
def test_tricky_documents_stream_exactly(text):
    assert _stream(text, [1] * len(text)) == render_markdown(text)
    assert _stream(text, [3] * len(text)) == render_markdown(text)


def test_allowlist_is_pinned():
    assert EMITTED_TAGS == {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em",
                            "del", "code", "pre", "blockquote", "ul", "ol", "li", "table", "thead",
                            "tbody", "tr", "th", "td", "a", "span", "div", "sup", "sub"}
    html = render_markdown("3. [a](https://x.example)\n\n| h |\n|:-:|\n| c |\n\n```py\nx\n```")
    attrs = {(tag, name) for tag, attrs in _Tree(str(html)).elements for name in attrs}
    assert attrs == {("ol", "start"), ("a", "href"), ("a", "rel"), ("th", "align"),
                     ("td", "align"), ("div", "class"), ("span", "class"), ("code", "class")}


def test_a_paragraph_with_too_many_brackets_is_shown_not_parsed():
    """Python-Markdown's link matching is quadratic in `[` per paragraph: past the limit they are escaped."""
    from chatapp.rendering import MAX_BRACKETS_PER_PARAGRAPH

    link = "[x](https://a.example) "
    normal = render_markdown(link * 10)
    assert normal.count("<a ") == 10
    flood = render_markdown(link * (MAX_BRACKETS_PER_PARAGRAPH + 1) + "\n\n" + link + "\n\n```\n[[[\n```")
    assert flood.count("<a ") == 1  # only the separate, ordinary paragraph keeps its link
    assert flood.count("[x](https://a.example)") == MAX_BRACKETS_PER_PARAGRAPH + 1
    assert "[[[" in flood  # code blocks keep their brackets
    streamed = StreamingMarkdown()
    for piece in (link * 300 + "\n\nafter").split(" "):
        streamed.feed(piece + " ")
    assert streamed.finish() == render_markdown(streamed.text)


# --- the unfinished tail, shown rendered -------------------------------------------------------------

def _text(tree):
    return "".join(tree.text)


def test_an_open_code_fence_shows_as_a_code_block_before_it_closes():
    tree = _live("Intro.\n\n", "```python\n", "import os\n", "print(os.s", "ep)")
    assert [t for t, _ in tree.elements] == ["div", "pre", "span", "code"]
    assert tree.tags("div") == [{"class": "highlight"}]  # the frame the finished block will have
    assert tree.tags("code") == [{"class": "language-python"}]  # its header names the language already
    assert _text(tree) == "import os\nprint(os.sep)"  # no fence, no language word, no highlighting yet


def test_a_closing_fence_is_never_shown_as_code():
    for cut in range(1, 4):
        s, page = StreamingMarkdown(), _Page()
        for piece in ("```\nx = 1\n", "```\n"[:cut], "```\n"[cut:], "\n"):
            html = page.show(s.feed(piece).shown)
            assert "`" not in _text(_Tree(str(html))) and "x = 1" in _text(_Tree(str(html)))


def test_code_inside_an_open_fence_is_added_as_text_without_a_render(monkeypatch):
    s = StreamingMarkdown()
    s.feed("```js\n")
    rendered = []
    monkeypatch.setattr(rendering, "_render", lambda text, fence: rendered.append(text) or "")
    for _ in range(2000):
        step = s.feed("x = a < b && c;\n")
        assert step.shown.head is None and step.shown.text == "x = a < b && c;\n"
    assert rendered == []


def test_a_heading_shows_without_its_marks():
    tree = _live("Intro.\n\n", "## Ste", "p one: conf")
    assert tree.elements == [("h2", {})] and _text(tree) == "Step one: conf"
    assert _live("Intro.\n\n", "## ").elements == []  # a bare marker is not shown at all


def test_emphasis_shows_before_it_closes():
    tree = _live("Go **offl", "ine now")
    assert [t for t, _ in tree.elements] == ["p", "strong"]
    assert _text(tree) == "Go offline now"
    tree = _live("Run `pip ins", "tall x` then *quick")
    assert [t for t, _ in tree.elements] == ["p", "code", "em"]
    assert "`" not in _text(tree) and "*" not in _text(tree)


def test_list_items_show_without_their_markers():
    tree = _live("Steps:\n\n", "- first\n- sec", "ond\n- ")
    assert [t for t, _ in tree.elements] == ["ul", "li", "li"]
    assert _text(tree).split() == ["first", "second"]
    tree = _live("1. one\n2. tw")
    assert [t for t, _ in tree.elements] == ["ol", "li", "li"] and "1." not in _text(tree)


def test_a_table_shows_as_a_table_as_it_grows():
    tree = _live("| Setting | Defa")
    assert [t for t, _ in tree.elements][:1] == ["table"] and [th for th in tree.tags("th")] == [{}, {}]
    assert "|" not in _text(tree) and _text(tree).split() == ["Setting", "Defa"]
    tree = _live("| Setting | Default |\n|:--")  # the delimiter row, half written
    assert "|" not in _text(tree) and len(tree.tags("th")) == 2
    tree = _live("| Setting | Default |\n|:--|--:|\n| workers | 4", "2")
    assert len(tree.tags("th")) == 2 and tree.tags("td") == [{"align": "left"}, {"align": "right"}]
    assert _text(tree).split() == ["Setting", "Default", "workers", "42"]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_hostile_tail_is_shown_as_safely_as_a_block(text):
    for size in (1, 3, 8):
        _stream("Intro.\n\n**" + text + " `" + text, [size] * 400)
        _stream("| " + text + " |\n|---|\n| " + text, [size] * 400)


def test_the_live_tail_costs_a_bounded_amount_a_character(monkeypatch):
    """However long the tail (a paragraph, a table, a code block), the text rendered for it stays
    within the budget: RENDER_BUDGET characters a character fed, plus a start."""
    real = rendering._render
    rendered = [0]

    def counting(text, fence):
        rendered[0] += len(text) + rendering.RENDER_COST
        return real(text, fence)

    monkeypatch.setattr(rendering, "_render", counting)
    for text in ("A **long** paragraph with `code` and [links](https://a.example) " * 400,
                 "| a | b |\n|---|---|\n" + "| *x* | `y` |\n" * 1000,
                 "```python\n" + "print('x') # [a] *b*\n" * 1000):
        rendered[0] = 0
        s = StreamingMarkdown()
        for i in range(0, len(text), 4):
            s.feed(text[i:i + 4])
        start = rendering.RENDER_CREDIT_START + 4 * rendering.RENDER_COST
        assert rendered[0] <= rendering.RENDER_BUDGET * len(text) + start, text[:20]
