"""Log set-up, with a second line of defence for secrets: key-shaped strings never reach a log.

The first line is the code itself (the API key is never formatted into a message); this filter
catches what slips through, such as an exception from a library that quotes a request header.
"""

from __future__ import annotations

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
    """Our own lines on stderr, beside Hypercorn's (which has its own handlers)."""
    log = logging.getLogger("chatapp")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.DEBUG if config.debug else logging.INFO)
    redact_handlers(config)


def redact_handlers(config: Config) -> None:
    """Put the filter on every handler that exists now (call again once Hypercorn has set up its own)."""
    secrets = [config.openai_api_key or "", config.secret_key or "", config.password or ""]
    for name in _LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets(secrets))
