"""Static files: one cache entry per file whatever URLs strangers make up, `immutable` only for the
version the pages link to; gzip for text, done off the loop for large bodies."""

from __future__ import annotations

import gzip
import hashlib
import re
import secrets
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart import Quart, Response
from quart.testing import QuartClient

from chatapp import create_app
from chatapp.web.assets import COMMENTS
from tests.conftest import app_settings

GZIP = {"Accept-Encoding": "gzip"}


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Quart]:
    """The demo app, with a plain-text page of any size (to either side of OFF_LOOP_SIZE). Built by
    hand, not with make_app: the route must be added before the app starts."""
    app = create_app(app_settings(tmp_path, None))

    @app.get("/text/<int:size>")
    async def text(size: int) -> Response:
        return Response("".join(f"line {i}\n" for i in range(size // 5))[:size], mimetype="text/plain")

    async with app.test_app():
        yield app


@pytest.fixture
def client(app: Quart) -> QuartClient:
    return app.test_client()


def _css(app: Quart) -> bytes:
    """app.css as it is served: without its comments."""
    return COMMENTS["app.css"].sub(b"", (Path(app.static_folder) / "app.css").read_bytes())


async def _css_url(app: Quart) -> str:
    async with app.test_request_context("/"):
        return app.jinja_env.globals["asset"]("app.css")


async def test_made_up_versions_leave_one_entry_per_file(app: Quart, client: QuartClient) -> None:
    files = app.extensions["static_files"]
    for i in range(200):
        v = secrets.token_hex(6 if i % 2 else 3000)
        response = await client.get(f"/static/app.css?v={v}", headers=GZIP)
        assert response.status_code == 200
        assert gzip.decompress(await response.get_data()) == _css(app)
    for path in ["/static/vendor/../app.css?v=x", "/static/./app.css?v=y", "/static/app.css",
                 "/static/nope.css?v=z", "/static/app.js?v=1", "/static/app.js?v=2"]:
        await client.get(path, headers=GZIP)
    assert set(files.gzipped) == {"app.css", "app.js"}
    folder = Path(app.static_folder)
    on_disk = {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}
    assert set(files.versions) <= on_disk


async def test_only_the_current_version_is_immutable(app: Quart, client: QuartClient) -> None:
    url = await _css_url(app)
    current = await client.get(url, headers=GZIP)
    assert current.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert gzip.decompress(await current.get_data()) == _css(app)
    for other in ["/static/app.css?v=000000000000", "/static/app.css", f"{url}0", f"{url[:-1]}"]:
        response = await client.get(other, headers=GZIP)
        assert response.status_code == 200, other
        assert "immutable" not in response.headers["Cache-Control"], other
        assert "max-age=3600" in response.headers["Cache-Control"], other  # SEND_FILE_MAX_AGE_DEFAULT
        assert gzip.decompress(await response.get_data()) == _css(app), other
    plain = await client.get("/static/app.css?v=000000000000")  # no gzip asked for: none given
    assert "Content-Encoding" not in plain.headers and await plain.get_data() == _css(app)


async def test_the_linked_version_is_the_files_content_hash(app: Quart) -> None:
    url = await _css_url(app)
    source = (Path(app.static_folder) / "app.css").read_bytes()  # what is shipped is made from it
    assert url == f"/static/app.css?v={hashlib.sha256(source).hexdigest()[:12]}"


@pytest.mark.parametrize(("size", "in_thread"), [(64 * 1024 - 1, False), (64 * 1024, True), (3_000_000, True)])
async def test_large_bodies_are_compressed_off_the_loop(client: QuartClient, monkeypatch: pytest.MonkeyPatch,
                                                       size: int, in_thread: bool) -> None:
    threads = []
    compress = gzip.compress

    def recording(data: bytes, compresslevel: int = 9) -> bytes:
        threads.append(threading.current_thread())
        return compress(data, compresslevel=compresslevel)

    monkeypatch.setattr(gzip, "compress", recording)
    response = await client.get(f"/text/{size}", headers=GZIP)
    assert response.headers["Content-Encoding"] == "gzip"
    body = gzip.decompress(await response.get_data())
    assert len(body) == size and body.startswith(b"line 0\nline 1\n")
    assert len(threads) == 1
    assert (threads[0] is not threading.main_thread()) == in_thread


@pytest.mark.parametrize(("filename", "comment"), [("app.css", rb"/\*"), ("app.js", rb"(?m)^[ \t]*//")])
async def test_app_css_and_js_ship_without_their_comments(client: QuartClient, filename: str, comment: bytes) -> None:
    source = (Path(__file__).resolve().parent.parent / "static" / filename).read_bytes()
    assert re.search(comment, source)  # the source has them, for its readers
    for headers in ({}, GZIP):  # the same body, compressed or not
        response = await client.get(f"/static/{filename}", headers=headers)
        body = await response.get_data()
        body = gzip.decompress(body) if response.headers.get("Content-Encoding") == "gzip" else body
        assert response.status_code == 200 and not re.search(comment, body)
        assert len(body) < len(source) * 0.9 and b"htmx" in body if filename == "app.js" else b"--fg" in body
