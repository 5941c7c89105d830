"""Static files: versioned URLs that can be cached for a year, and gzip for text responses.

`asset("app.css")` → `/static/app.css?v=<hash of its content>`: a changed file gets a new URL, so
browsers may keep every version forever. Text responses are gzipped when the browser accepts it,
except streams: an answer must reach the browser piece by piece, never held back to be compressed.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from quart import Quart, Response, request, url_for

YEAR = 365 * 86400
COMPRESSIBLE = ("text/html", "text/css", "text/javascript", "application/javascript", "application/json",
                "text/plain", "text/markdown")
MIN_SIZE = 1024  # smaller bodies are not worth the CPU


def install(app: Quart) -> None:
    versions: dict[str, str] = {}
    compressed: dict[tuple[str, str], bytes] = {}  # (path, version) → gzipped body of a static file

    def asset(filename: str) -> str:
        if filename not in versions:
            content = (Path(app.static_folder) / filename).read_bytes()
            versions[filename] = hashlib.sha256(content).hexdigest()[:12]
        return url_for("static", filename=filename, v=versions[filename])

    app.jinja_env.globals["asset"] = asset

    @app.after_request
    async def _cache_and_compress(response: Response) -> Response:
        static = request.path.startswith("/static/")
        if static and request.args.get("v") and response.status_code == 200:
            response.headers["Cache-Control"] = f"public, max-age={YEAR}, immutable"
        if _compressible(response):
            key = (request.path, request.args.get("v", ""))
            body = compressed.get(key) if static else None
            if body is None:
                body = gzip.compress(await response.get_data(), compresslevel=6)
                if static:
                    compressed[key] = body
            response.set_data(body)
            response.headers["Content-Encoding"] = "gzip"
            response.vary.add("Accept-Encoding")
        return response


def _compressible(response: Response) -> bool:
    return (
        "gzip" in request.headers.get("Accept-Encoding", "")
        and response.status_code == 200
        and response.timeout is not None  # a stream (SSE or the chunked no-JS page): never
        and response.mimetype in COMPRESSIBLE
        and "Content-Encoding" not in response.headers
        and (response.content_length or 0) >= MIN_SIZE
    )
