"""Log set-up, with a second line of defence for secrets: key-shaped strings never reach a log.

The first line is the code itself (the API key is never formatted into a message); this filter
catches what slips through, such as an exception from a library that quotes a request header.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re

from .config import Config

# OpenAI-style keys (sk-..., sk-proj-...), bearer tokens, and `api_key=...` pairs.
_KEY_SHAPED = re.compile(
    r"sk-[A-Za-z0-9_\-]{16,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{16,}=*"
    r"|(?i:api[_-]?key)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9._\-]{12,}"
)
REDACTED = "[redacted]"
_LOGGERS = ("", "chatapp", "hypercorn.error", "hypercorn.access")


# The request being served, for every log line written while serving it ("-" outside requests).
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class AddRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonLines(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: list[str]):
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= 8]

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _KEY_SHAPED.sub(REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        return True


def configure(config: Config) -> None:
    """Our own lines on stderr, beside Hypercorn's (which has its own handlers), each with the
    request id that error messages show people."""
    log = logging.getLogger("chatapp")
    handler = next((h for h in log.handlers if getattr(h, "chatapp", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler.chatapp = True
        handler.addFilter(AddRequestId())
        log.addHandler(handler)
    handler.setFormatter(
        JsonLines() if config.log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    log.setLevel(logging.DEBUG if config.debug else logging.INFO)
    redact_handlers(config)


def redact_handlers(config: Config) -> None:
    """Put the filter on every handler that exists now (call again once Hypercorn has set up its own)."""
    secrets = [config.openai_api_key or "", config.secret_key or "", config.password or ""]
    for name in _LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets(secrets))
