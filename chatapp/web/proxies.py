"""The client's address and scheme behind a reverse proxy, believed only from proxies we trust.

X-Forwarded-For and X-Forwarded-Proto are plain request headers: anyone can send them. They are
read only when the connection comes from a trusted proxy (CHATAPP_TRUSTED_PROXIES), and then only
as far as trusted proxies vouch for them. The Host header is never rewritten: X-Forwarded-Host and
Forwarded are not read at all, so the CSRF origin check and redirects see the Host the client sent.

Whether a request came through a trusted proxy is kept in its ASGI scope (from_trusted_proxy): the
header mode (trusted_header.py) believes the proxy's header naming the person from there only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any

from quart import Quart
from quart.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, LifespanScope, WebsocketScope

from ..config import Config, Network

log = logging.getLogger(__name__)

# nginx on the same host, the setup docs/deploy.md describes.
LOOPBACK: tuple[Network, ...] = (ip_network("127.0.0.0/8"), ip_network("::1/128"))

Address = IPv4Address | IPv6Address
ASGIApp = Callable[..., Awaitable[None]]

# The scope key set on requests whose connection comes from a trusted proxy. Only this middleware
# sets it (a server builds the scope; no client can put a key in it): without the middleware, no
# request came through a trusted proxy.
FROM_TRUSTED_PROXY = "chatapp.from_trusted_proxy"


def from_trusted_proxy(scope: Mapping[str, Any]) -> bool:
    """Whether the request's connection came from a trusted proxy (CHATAPP_TRUSTED_PROXIES)."""
    return scope.get(FROM_TRUSTED_PROXY) is True


def install(app: Quart, config: Config) -> None:
    """Wrap the app when proxies are configured (CHATAPP_TRUSTED_PROXIES, or the older
    CHATAPP_TRUSTED_PROXY_HOPS alone, which now trusts this host only)."""
    networks = config.trusted_proxies
    if not networks and config.trusted_proxy_hops:
        # The hops count used to trust whoever connected: anyone who reached the port directly
        # chose their own address. Loopback keeps the documented nginx setup working.
        networks = LOOPBACK
        log.warning(
            "CHATAPP_TRUSTED_PROXY_HOPS=%d without CHATAPP_TRUSTED_PROXIES: X-Forwarded-For and "
            "X-Forwarded-Proto are believed only from this host (127.0.0.0/8, ::1). Set "
            "CHATAPP_TRUSTED_PROXIES to your proxies' addresses or networks.",
            config.trusted_proxy_hops,
        )
    if networks:
        # Quart's documented way to add ASGI middleware; its types see asgi_app as a method only.
        app.asgi_app = TrustedProxies(  # type: ignore[method-assign]
            app.asgi_app, networks, max_entries=config.trusted_proxy_hops or None)


class TrustedProxies:
    """ASGI middleware: the client's address from X-Forwarded-For and the scheme from
    X-Forwarded-Proto, when the peer is a trusted proxy; the request is left as it came otherwise."""

    def __init__(self, app: ASGIApp, networks: Iterable[Network], *, max_entries: int | None = None) -> None:
        self.app = app
        self.networks = tuple(networks)
        self.max_entries = max_entries

    async def __call__(self, scope: HTTPScope | WebsocketScope | LifespanScope, receive: ASGIReceiveCallable,
                       send: ASGISendCallable) -> None:
        if scope["type"] == "http" or scope["type"] == "websocket":
            scope = self._rewritten(scope)
        await self.app(scope, receive, send)

    def trusted(self, address: Address) -> bool:
        # A dual-stack listener shows an IPv4 peer as ::ffff:a.b.c.d.
        if isinstance(address, IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def _rewritten(self, scope: HTTPScope | WebsocketScope) -> HTTPScope | WebsocketScope:
        connected = scope.get("client")
        peer = _parse(connected[0]) if connected else None
        if peer is None or not self.trusted(peer):
            return scope
        forwarded_for = _header_list(scope["headers"], b"x-forwarded-for")
        client = self.client_address(peer, forwarded_for)
        scope = scope.copy()  # a copy: Hypercorn's access log keeps showing the real peer
        scope[FROM_TRUSTED_PROXY] = True  # type: ignore[literal-required]
        if client != peer:
            scope["client"] = (str(client), 0)
        protos = _header_list(scope["headers"], b"x-forwarded-proto")
        # The nearest proxy's value: it is the one that saw the connection it forwards.
        if protos and protos[-1].lower() in ("http", "https"):
            secure = protos[-1].lower() == "https"
            if scope["type"] == "websocket":
                scope["scheme"] = "wss" if secure else "ws"
            else:
                scope["scheme"] = "https" if secure else "http"
        return scope

    def client_address(self, peer: Address, forwarded_for: list[str]) -> Address:
        """Walk X-Forwarded-For from the right, past the trusted proxies, to the first address
        no trusted proxy is: each proxy appends the address it was connected from, so everything
        left of that address was written by the client itself and proves nothing."""
        entries = forwarded_for[::-1][: self.max_entries]
        client = peer
        for entry in entries:
            address = _parse(entry)
            if address is None:
                # "unknown", an obfuscated name, garbage: what lies beyond cannot be followed.
                # Stop at the last proxy that was vouched for, an address the client cannot choose,
                # so a mangled header can neither pick a rate-limit bucket nor escape one.
                break
            client = address
            if not self.trusted(address):
                break
        return client


def _header_list(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """All the header's lines as one comma-separated list, as HTTP says repeated lines mean."""
    values: list[str] = []
    for key, value in headers:
        if key.lower() == name:
            values.extend(part.strip() for part in value.decode("latin-1").split(","))
    return values


# An address with a port, as some proxies write it: 192.0.2.1:4711 or [2001:db8::1]:4711.
_WITH_PORT = re.compile(r"\[(?P<v6>[^\]]+)\](?::\d+)?|(?P<v4>[\d.]+):\d+")


def _parse(entry: str) -> Address | None:
    """The address in an X-Forwarded-For entry or a peer, with or without a port; None for
    anything else."""
    with_port = _WITH_PORT.fullmatch(entry)
    try:
        return ip_address(with_port["v6"] or with_port["v4"] if with_port else entry)
    except ValueError:
        return None
