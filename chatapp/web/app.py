"""The app factory: settings, then the long-lived resources (store, model provider, quota), then the routes."""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any

from dotenv import find_dotenv, load_dotenv
from quart import Quart

from .. import logs
from ..catalog import ModelCatalog
from ..config import PEOPLE_MODES, Config, ConfigError, load_config
from ..llm import PacedProvider, make_provider
from ..quota import Quota
from ..storage import Store
from . import account, admin, assets, chat, conversations, frames, gate, http, identity, oidc, ops, proxies, theme, trusted_header

PACKAGE = Path(__file__).resolve().parent.parent
ROOT = PACKAGE.parent
log = logging.getLogger("chatapp")
# The cycle collector's young generation once serving (_tune_collector; Python's default is 700).
GC_YOUNG_OBJECTS = 5000


def create_app(test_config: dict[str, Any] | None = None) -> Quart:
    """The ASGI app: defaults, then the environment (and `.env`), then `test_config` for tests."""
    # Tests see only what they set; otherwise the environment and .env decide.
    config = load_config({}, **test_config) if test_config is not None else config_from_environment()

    logs.configure(config)
    app = Quart("chatapp", template_folder=_resources("templates"), static_folder=_resources("static"))
    app.config.update(
        CHATAPP=config,
        SECRET_KEY=config.secret_key,  # unset: one is made and kept in the database (below)
        SESSION_COOKIE_NAME="chatapp_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.https,
        # A session used within this long never expires (visitor.owner signs its cookie again
        # each day it is used); 400 days is the longest cookie lifetime browsers keep.
        PERMANENT_SESSION_LIFETIME=timedelta(days=400),
        SESSION_REFRESH_EACH_REQUEST=False,
        # A message of max_message_chars characters, url-encoded: up to 4 UTF-8 bytes a character
        # and 3 bytes (%XX) a UTF-8 byte; plus the form's other fields. Longer text gets a 413.
        MAX_CONTENT_LENGTH=config.max_message_chars * 12 + 16_384,
        SEND_FILE_MAX_AGE_DEFAULT=3600,
    )
    app.debug = config.debug

    app.extensions["quota"] = Quota(config)

    @app.before_serving
    async def _open_resources() -> None:
        logs.redact_handlers(config)  # again, for the handlers set up since create_app
        _raise_open_files_limit(2 * config.max_streams + 100)
        store = app.extensions["store"] = await Store.open(config.database, pool_size=config.database_pool)
        await store.heartbeat()  # alive before the first answer: no page takes this process's for dead
        if not config.secret_key:
            # Kept in the database, so that every worker signs sessions with the same key.
            app.config["SECRET_KEY"] = await store.setting("secret_key", lambda: secrets.token_hex(32))
            logs.redact_handlers(config, app.config["SECRET_KEY"])
            log.warning("SECRET_KEY is not set: using a random one kept in the database %s.", store.db.where)
        provider = make_provider(
            api_key=config.openai_api_key,
            base_url=config.openai_base_url,
            model=config.openai_model,
            connect_timeout=config.connect_timeout,
            first_token_timeout=config.first_token_timeout,
            idle_timeout=config.idle_timeout,
            max_retries=config.max_retries,
            demo_delay=config.demo_delay,
        )
        if config.stream_interval:
            provider = PacedProvider(provider, config.stream_interval)
        app.extensions["provider"] = provider
        catalog = app.extensions["catalog"] = ModelCatalog(provider, configured=config.models,
                                                           default=config.openai_model)
        catalog.refresh_soon()  # the server's list, fetched while the first page is asked for
        if config.production and not config.metrics_token:
            log.warning("CHATAPP_METRICS_TOKEN is not set: /metrics is open to anyone who can reach this "
                        "server. Set it, or block /metrics at the proxy.")
        if provider.is_demo:
            log.warning("No OPENAI_API_KEY or OPENAI_BASE_URL set: the offline demo model answers.")
        else:
            # Scheme and host only: a base URL may carry credentials or a token in its query.
            where = urlsplit(config.openai_base_url or "https://api.openai.com")
            log.info("Model: %s at %s://%s", config.openai_model, where.scheme, where.hostname)

        app.extensions["keep_alive"] = asyncio.ensure_future(app.extensions["quota"].keep_alive(store))
        if test_config is None:
            _tune_collector()

    @app.after_serving
    async def _close_resources() -> None:
        app.extensions["keep_alive"].cancel()
        # Hypercorn may get here while answers still stream: end them first, so each is saved
        # (as interrupted) before the model client and the database close under it.
        await app.extensions["quota"].interrupt_all()
        await app.extensions["catalog"].aclose()
        await app.extensions["provider"].aclose()
        await app.extensions["store"].close()

    http.install(app, https=config.https)
    frames.install(app)
    assets.install(app)
    # Behind a reverse proxy: the client's address and scheme from its X-Forwarded-* headers,
    # believed only when the connection comes from a trusted proxy.
    proxies.install(app, config)
    # Who may come in (CHATAPP_AUTH): a shared passphrase, or people.
    gate.install(app, config.password if config.auth == "passphrase" else None)
    identity.install(app, config, identify=trusted_header.identify if config.auth == "header" else None)
    if config.auth in PEOPLE_MODES:
        app.register_blueprint(account.bp)
        app.register_blueprint(admin.bp)
    if config.auth == "oidc":
        app.register_blueprint(oidc.bp)
    app.register_blueprint(chat.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(theme.bp)
    app.register_blueprint(conversations.bp)
    _drop_blocking_context_processors(app)
    return app


def _drop_blocking_context_processors(app: Quart) -> None:
    """Quart's blueprints inherit Flask's default template context processor, a plain function,
    which Quart runs in a worker thread on every render_template: a thread round trip per
    template (no bench times it alone) for nothing, since it reads Flask's
    context variables, which Quart never sets. Quart's own (async) default stays."""
    for name, processors in app.template_context_processors.items():
        if name is not None:
            processors[:] = [p for p in processors if p.__module__ != "flask.templating"]


def _tune_collector() -> None:
    """Once serving: what starting made (modules, compiled templates, the Markdown and SDK
    machinery) lives as long as the process, so the cycle collector's full passes leave it out
    (gc.freeze: they walked all of it again each time hundreds of streams had started, a tenth of
    a second a pass), and its young generation is 5,000 objects, not 700, as each stream start
    allocates a few thousand that live for a second or so (200 starts on two workers: 0.06-0.07 s
    of collections after the freeze, 0.11-0.13 s with 700; 20,000 gains nothing more and lets
    more garbage wait for a pass). Not for tests, which start many apps in one process."""
    gc.collect()  # starting's garbage is freed, not frozen
    gc.freeze()
    gc.set_threshold(GC_YOUNG_OBJECTS, *gc.get_threshold()[1:])


def _raise_open_files_limit(wanted: int) -> None:
    """Each streaming answer holds two sockets (browser and model server): lift the soft limit on
    open files as far as the hard limit allows, and say so if that is still too few."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else max(soft, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target != resource.RLIM_INFINITY and target < wanted:
        log.warning("Only %d open files allowed; CHATAPP_MAX_STREAMS=%d needs about %d (raise ulimit -n).",
                    target, (wanted - 100) // 2, wanted)


def _resources(name: str) -> str:
    """templates/ or static/: inside the installed package, or at the top of a source checkout."""
    packaged = PACKAGE / name
    return str(packaged if packaged.is_dir() else ROOT / name)


def config_from_environment() -> Config:
    """The settings from the environment and `.env` (the real environment wins), or, for a bad
    value, one clear line on stderr and exit status 2, never a traceback."""
    load_dotenv(find_dotenv(usecwd=True), override=False)
    try:
        return load_config()
    except ConfigError as error:
        print(f"chatapp: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None

