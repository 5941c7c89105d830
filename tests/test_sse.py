"""SSE frames: one data line per line of data, named close event, escaped text partials."""

from chatapp.web import sse
from tests.conftest import parse_sse


def test_multiline_data_becomes_one_data_line_each() -> None:
    assert sse.frame("a\nb\r\nc\rd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"


def test_round_trip_through_an_sse_parser() -> None:
    body = (sse.frame("<p>x</p>\n<p>y</p>") + sse.close()).decode()
    assert parse_sse(body) == [(None, "<p>x</p>\n<p>y</p>"), ("done", "")]


def test_text_partial_escapes_model_text() -> None:
    html = sse.text_partial("msg-1-tail", "beforeend", '<hx-partial hx-target="body"><script>')
    assert html.count("<hx-partial") == 1
    assert "&lt;hx-partial hx-target=&#34;body&#34;&gt;&lt;script&gt;" in html
