"""Behind a reverse proxy: the client's address and scheme are believed only from trusted proxies,
and the Host is never taken from a forwarded header."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from quart.testing import QuartClient

from chatapp.config import Config, ConfigError, load_config, parse_networks
from chatapp.web.proxies import LOOPBACK, TrustedProxies, install
from tests.conftest import MakeApp
from tests.support.client import open_chat, send_form
from tests.support.fake_openai import FakeOpenAI

PRIVATE = parse_networks("10.0.0.0/8")
# The old setting alone (the proxy must then be on this host), and the new one.
SETUPS = [
    pytest.param({"trusted_proxy_hops": 1}, "127.0.0.1", id="hops-only"),
    pytest.param({"trusted_proxies": PRIVATE}, "10.0.0.5", id="trusted-proxies"),
]


def _from(address: str) -> dict[str, Any]:
    return {"client": (address, 40000)}


async def _send(client: QuartClient, peer: str, **headers: str) -> int:
    """One message, sent over a connection from `peer`; the status."""
    action, csrf = await open_chat(client)
    return (await send_form(client, action, csrf, headers=headers, scope_base=_from(peer))).status_code


# --- through the app ------------------------------------------------------------------------------

@pytest.mark.parametrize(("settings", "proxy"), SETUPS)
async def test_x_forwarded_host_never_makes_another_origin_look_like_ours(
    make_app: MakeApp, fake_upstream: FakeOpenAI, settings: dict[str, object], proxy: str
) -> None:
    app = await make_app(**settings)
    status = await _send(app.test_client(), proxy, Origin="https://evil.example",
                         **{"X-Forwarded-Host": "evil.example", "Forwarded": "host=evil.example"})
    assert status == 403 and fake_upstream.requests == []


@pytest.mark.parametrize(("settings", "proxy"), SETUPS)
async def test_a_redirect_keeps_the_host_and_takes_the_scheme_from_a_trusted_proxy_only(
    make_app: MakeApp, settings: dict[str, object], proxy: str
) -> None:
    forwarded = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    app = await make_app(**settings)
    client = app.test_client()
    # Werkzeug answers a doubled slash with a 308 to an absolute URL built from the request.
    trusted = await client.get("/c//x", headers=forwarded, scope_base=_from(proxy))
    stranger = await client.get("/c//x", headers=forwarded, scope_base=_from("203.0.113.50"))
    assert (trusted.status_code, trusted.headers["Location"]) == (308, "https://localhost/c/x")
    assert (stranger.status_code, stranger.headers["Location"]) == (308, "http://localhost/c/x")


@pytest.mark.parametrize(("settings", "proxy"), SETUPS)
async def test_a_connection_from_elsewhere_cannot_choose_its_address(
    make_app: MakeApp, settings: dict[str, object], proxy: str
) -> None:
    app = await make_app(rate_limit_per_address="3/minute", **settings)
    statuses = [
        await _send(app.test_client(), "203.0.113.50", **{"X-Forwarded-For": f"198.51.100.{i}"})
        for i in range(4)
    ]
    assert statuses == [200, 200, 200, 429]  # one address, whatever X-Forwarded-For says


async def test_behind_a_trusted_proxy_the_client_is_the_first_address_no_proxy_wrote(
    make_app: MakeApp
) -> None:
    app = await make_app(rate_limit_per_address="3/minute", trusted_proxies=PRIVATE)
    # The client forges a different left part each time; the proxies' entries stay the same.
    statuses = [
        await _send(app.test_client(), "10.0.0.5",
                    **{"X-Forwarded-For": f"192.0.2.{i}, 198.51.100.7, 10.1.2.3"})
        for i in range(4)
    ]
    other_client = await _send(app.test_client(), "10.0.0.5", **{"X-Forwarded-For": "198.51.100.8, 10.1.2.3"})
    assert statuses == [200, 200, 200, 429] and other_client == 200


# --- the middleware itself ------------------------------------------------------------------------

async def _seen(middleware: TrustedProxies | Any, scope: dict[str, Any]) -> dict[str, Any]:
    """The scope the app behind the middleware is given."""
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope=scope)

    middleware.app = app
    await middleware(scope, None, None)
    return seen["scope"]


def _scope(peer: str | None, *headers: tuple[str, str], kind: str = "http") -> dict[str, Any]:
    scope: dict[str, Any] = {"type": kind, "scheme": "ws" if kind == "websocket" else "http",
                             "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers]}
    if peer is not None:
        scope["client"] = (peer, 40000)
    return scope


def _proxies(networks: str = "10.0.0.0/8", **options: Any) -> TrustedProxies:
    return TrustedProxies(None, parse_networks(networks), **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        (["198.51.100.7"], "198.51.100.7"),
        (["6.6.6.6, 198.51.100.7"], "198.51.100.7"),  # the client's own left part proves nothing
        (["198.51.100.7, 10.1.1.1, 10.2.2.2"], "198.51.100.7"),  # past each trusted proxy
        (["6.6.6.6", "198.51.100.7, 10.1.1.1"], "198.51.100.7"),  # two header lines, one list
        (["198.51.100.7:4711"], "198.51.100.7"),  # some proxies add the port
        (["198.51.100.7, garbage, 10.1.1.1"], "10.1.1.1"),  # stop at the last proxy vouched for
        (["198.51.100.7, 10.1.1.1:port"], "10.0.0.5"),
        (["unknown"], "10.0.0.5"),
        (["198.51.100.7, "], "10.0.0.5"),
        ([], "10.0.0.5"),
    ],
)
async def test_the_walk_from_the_right(forwarded_for: list[str], client: str) -> None:
    scope = _scope("10.0.0.5", *[("X-Forwarded-For", line) for line in forwarded_for])
    assert (await _seen(_proxies(), scope))["client"][0] == client


async def test_ipv6_proxies_and_clients() -> None:
    proxies = _proxies("2001:db8::/32, 127.0.0.0/8")
    seen = await _seen(proxies, _scope("2001:db8::5", ("X-Forwarded-For", "[2a00:1450::1]:443, 2001:db8::9")))
    assert seen["client"][0] == "2a00:1450::1"
    # A dual-stack listener shows an IPv4 peer as an IPv4-mapped IPv6 address.
    seen = await _seen(proxies, _scope("::ffff:127.0.0.1", ("X-Forwarded-For", "2a00:1450::2")))
    assert seen["client"][0] == "2a00:1450::2"
    seen = await _seen(proxies, _scope("2a00:1450::3", ("X-Forwarded-For", "2a00:1450::4")))
    assert seen["client"][0] == "2a00:1450::3"


async def test_an_untrusted_or_unknown_peer_changes_nothing() -> None:
    for peer in ("203.0.113.50", "not-an-address", None):
        scope = _scope(peer, ("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-Proto", "https"))
        seen = await _seen(_proxies(), scope)
        assert seen.get("client") == scope.get("client") and seen["scheme"] == "http"


@pytest.mark.parametrize(
    ("kind", "protos", "scheme"),
    [
        ("http", ["https"], "https"),
        ("http", ["http, https"], "https"),  # the nearest proxy's word
        ("http", ["https", "http"], "http"),
        ("http", ["ftp"], "http"),
        ("http", ["HTTPS"], "https"),
        ("websocket", ["https"], "wss"),
        ("websocket", ["http"], "ws"),
    ],
)
async def test_the_scheme_from_the_last_forwarded_proto(kind: str, protos: list[str], scheme: str) -> None:
    scope = _scope("10.0.0.5", *[("X-Forwarded-Proto", p) for p in protos], kind=kind)
    assert (await _seen(_proxies(), scope))["scheme"] == scheme


async def test_the_host_and_the_original_scope_are_left_alone() -> None:
    scope = _scope("10.0.0.5", ("Host", "chat.example.com"), ("X-Forwarded-Host", "evil.example"),
                   ("Forwarded", "for=6.6.6.6;host=evil.example;proto=https"), ("X-Forwarded-For", "198.51.100.7"))
    headers = list(scope["headers"])
    seen = await _seen(_proxies(), scope)
    assert seen["headers"] == headers and seen["scheme"] == "http"
    assert seen["client"][0] == "198.51.100.7"
    assert scope["client"] == ("10.0.0.5", 40000)  # Hypercorn's access log still shows the real peer


async def test_lifespan_passes_through() -> None:
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    assert await _seen(_proxies(), scope) is scope


# --- the settings ---------------------------------------------------------------------------------

def _installed(config: Config) -> Any:
    holder = SimpleNamespace(asgi_app="the app")
    install(holder, config)  # type: ignore[arg-type]
    return holder.asgi_app


async def test_hops_alone_trusts_this_host_only_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "chatapp")
    middleware = _installed(Config(trusted_proxy_hops=1))
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "Set CHATAPP_TRUSTED_PROXIES" in warning.getMessage() and "127.0.0.0/8" in warning.getMessage()
    assert middleware.networks == LOOPBACK
    from_nginx = await _seen(middleware, _scope("127.0.0.1", ("X-Forwarded-For", "198.51.100.7")))
    from_elsewhere = await _seen(middleware, _scope("10.0.0.5", ("X-Forwarded-For", "198.51.100.7")))
    assert from_nginx["client"][0] == "198.51.100.7" and from_elsewhere["client"][0] == "10.0.0.5"
    # The hops are how many entries are read: a local client cannot reach past its own entry.
    forged = await _seen(middleware, _scope("127.0.0.1", ("X-Forwarded-For", "6.6.6.6, 127.0.0.1")))
    assert forged["client"][0] == "127.0.0.1"


async def test_trusted_proxies_without_hops_read_the_whole_list(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "chatapp")
    middleware = _installed(Config(trusted_proxies=PRIVATE))
    seen = await _seen(middleware, _scope("10.0.0.5", ("X-Forwarded-For", "198.51.100.7, 10.1.1.1, 10.2.2.2")))
    assert seen["client"][0] == "198.51.100.7" and caplog.text == ""


def test_no_proxy_configured_leaves_the_app_unwrapped() -> None:
    assert _installed(Config()) == "the app"


def test_the_setting_is_parsed() -> None:
    config = load_config({"CHATAPP_TRUSTED_PROXIES": " 127.0.0.1, 10.0.0.0/8 ,::1, 2001:db8::/32 "})
    assert [str(n) for n in config.trusted_proxies] == ["127.0.0.1/32", "10.0.0.0/8", "::1/128", "2001:db8::/32"]
    assert load_config({"CHATAPP_TRUSTED_PROXIES": ""}).trusted_proxies == ()


@pytest.mark.parametrize("value", ["10.0.0.300", "10.0.0.1/8", "localhost", "10.0.0.0/8; ::1", "::1/129"])
def test_a_bad_value_is_one_line_naming_the_setting(value: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config({"CHATAPP_TRUSTED_PROXIES": value})
    message = str(error.value)
    assert message.startswith("CHATAPP_TRUSTED_PROXIES must be IP addresses or networks") and "\n" not in message
