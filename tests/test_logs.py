"""The log filters: each record stays one line, and a secret is redacted in the forms it travels in.

Hypercorn's access line (hypercorn.toml's access_log_format) is tested in test_deploy.py."""

from __future__ import annotations

import base64
import io
import logging
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from chatapp import create_app
from chatapp.logs import REDACTED, OneLine, RedactSecrets
from tests.conftest import MakeApp, app_settings, open_chat
from tests.support.fake_openai import FakeOpenAI, Reply

# Not key-shaped (no sk- prefix, no "Bearer", no api_key=): only the configured-secret rule sees it.
# Its ? > ~ make "+" and "/" in base64 at every alignment, so the URL-safe forms differ.
SECRET = "Zq7?plain>Configured~Secret??4471>>xy"
FORGED = "2026-01-01 00:00:00,000 WARNING chatapp [-] forged line"


def _formatted(record: logging.LogRecord, *filters: logging.Filter) -> str:
    for f in filters:
        assert f.filter(record)
    return logging.Formatter("%(levelname)s %(message)s").format(record)


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("chatapp.test", logging.WARNING, __file__, 1, msg, args, None)


# --- one record, one line -----------------------------------------------------------------------

async def test_a_model_servers_error_text_logs_as_one_line(tmp_path: Path, fake_upstream: FakeOpenAI) -> None:
    # openai puts the error body's "message" into the exception text as it is.
    fake_upstream.script(Reply(status=500, body={"error": {"message": f"upstream broke\n{FORGED}\r\x1b[2J\x85"}}))
    # Built by hand: chatapp's own handler, which the app factory sets up, writes here before it starts.
    app = create_app(app_settings(tmp_path, fake_upstream))
    handler = next(h for h in logging.getLogger("chatapp").handlers if getattr(h, "chatapp", False))
    written = io.StringIO()
    previous = handler.setStream(written)
    try:
        async with app.test_app():
            client = app.test_client()
            action, csrf = await open_chat(client)
            headers = {"HX-Request": "true", "X-CSRF-Token": csrf}
            await (await client.post(action, form={"message": "hi"}, headers=headers)).get_data()
    finally:
        handler.setStream(previous)
    lines = written.getvalue().splitlines()  # splitlines also breaks at \x85, \x1c-\x1e, \u2028
    (error_line,) = [line for line in lines if "upstream error" in line]
    assert f"upstream broke\\n{FORGED}\\r\\x1b[2J\\x85" in error_line
    assert not any(line.startswith(FORGED) for line in lines)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("tab\there", "tab\\there"),
        ("esc\x1b[31m", "esc\\x1b[31m"),
        ("nul\x00del\x7f", "nul\\x00del\\x7f"),
        ("c1\x85\x9b", "c1\\x85\\x9b"),
        ("sep\u2028\u2029", "sep\\u2028\\u2029"),
        # Outside the access log's quoted fields, quotes and backslashes stay as they are.
        ('a "quote" and a \\ stay\n', 'a "quote" and a \\ stay\\n'),
        ("ünïcode ✓ stays\x0b", "ünïcode ✓ stays\\x0b"),
    ],
)
def test_control_characters_in_a_message_are_escaped(text: str, shown: str) -> None:
    assert _formatted(_record("detail=%s", text), OneLine()) == f"WARNING detail={shown}"
    assert _formatted(_record(f"detail={text}"), OneLine()) == f"WARNING detail={shown}"  # no args


def test_a_traceback_keeps_its_lines() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("chatapp.test", logging.ERROR, __file__, 1, "failed: %s", ("a\nb",), sys.exc_info())
    text = _formatted(record, OneLine())
    first, *rest = text.splitlines()
    assert first == "ERROR failed: a\\nb"
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "RuntimeError: boom"


# --- redaction ----------------------------------------------------------------------------------

def _base64_forms(prefix: bytes, secret: str) -> list[str]:
    blob = prefix + secret.encode() + b"\x00tail"
    return [base64.b64encode(blob).decode(), base64.urlsafe_b64encode(blob).decode()]


@pytest.mark.parametrize("prefix", [b"", b"u", b"us", b"user:", b"\xff" * 7])
def test_the_secret_inside_base64_is_redacted_at_any_offset(prefix: bytes) -> None:
    redact = RedactSecrets([SECRET]).redact
    standard, url_safe = _base64_forms(prefix, SECRET)
    assert standard != url_safe
    for blob in (standard, url_safe):
        line = redact(f"header Authorization: Basic {blob} sent")
        assert REDACTED in line and blob not in line


def test_the_secret_in_any_case_and_url_encoded_is_redacted() -> None:
    password = "open sesame/ø&more"
    redact = RedactSecrets([SECRET, password]).redact
    for written in (SECRET.upper(), SECRET.lower(), quote(password, safe=""), quote(password, safe="").lower(),
                    quote_plus(password), password.title()):
        assert redact(f"[{written}]") == f"[{REDACTED}]", written


async def test_a_signing_key_made_at_start_up_is_redacted_too(make_app: MakeApp, caplog: pytest.LogCaptureFixture) -> None:
    app = await make_app(fake_model=False, secret_key=None)
    generated = app.config["SECRET_KEY"]
    logging.getLogger("chatapp").warning("a library quoted %s", generated)
    assert generated and generated not in caplog.text and REDACTED in caplog.text


# --- JSON lines ---------------------------------------------------------------------------------

def _json_access_line(scope: dict, response: dict | None) -> dict:
    """Hypercorn's access record for this request, through chatapp's filters, as JsonLines writes it."""
    import json

    from hypercorn.logging import AccessLogAtoms

    from chatapp.logs import JsonLines

    atoms = AccessLogAtoms(scope, response, 0.25)  # type: ignore[arg-type]
    record = logging.LogRecord("hypercorn.access", logging.INFO, __file__, 1, '%(h)s "%(r)s" %(s)s', (atoms,), None)
    for f in (OneLine(), RedactSecrets([SECRET])):
        assert f.filter(record)
    (line,) = JsonLines().format(record).splitlines()  # splitlines also breaks at \x85 and \u2028
    return json.loads(line)


def test_an_access_line_in_json_has_its_fields_as_keys_each_escaped_and_redacted() -> None:
    scope = {
        "type": "http", "http_version": "1.1", "method": "GET", "scheme": "http", "query_string": b"q=1",
        "path": '/c/x" 200\n\u2028', "client": ("10.0.0.1", 5000),
        "headers": [(b"user-agent", f'a"\\\x85 {SECRET}'.encode("latin-1", "replace")),
                    (b"x-forwarded-for", b'1.2.3.4, "x\r')],
    }
    response = {"status": 404, "headers": [(b"X-Request-ID", b"abc123def456"), (b"Content-Length", b"9")]}
    entry = _json_access_line(scope, response)
    assert entry.pop("time") and entry.pop("replica")
    assert entry == {
        "level": "INFO", "logger": "hypercorn.access", "request_id": "abc123def456",
        "message": 'GET /c/x" 200\\n\\u2028 404', "client": "10.0.0.1:5000", "forwarded_for": '1.2.3.4, "x\\r',
        "method": "GET", "path": '/c/x" 200\\n\\u2028', "status": 404, "bytes": 9, "seconds": 0.25,
        "user_agent": f'a"\\\\x85 {REDACTED}',
    }


def test_an_access_line_without_an_answer_or_headers_has_nulls() -> None:
    scope = {"type": "websocket", "scheme": "ws", "path": "/ws", "query_string": b"", "client": None, "headers": []}
    entry = _json_access_line(scope, None)
    assert {key: entry[key] for key in ("request_id", "message", "client", "forwarded_for", "status", "bytes",
                                        "user_agent")} == {
        "request_id": "-", "message": "GET /ws -", "client": None, "forwarded_for": None, "status": None,
        "bytes": None, "user_agent": None,
    }


def test_in_json_a_librarys_warning_that_no_handler_takes_is_json_too() -> None:
    # A real process: under pytest the root logger has pytest's handlers, and the last resort is never used.
    import json
    import subprocess

    from .support.live_server import clean_environment

    code = (
        "import logging; from chatapp import logs; from chatapp.config import load_config; "
        f"logs.configure(load_config({{}}, log_format='json', secret_key={SECRET!r}, replica='app-2')); "
        f"logging.getLogger('asyncio').warning('task %s lost\\n%s', {SECRET!r}, {FORGED!r})"
    )
    result = subprocess.run([sys.executable, "-c", code], env=clean_environment(), capture_output=True, text=True,
                            timeout=60)
    (line,) = result.stderr.splitlines()
    entry = json.loads(line)
    assert (entry["logger"], entry["level"]) == ("asyncio", "WARNING")
    assert entry["message"] == f"task {REDACTED} lost\\n{FORGED}"
    assert entry["replica"] == "app-2"  # which replica wrote it, in logs gathered from several
