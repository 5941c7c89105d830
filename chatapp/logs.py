"""Log set-up, with two filters on our loggers and their handlers: each record stays one honest
line, and key-shaped strings never reach a log.

Secrets: the first line of defence is the code itself (the API key is never formatted into a
message); RedactSecrets catches what slips through, such as an exception from a library that
quotes a request header.
"""

from __future__ import annotations

import base64
import contextvars
import json
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from .config import Config

# OpenAI-style keys (sk-..., sk-proj-...), bearer tokens, and `api_key=...` pairs.
_KEY_SHAPED = re.compile(
    r"sk-[A-Za-z0-9_\-]{16,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{16,}=*"
    r"|(?i:api[_-]?key)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9._\-]{12,}"
)
REDACTED = "[redacted]"
_LOGGERS = ("", "chatapp", "hypercorn.error", "hypercorn.access")
_PLAIN_LAST_RESORT = logging.lastResort


# The request being served, for every log line written while serving it ("-" outside requests).
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class _OurHandler(logging.StreamHandler):
    """A stderr handler that chatapp made (marked `chatapp`), so that configuring again finds it
    instead of adding a second one."""

    chatapp = True


class AddRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonLines(logging.Formatter):
    """One JSON object per line, for log collectors. Hypercorn's access line gives its fields as
    keys (OneLine took them from the access-log atoms) and a short message, not the text line.
    Each line names the replica (CHATAPP_REPLICA) that wrote it, for logs gathered from several."""

    replica = "-"  # set by configure()

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "replica": JsonLines.replica,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if (access := getattr(record, "access", None)) is not None:
            entry |= access
            entry["message"] = f"{access['method']} {access['path']} {access['status'] or '-'}"
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class JsonHandlers(logging.Filter):
    """On a Hypercorn logger: its handlers write JsonLines. Hypercorn 0.18 makes them, with its
    own text format, at its first log line, after the app's start-up (see redact_handlers): the
    records they handle are the first moment the app can reach them, so each record checks."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = logger
        self._formatter = JsonLines()

    def filter(self, record: logging.LogRecord) -> bool:
        for handler in self._logger.handlers:
            if handler.formatter is not self._formatter:
                handler.setFormatter(self._formatter)
        return True


# What could end a log line or make it lie: C0 and C1 controls (newline, carriage return, escape,
# NEL, ...), DEL, and Unicode's line and paragraph separators. Inside a quoted field of the access
# log, also the quote and the backslash that escapes it.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_UNSAFE_IN_QUOTES = re.compile(r'[\x00-\x1f\x7f-\x9f\u2028\u2029"\\]')
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    return _SHORT_ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


class OneLine(logging.Filter):
    """One record, one line: control characters in the message are escaped, so a newline in a
    model server's error text or in a percent-encoded URL path cannot start a forged line. In
    Hypercorn's access log each field is escaped before it is put in the line, quotes and
    backslashes included, so a User-Agent or a path cannot close its quotes and forge the fields
    after it. A traceback keeps its lines: it is the record's exc_text, not its message. The
    access line's fields are also kept, each escaped, as `record.access` for JsonLines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, Mapping):  # Hypercorn's access-log atoms (access_log_format)
            record.access = _access_fields(record.args)
            record.msg, record.args = str(record.msg) % _QuotedFields(record.args), ()
        message = record.getMessage()
        cleaned = _UNSAFE.sub(_escape, message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


class _QuotedFields:
    """The access-log atoms, each escaped for a quoted field as the format string reads it (a
    lookup, not a copy: the atoms answer "-" for a header the request did not have)."""

    def __init__(self, atoms: Mapping[str, Any]) -> None:
        self._atoms = atoms

    def __getitem__(self, key: str) -> Any:
        value = self._atoms[key]
        return _UNSAFE_IN_QUOTES.sub(_escape, value) if isinstance(value, str) else value


def _access_fields(atoms: Mapping[str, Any]) -> dict[str, Any]:
    """The access line's fields as JSON keys, from Hypercorn's atoms: the path without its query
    (as hypercorn.toml's line has it), numbers as numbers, and null where the atoms say "-" (a
    header the request did not have). Text is escaped as OneLine escapes a message."""

    def text(key: str) -> str | None:
        value = atoms[key]
        return None if value is None or value == "-" else _UNSAFE.sub(_escape, str(value))

    def number(key: str, kind: type[int] | type[float]) -> int | float | None:
        try:
            return kind(atoms[key])
        except (TypeError, ValueError):
            return None

    return {
        "request_id": text("{x-request-id}o") or "-",
        "client": text("h"),
        "forwarded_for": text("{x-forwarded-for}i"),
        "method": text("m"),
        "path": text("U"),
        "status": number("s", int),
        "bytes": number("b", int),
        "seconds": number("L", float),
        "user_agent": text("a"),
    }


def _written_forms(secret: str) -> set[str]:
    """The ways a secret shows up in text: as it is and URL-encoded (matched in any case), and in
    base64, standard and URL-safe, at each of the three alignments it can have inside a longer
    base64 text, such as a Basic auth header's base64("user:" + key). For each alignment only the
    characters that the secret's bytes alone decide are kept, so whatever stands before and after
    it in that text does not matter. Base64 broken across lines (MIME) is not caught."""
    raw = secret.encode()
    forms = {secret, quote(secret, safe=""), quote_plus(secret, safe="")}
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + raw).decode()
        # Characters [first, last) carry six bits of the secret each and nothing else.
        first, last = -(-offset * 4 // 3), (offset + len(raw)) * 4 // 3
        standard = encoded[first:last]
        forms |= {standard, standard.replace("+", "-").replace("/", "_")}
    return {form for form in forms if len(form) >= 8}


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: list[str]):
        super().__init__()
        forms = {form for secret in secrets if secret and len(secret) >= 8 for form in _written_forms(secret)}
        # Longest first, so that a whole form wins over a shorter one inside it.
        alternatives = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
        self._secrets = re.compile(alternatives, re.IGNORECASE) if forms else None

    def redact(self, text: str) -> str:
        if self._secrets is not None:
            text = self._secrets.sub(REDACTED, text)
        return _KEY_SHAPED.sub(REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        if (access := getattr(record, "access", None)) is not None:
            record.access = {key: self.redact(value) if isinstance(value, str) else value
                             for key, value in access.items()}
        return True


def configure(config: Config) -> None:
    """Our own lines on stderr, beside Hypercorn's (which has its own handlers), each with the
    request id that error messages show people. In JSON, Hypercorn's lines are JSON too."""
    JsonLines.replica = config.replica
    log = logging.getLogger("chatapp")
    handler = next((h for h in log.handlers if getattr(h, "chatapp", False)), None)
    if handler is None:
        handler = _OurHandler()
        handler.addFilter(AddRequestId())
        log.addHandler(handler)
    handler.setFormatter(
        JsonLines() if config.log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    log.setLevel(logging.DEBUG if config.debug else logging.INFO)
    _json_beyond_ours(config.log_format == "json")
    redact_handlers(config)


def _json_beyond_ours(on: bool) -> None:
    """The lines that chatapp's handler does not write are JSON too (or, off, as they come):
    Hypercorn's, whichever command started it, and a library's warning that no handler takes
    (asyncio's, aiosqlite's), which goes to logging's handler of last resort."""
    for name in ("hypercorn.access", "hypercorn.error"):
        logger = logging.getLogger(name)
        logger.filters[:] = [f for f in logger.filters if not isinstance(f, JsonHandlers)]
        if on:
            logger.addFilter(JsonHandlers(logger))
    if not on:
        logging.lastResort = _PLAIN_LAST_RESORT
    elif not getattr(logging.lastResort, "chatapp", False):
        last_resort = _OurHandler()
        last_resort.setLevel(logging.WARNING)  # as the plain one
        last_resort.setFormatter(JsonLines())
        logging.lastResort = last_resort


def redact_handlers(config: Config, *more_secrets: str) -> None:
    """Put both filters on each of our loggers and on every handler they have now.

    On the logger itself because Hypercorn 0.18 makes its access and error handlers (replacing the
    handler list) at its first log line, after the app's start-up has run: a filter put on its
    handlers from the app would never be there, while one on the logger sees every record logged
    on it. On the handlers too, for records that propagate from child loggers (chatapp.reply, ...),
    which a parent logger's filters never see. And on the JSON handler of last resort. OneLine
    comes first, because RedactSecrets flattens a record it changes and the access log's fields
    could then no longer be escaped one by one."""
    secrets = [config.openai_api_key or "", config.secret_key or "", config.password or "", *more_secrets]
    redact = RedactSecrets(secrets)
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    filterers = [*loggers, *(handler for logger in loggers for handler in logger.handlers)]
    if logging.lastResort is not None and getattr(logging.lastResort, "chatapp", False):
        filterers.append(logging.lastResort)
    for filterer in filterers:
        if not any(isinstance(f, OneLine) for f in filterer.filters):
            filterer.filters.insert(0, OneLine())
        # Replaced, not kept: a key generated at start-up joins the secrets (`more_secrets`).
        filterer.filters[:] = [f for f in filterer.filters if not isinstance(f, RedactSecrets)] + [redact]
