"""Settings from the environment (and `.env`, loaded by the app factory).

Every setting is read and checked here, once, at start-up: a bad value stops the app with one line
that names the setting, instead of failing later in the middle of someone's conversation.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any
from urllib.parse import urlparse


DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer clearly and concisely. Use Markdown for structure "
    "(headings, lists, tables, fenced code blocks with a language) when it helps."
)


Network = IPv4Network | IPv6Network


class ConfigError(ValueError):
    """A setting has a value the app cannot use; the message names the setting and says why."""


@dataclass(frozen=True)
class Config:
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    secret_key: str | None = None
    # A SQLite file (a path or a sqlite: URL), or a postgresql:// URL: see chatapp/db.
    database: str = "chatapp.db"
    database_pool: int = 10  # connections to PostgreSQL per process
    max_message_chars: int = 8000
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    connect_timeout: float = 10.0
    first_token_timeout: float = 30.0
    idle_timeout: float = 30.0
    max_retries: int = 2
    demo_delay: float = 0.02
    # An answer's text goes to the browser gathered, at most once per this many seconds (llm/pacing.py).
    stream_interval: float = 0.05
    debug: bool = False
    production: bool = False
    https: bool = False
    trusted_proxy_hops: int = 0
    # The reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are believed (proxies.py).
    trusted_proxies: tuple[Network, ...] = ()
    password: str | None = None
    # Who may use the app and whose conversations are whose (AUTH_MODES); "" until load_config
    # decides: passphrase when CHATAPP_PASSWORD is set, else none.
    auth: str = ""
    # header mode: the request header in which the trusted proxy names the person.
    auth_header: str = "X-Forwarded-User"
    # accounts mode: anyone may create an account (else only by an admin's invitation).
    open_signup: bool = False
    # oidc mode: the provider's issuer URL and this app's client there.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_scopes: str = "openid profile email"
    # Rate limits as "count/period" strings (see parse_rate); None: no limit.
    rate_limit_per_session: str | None = "20/minute"
    rate_limit_per_address: str | None = "60/minute"
    login_rate_limit: str = "5/minute"
    max_streams_per_session: int = 2
    max_streams: int = 200
    # Prompt + answer tokens a day (UTC); 0: no budget.
    daily_tokens_per_session: int = 0
    daily_tokens: int = 0
    context_tokens: int = 8000
    models: tuple[str, ...] = ()
    metrics_token: str | None = None
    log_format: str = "text"
    # This replica's name in metrics and readiness answers: its host name (a container's id, a
    # pod's name) unless set.
    replica: str = dataclasses.field(default_factory=socket.gethostname)

    @property
    def silence_limit(self) -> float:
        """Seconds after which an answer still marked as streaming but not saved is abandoned: a
        live one would have been ended by its first-token or idle deadline before then."""
        return max(self.first_token_timeout, self.idle_timeout) + 15

    @property
    def demo(self) -> bool:
        """No key and no server: the offline demo model answers."""
        return not self.openai_api_key and not self.openai_base_url

    def __repr__(self) -> str:
        # A Config may end up in a log line or a traceback: never show the secrets.
        shown = {
            f.name: ("<set>" if f.name in _SECRETS and getattr(self, f.name) else getattr(self, f.name))
            for f in fields(self)
        }
        return f"Config({shown})"


_SECRETS = {"openai_api_key", "secret_key", "password", "metrics_token", "database", "oidc_client_secret"}

# CHATAPP_AUTH: none (anonymous, a browser's conversations are its own), passphrase (one shared
# passphrase, CHATAPP_PASSWORD), accounts (local accounts), header (a trusted proxy names the
# person), oidc (OpenID Connect sign-in). In the last three, conversations belong to people.
AUTH_MODES = ("none", "passphrase", "accounts", "header", "oidc")
PEOPLE_MODES = ("accounts", "header", "oidc")


def _text(value: str) -> str | None:
    return value.strip() or None


def _url(value: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http:// or https:// URL, such as http://localhost:11434/v1")
    return value.rstrip("/")


def _number(kind: type, low: float, high: float) -> Callable[[str], float | int]:
    def parse(value: str) -> float | int:
        try:
            number = kind(value.strip())
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise ValueError(f"must be {noun} between {low} and {high}") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _prompt(value: str) -> str:
    # A literal "\n" in a .env file means a line break.
    return value.replace("\\n", "\n").strip() or DEFAULT_SYSTEM_PROMPT


def _environment(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("development", "production"):
        raise ValueError("must be development or production")
    return lowered == "production"


_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*", re.I)


def parse_rate(value: str) -> tuple[int, int]:
    """"20/minute" → (20, 60): how many, in how many seconds."""
    match = _RATE.fullmatch(value)
    if not match or int(match[1]) < 1:
        raise ValueError("must be a rate such as 20/minute, 100/hour or 1000/day, or off")
    return int(match[1]), _PERIODS[match[2].lower()]


def _rate(value: str) -> str | None:
    value = value.strip()
    if value.lower() in ("", "0", "off", "none"):
        return None
    parse_rate(value)
    return value


def _models(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    if any(len(name) > 200 for name in names):
        raise ValueError("must be model names separated by commas")
    return names


def _log_format(value: str) -> str:
    lowered = value.strip().lower() or "text"
    if lowered not in ("text", "json"):
        raise ValueError("must be text or json")
    return lowered


def parse_networks(value: str) -> tuple[Network, ...]:
    """"127.0.0.1, 10.0.0.0/8, ::1" → the networks (an address alone is a network of one)."""
    networks = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            # strict: 10.1.0.0/8 is a typo for 10.1.0.0/16 as often as for 10.0.0.0/8; do not guess.
            networks.append(ip_network(part, strict=True))
        except ValueError:
            raise ValueError(
                "must be IP addresses or networks separated by commas, such as 127.0.0.1, 10.0.0.0/8 "
                f"or ::1; {part[:60]!r} is not one"
            ) from None
    return tuple(networks)


def _auth(value: str) -> object:
    lowered = value.strip().lower()
    if not lowered:
        return UNSET
    if lowered not in AUTH_MODES:
        raise ValueError("must be one of " + ", ".join(AUTH_MODES))
    return lowered


_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,100}")


def _header_name(value: str) -> object:
    value = value.strip()
    if not value:
        return UNSET
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError("must be an HTTP header name such as X-Forwarded-User or Remote-User")
    return value


def _scopes(value: str) -> object:
    scopes = value.split()
    if not scopes:
        return UNSET
    if "openid" not in scopes:
        scopes.insert(0, "openid")
    return " ".join(dict.fromkeys(scopes))


# What a parser returns for a value that counts as not set (an empty line copied from .env.example).
UNSET = object()


def _database(value: str) -> object:
    value = value.strip()
    if not value:
        return UNSET
    scheme = urlparse(value).scheme if "://" in value else ""
    if scheme not in ("", "sqlite", "postgresql", "postgres"):
        raise ValueError("must be a SQLite file path (such as chatapp.db) or a PostgreSQL URL "
                         "(postgresql://user:password@host/database)")
    if scheme.startswith("postgres") and not urlparse(value).path.strip("/"):
        raise ValueError("must name the database, as in postgresql://user:password@host/chatapp")
    return value


_REPLICA = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")


def _replica(value: str) -> object:
    value = value.strip()
    if not value:
        return UNSET
    if not _REPLICA.fullmatch(value):
        raise ValueError("must be a name of at most 100 letters, digits, dots, dashes, underscores or colons, "
                         "such as chatapp-1")
    return value


# environment variable → (Config field, parser)
SETTINGS: dict[str, tuple[str, Callable[[str], object]]] = {
    "OPENAI_API_KEY": ("openai_api_key", _text),
    "OPENAI_BASE_URL": ("openai_base_url", _url),
    "OPENAI_MODEL": ("openai_model", lambda v: _text(v) or Config.openai_model),
    "SECRET_KEY": ("secret_key", _text),
    # The last set of these wins: ours over the one that hosting platforms set for every app.
    "DATABASE_URL": ("database", _database),
    "CHATAPP_DATABASE": ("database", _database),
    "CHATAPP_DATABASE_URL": ("database", _database),
    "CHATAPP_DATABASE_POOL": ("database_pool", _number(int, 1, 1000)),
    "CHATAPP_MAX_MESSAGE_CHARS": ("max_message_chars", _number(int, 1, 100_000)),
    "CHATAPP_SYSTEM_PROMPT": ("system_prompt", _prompt),
    "CHATAPP_CONNECT_TIMEOUT": ("connect_timeout", _number(float, 0.1, 600)),
    "CHATAPP_FIRST_TOKEN_TIMEOUT": ("first_token_timeout", _number(float, 0.1, 3600)),
    "CHATAPP_IDLE_TIMEOUT": ("idle_timeout", _number(float, 0.1, 3600)),
    "CHATAPP_MAX_RETRIES": ("max_retries", _number(int, 0, 10)),
    "CHATAPP_DEMO_DELAY": ("demo_delay", _number(float, 0, 5)),
    "CHATAPP_STREAM_INTERVAL_MS": ("stream_interval", lambda v: _number(int, 0, 1000)(v) / 1000),
    "CHATAPP_DEBUG": ("debug", _flag),
    "CHATAPP_ENV": ("production", _environment),
    "CHATAPP_HTTPS": ("https", _flag),
    "CHATAPP_TRUSTED_PROXY_HOPS": ("trusted_proxy_hops", _number(int, 0, 5)),
    "CHATAPP_TRUSTED_PROXIES": ("trusted_proxies", parse_networks),
    "CHATAPP_PASSWORD": ("password", _text),
    "CHATAPP_AUTH": ("auth", _auth),
    "CHATAPP_AUTH_HEADER": ("auth_header", _header_name),
    "CHATAPP_OPEN_SIGNUP": ("open_signup", _flag),
    "CHATAPP_OIDC_ISSUER": ("oidc_issuer", _url),
    "CHATAPP_OIDC_CLIENT_ID": ("oidc_client_id", _text),
    "CHATAPP_OIDC_CLIENT_SECRET": ("oidc_client_secret", _text),
    "CHATAPP_OIDC_SCOPES": ("oidc_scopes", _scopes),
    "CHATAPP_RATE_LIMIT_PER_SESSION": ("rate_limit_per_session", _rate),
    "CHATAPP_RATE_LIMIT_PER_ADDRESS": ("rate_limit_per_address", _rate),
    "CHATAPP_LOGIN_RATE_LIMIT": ("login_rate_limit", lambda v: _rate(v) or Config.login_rate_limit),
    "CHATAPP_MAX_STREAMS_PER_SESSION": ("max_streams_per_session", _number(int, 1, 100)),
    "CHATAPP_MAX_STREAMS": ("max_streams", _number(int, 1, 100_000)),
    "CHATAPP_DAILY_TOKENS_PER_SESSION": ("daily_tokens_per_session", _number(int, 0, 10**12)),
    "CHATAPP_DAILY_TOKENS": ("daily_tokens", _number(int, 0, 10**12)),
    "CHATAPP_CONTEXT_TOKENS": ("context_tokens", _number(int, 0, 10_000_000)),
    "CHATAPP_MODELS": ("models", _models),
    "CHATAPP_METRICS_TOKEN": ("metrics_token", _text),
    "CHATAPP_LOG_FORMAT": ("log_format", _log_format),
    "CHATAPP_REPLICA": ("replica", _replica),
}

# A key shorter than this is too easy to guess for signing cookies on a public server.
MIN_SECRET_KEY_CHARS = 32


def load_config(environ: Mapping[str, str] | None = None, **overrides: object) -> Config:
    """Build the Config from `environ` (default: os.environ), then apply `overrides` (tests)."""
    environ = os.environ if environ is None else environ
    # Field name → value of that field's type (each parser returns its field's type): Any, as the
    # pairing of a name with its type is in SETTINGS, not in anything mypy can follow.
    values: dict[str, Any] = {}
    for name, (field, parse) in SETTINGS.items():
        raw = environ.get(name)
        if raw is None:
            continue
        try:
            value = parse(raw)
        except ValueError as error:
            shown = "(hidden)" if field in _SECRETS else repr(raw[:60])
            raise ConfigError(f"{name} {error}; got {shown}") from None
        if value is not UNSET:
            values[field] = value
    values.update(overrides)
    if not values.get("auth"):
        values["auth"] = "passphrase" if values.get("password") else "none"
    config = Config(**values)
    if (trouble := _auth_problem(config)) is not None:
        raise ConfigError(trouble)
    if config.production and len(config.secret_key or "") < MIN_SECRET_KEY_CHARS:
        raise ConfigError(
            f"SECRET_KEY must be set, at least {MIN_SECRET_KEY_CHARS} characters, when CHATAPP_ENV=production; "
            "make one with: python -c \"import secrets; print(secrets.token_hex(32))\""
        )
    return config


def _auth_problem(config: Config) -> str | None:
    """What the chosen CHATAPP_AUTH mode lacks, in one line; None when it has what it needs."""
    if config.auth not in AUTH_MODES:
        return "CHATAPP_AUTH must be one of " + ", ".join(AUTH_MODES)
    if config.auth == "passphrase" and not config.password:
        return "CHATAPP_AUTH=passphrase needs CHATAPP_PASSWORD, the passphrase to ask for"
    if config.auth != "passphrase" and config.password:
        return (f"CHATAPP_PASSWORD is set but CHATAPP_AUTH={config.auth}: remove CHATAPP_PASSWORD, "
                "or set CHATAPP_AUTH=passphrase")
    if config.auth == "header" and not config.trusted_proxies:
        return ("CHATAPP_AUTH=header needs CHATAPP_TRUSTED_PROXIES, the addresses of the proxy that sets "
                f"{config.auth_header}: from anyone else the header is refused")
    if config.auth == "oidc" and not (config.oidc_issuer and config.oidc_client_id):
        return "CHATAPP_AUTH=oidc needs CHATAPP_OIDC_ISSUER and CHATAPP_OIDC_CLIENT_ID (and usually CHATAPP_OIDC_CLIENT_SECRET)"
    return None
