"""Static files: versioned URLs that can be cached for a year, and gzip for text responses.

`asset("app.css")` → `/static/app.css?v=<hash of its content>`: a changed file gets a new URL, so
browsers may keep that version forever. Only that `v` is marked immutable: a URL with any other
`v` (anyone can make one up) gets the usual hour, so no browser or proxy keeps old content for a
year under a made-up name. Text responses are gzipped when the browser accepts it, except streams:
an answer must reach the browser piece by piece, never held back to be compressed.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import posixpath
import re
from pathlib import Path

from quart import Quart, Response, request, url_for

YEAR = 365 * 86400
COMPRESSIBLE = ("text/html", "text/css", "text/javascript", "application/javascript", "application/json",
                "text/plain", "text/markdown")
MIN_SIZE = 1024  # smaller bodies are not worth the CPU
# Larger bodies are compressed in a thread (zlib lets go of the GIL): a small body compresses faster
# than a trip to a thread, a long page slowly enough that every other request on the loop would
# wait (no bench times it alone; bench/long_conversation.py shows how big a long page gets).
OFF_LOOP_SIZE = 64 * 1024
# Comments are for the people who read the source, not for every browser that loads the page: the
# shipped app.css and app.js leave them out. (In JS, whole-line comments only: those can be cut
# without parsing it.)
COMMENTS = {"app.css": re.compile(rb"/\*.*?\*/\n?", re.S), "app.js": re.compile(rb"^[ \t]*//.*\n", re.M)}


class StaticFiles:
    """What is worked out once per file on disk: its content hash (the `v` in its URLs) and its
    gzipped body. Keyed by the file, never by anything else in the URL, so that however many
    URLs strangers make up, there is at most one entry per file."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.versions: dict[str, str] = {}
        self.gzipped: dict[str, bytes] = {}
        self.shipped: dict[str, bytes] = {}  # without their comments (COMMENTS)

    def version(self, filename: str) -> str:
        if filename not in self.versions:
            content = (self.folder / filename).read_bytes()
            self.versions[filename] = hashlib.sha256(content).hexdigest()[:12]
        return self.versions[filename]

    def without_comments(self, filename: str, content: bytes) -> bytes:
        if filename not in self.shipped:
            self.shipped[filename] = COMMENTS[filename].sub(b"", content)
        return self.shipped[filename]


def install(app: Quart) -> None:
    if app.static_folder is None:  # the app factory always gives one
        raise RuntimeError("the app has no static folder")
    files = app.extensions["static_files"] = StaticFiles(Path(app.static_folder))

    def asset(filename: str) -> str:
        return url_for("static", filename=filename, v=files.version(filename))

    app.jinja_env.globals["asset"] = asset

    @app.after_request
    async def _cache_and_compress(response: Response) -> Response:
        filename = _static_file(response)
        if filename and request.args.get("v") == files.version(filename):
            response.headers["Cache-Control"] = f"public, max-age={YEAR}, immutable"
        if filename in COMMENTS:
            response.set_data(files.without_comments(filename, await response.get_data(as_text=False)))
        if _compressible(response):
            # Whatever its `v`, a static URL serves the file on disk: one gzipped body per file.
            body = files.gzipped.get(filename) if filename else None
            if body is None:
                body = await _gzip(await response.get_data(as_text=False))
                if filename:
                    files.gzipped[filename] = body
            response.set_data(body)
            response.headers["Content-Encoding"] = "gzip"
            response.vary.add("Accept-Encoding")
        return response


def _static_file(response: Response) -> str | None:
    """The static file this response serves, by its name on disk; None for anything else. Only a
    file that was found (200) counts, so the names are bounded by the files there. Werkzeug serves
    `x/../app.css` as `app.css`: normalised the same way, both are one file here too."""
    if request.endpoint != "static" or response.status_code != 200:
        return None
    return posixpath.normpath((request.view_args or {})["filename"])


async def _gzip(data: bytes) -> bytes:
    if len(data) < OFF_LOOP_SIZE:
        return gzip.compress(data, compresslevel=6)
    return await asyncio.to_thread(gzip.compress, data, compresslevel=6)


def _compressible(response: Response) -> bool:
    return (
        "gzip" in request.headers.get("Accept-Encoding", "")
        and response.status_code == 200
        and response.timeout is not None  # a stream (SSE or the chunked no-JS page): never
        and response.mimetype in COMPRESSIBLE
        and "Content-Encoding" not in response.headers
        and (response.content_length or 0) >= MIN_SIZE
    )
