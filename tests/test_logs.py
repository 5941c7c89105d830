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
from tests.conftest import app_settings, open_chat
from tests.fake_openai import FakeOpenAI, Reply

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
    app = create_app(app_settings(tmp_path, fake_upstream))
    # chatapp's own handler, which the app factory set up, writing here for the test.
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


async def test_a_signing_key_made_at_start_up_is_redacted_too(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(app_settings(tmp_path, None, secret_key=None))
    async with app.test_app():
        generated = app.config["SECRET_KEY"]
        logging.getLogger("chatapp").warning("a library quoted %s", generated)
    assert generated and generated not in caplog.text and REDACTED in caplog.text
