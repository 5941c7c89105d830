"""The OpenID Provider that the sign-in tests run against (tests/support/oidc.py) is a real one: its
discovery and keys, and the authorization-code flow with PKCE, played here by the test as the
relying party (an HTTP client, then Chromium), the ID token checked as Authlib's OpenID client
checks it (joserfc against the JWKS, then Authlib's CodeIDToken: iss, aud, exp, nonce, at_hash)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx2
import pytest
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from bs4 import BeautifulSoup
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidClaimError
from joserfc.jwk import KeySet

from tests.support.browser import NewPage
from tests.support.live_server import free_port
from tests.support.oidc import OIDCProvider, oidc_provider, require, running_provider  # noqa: F401 - the fixture

CALLBACK = "http://127.0.0.1:{port}/auth/callback"


@pytest.fixture
def http() -> Iterator[httpx2.Client]:
    """A client that keeps the provider's cookies, as a browser would, and follows no redirect."""
    with httpx2.Client(timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture
def redirect_uri(oidc_provider: OIDCProvider) -> str:  # noqa: F811
    """A redirect URI allowed on the provider's client; nothing listens there (the test reads the
    code off the provider's redirect)."""
    uri = CALLBACK.format(port=free_port())
    oidc_provider.allow_redirect_uri(uri)
    return uri


class Request:
    """What a relying party keeps between sending the browser away and its coming back."""

    def __init__(self, provider: OIDCProvider, redirect_uri: str):
        self.redirect_uri = redirect_uri
        self.state = generate_token(20)
        self.nonce = generate_token(20)
        self.code_verifier = generate_token(48)
        self.url = f"{provider.issuer}/auth?" + urlencode({
            "response_type": "code", "client_id": provider.client_id, "redirect_uri": redirect_uri,
            "scope": "openid email profile", "state": self.state, "nonce": self.nonce,
            "code_challenge": create_s256_code_challenge(self.code_verifier), "code_challenge_method": "S256",
        })


def _follow(http: httpx2.Client, response: httpx2.Response, issuer: str) -> httpx2.Response:
    """Follow the provider's redirects within the provider, as a browser would; the first page, or
    the redirect that leaves it."""
    while response.is_redirect and urljoin(str(response.url), response.headers["location"]).startswith(issuer + "/"):
        response = http.get(urljoin(str(response.url), response.headers["location"]))
    return response


def _back_at(response: httpx2.Response, redirect_uri: str) -> dict[str, str]:
    """The query the provider sends the browser back to the redirect URI with."""
    location = urljoin(str(response.url), response.headers.get("location", ""))
    assert response.is_redirect and location.startswith(redirect_uri + "?"), \
        f"stopped at {response.url} ({response.status_code}): {response.text[:300]}"
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


def _submit(http: httpx2.Client, response: httpx2.Response, **fields: str) -> httpx2.Response:
    """Post the page's form as a person would: its fields as the page has them, `fields` typed over them."""
    form = BeautifulSoup(response.text, "html.parser").select_one("form")
    assert form is not None, response.text
    data = {str(field["name"]): str(field.get("value", "")) for field in form.select("input[name]")}
    return http.post(urljoin(str(response.url), str(form["action"])), data={**data, **fields})


def _sign_in(http: httpx2.Client, provider: OIDCProvider, request: Request, username: str,
             *, allow: bool = True) -> dict[str, str]:
    """The browser's part: the authorization endpoint, the sign-in page, the consent page."""
    page = _follow(http, http.get(request.url), provider.issuer)
    assert page.status_code == 200 and 'name="username"' in page.text, page.text
    signed_in = _submit(http, page, username=username, password=provider.accounts[username].password)
    consent = _follow(http, signed_in, provider.issuer)
    assert consent.status_code == 200 and "Allow access" in consent.text, consent.text
    answered = _submit(http, consent, decision="allow" if allow else "deny")
    return _back_at(_follow(http, answered, provider.issuer), request.redirect_uri)


def _exchange(http: httpx2.Client, provider: OIDCProvider, request: Request, code: str,
              *, code_verifier: str | None = None) -> httpx2.Response:
    """The token request, the client authenticated with HTTP Basic (client_secret_basic)."""
    metadata = http.get(provider.discovery_url).json()
    return http.post(metadata["token_endpoint"], auth=(provider.client_id, provider.client_secret), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": request.redirect_uri,
        "code_verifier": code_verifier if code_verifier is not None else request.code_verifier,
    })


def _verified_claims(http: httpx2.Client, provider: OIDCProvider, token: dict[str, Any], nonce: str) -> CodeIDToken:
    """The ID token's claims once checked as Authlib's OpenID client checks them (its parse_id_token)."""
    metadata = http.get(provider.discovery_url).json()
    keys = KeySet.import_key_set(http.get(metadata["jwks_uri"]).json())
    decoded = jwt.decode(token["id_token"], keys, algorithms=metadata["id_token_signing_alg_values_supported"])
    claims = CodeIDToken(decoded.claims, decoded.header, {"iss": {"values": [metadata["issuer"]]}},
                         {"nonce": nonce, "client_id": provider.client_id, "access_token": token["access_token"]})
    claims.validate(leeway=5)
    return claims


def test_discovery_describes_the_provider(http: httpx2.Client, oidc_provider: OIDCProvider) -> None:  # noqa: F811
    response = http.get(oidc_provider.discovery_url)

    assert response.status_code == 200
    metadata = response.json()
    assert metadata["issuer"] == oidc_provider.issuer
    for endpoint in ("authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint",
                     "end_session_endpoint"):
        assert metadata[endpoint].startswith(oidc_provider.issuer + "/")
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert {"openid", "email", "profile"} <= set(metadata["scopes_supported"])
    assert metadata["id_token_signing_alg_values_supported"] == ["RS256"]


def test_jwks_publishes_public_signing_keys_only(http: httpx2.Client, oidc_provider: OIDCProvider) -> None:  # noqa: F811
    jwks_uri = http.get(oidc_provider.discovery_url).json()["jwks_uri"]

    keys = http.get(jwks_uri).json()["keys"]

    assert keys and all(key["kty"] == "RSA" and key["use"] == "sig" and key["kid"] for key in keys)
    assert not any(private in key for key in keys for private in ("d", "p", "q", "dp", "dq", "qi"))


def test_code_flow_with_pkce_gives_a_signed_id_token(
        http: httpx2.Client, oidc_provider: OIDCProvider, redirect_uri: str) -> None:  # noqa: F811
    request = Request(oidc_provider, redirect_uri)

    back = _sign_in(http, oidc_provider, request, "alice")
    response = _exchange(http, oidc_provider, request, back["code"])

    assert back["state"] == request.state
    assert back["iss"] == oidc_provider.issuer  # RFC 9207: which provider answered
    assert response.status_code == 200, response.text
    token = response.json()
    assert token["token_type"] == "Bearer"
    claims = _verified_claims(http, oidc_provider, token, request.nonce)
    alice = oidc_provider.accounts["alice"]
    assert (claims["iss"], claims["aud"], claims["nonce"]) == (oidc_provider.issuer, "chatapp", request.nonce)
    assert (claims["sub"], claims["email"], claims["email_verified"], claims["name"], claims["preferred_username"]) \
        == (alice.sub, alice.email, True, alice.name, "alice")
    userinfo = http.get(f"{oidc_provider.issuer}/me", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert userinfo.json()["sub"] == alice.sub


def test_the_id_token_check_refuses_another_nonce_and_a_forged_signature(
        http: httpx2.Client, oidc_provider: OIDCProvider, redirect_uri: str) -> None:  # noqa: F811
    request = Request(oidc_provider, redirect_uri)
    token = _exchange(http, oidc_provider, request, _sign_in(http, oidc_provider, request, "bob")["code"]).json()
    header, payload, signature = token["id_token"].split(".")
    forged = {**token, "id_token": f"{header}.{payload}.{signature[:-8]}AAAAAAAA"}

    with pytest.raises(InvalidClaimError, match="nonce"):
        _verified_claims(http, oidc_provider, token, "another-nonce")
    with pytest.raises(BadSignatureError):
        _verified_claims(http, oidc_provider, forged, request.nonce)
    assert _verified_claims(http, oidc_provider, token, request.nonce)["sub"] == oidc_provider.accounts["bob"].sub


def test_a_replayed_code_is_refused_and_revokes_its_tokens(
        http: httpx2.Client, oidc_provider: OIDCProvider, redirect_uri: str) -> None:  # noqa: F811
    request = Request(oidc_provider, redirect_uri)
    code = _sign_in(http, oidc_provider, request, "alice")["code"]
    first = _exchange(http, oidc_provider, request, code)
    assert first.status_code == 200, first.text

    replay = _exchange(http, oidc_provider, request, code)

    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    userinfo = http.get(f"{oidc_provider.issuer}/me",
                        headers={"Authorization": f"Bearer {first.json()['access_token']}"})
    assert userinfo.status_code == 401


def test_a_wrong_code_verifier_is_refused(
        http: httpx2.Client, oidc_provider: OIDCProvider, redirect_uri: str) -> None:  # noqa: F811
    request = Request(oidc_provider, redirect_uri)
    code = _sign_in(http, oidc_provider, request, "alice")["code"]

    response = _exchange(http, oidc_provider, request, code, code_verifier=generate_token(48))

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_a_request_without_pkce_is_refused(
        http: httpx2.Client, oidc_provider: OIDCProvider, redirect_uri: str) -> None:  # noqa: F811
    request = Request(oidc_provider, redirect_uri)
    query = parse_qs(urlsplit(request.url).query)
    del query["code_challenge"], query["code_challenge_method"]

    back = _back_at(http.get(f"{oidc_provider.issuer}/auth?{urlencode(query, doseq=True)}"), redirect_uri)

    assert back["error"] == "invalid_request"
    assert "PKCE" in back["error_description"]


def test_a_redirect_uri_is_allowed_only_once_registered(
        http: httpx2.Client, oidc_provider: OIDCProvider) -> None:  # noqa: F811
    request = Request(oidc_provider, CALLBACK.format(port=44999))

    refused = http.get(request.url)
    oidc_provider.allow_redirect_uri(request.redirect_uri)
    allowed = http.get(request.url)

    # Never sent back to an unknown address: the error is shown on the provider's own page.
    assert refused.status_code == 400 and not refused.is_redirect
    assert "redirect_uri" in BeautifulSoup(refused.text, "html.parser").select_one("#error-description").text
    assert allowed.is_redirect and "/interaction/" in allowed.headers["location"]


def test_a_wrong_password_stays_on_the_sign_in_page(
        http: httpx2.Client, oidc_provider: OIDCProvider, redirect_uri: str) -> None:  # noqa: F811
    request = Request(oidc_provider, redirect_uri)
    page = _follow(http, http.get(request.url), oidc_provider.issuer)

    response = _submit(http, page, username="alice", password="bob-password-2")

    assert response.status_code == 200
    assert BeautifulSoup(response.text, "html.parser").select_one("[role=alert]").text == "Wrong username or password."


def test_denied_consent_goes_back_as_access_denied(
        http: httpx2.Client, oidc_provider: OIDCProvider, redirect_uri: str) -> None:  # noqa: F811
    request = Request(oidc_provider, redirect_uri)

    back = _sign_in(http, oidc_provider, request, "carol", allow=False)

    assert back["error"] == "access_denied" and back["state"] == request.state
    assert "code" not in back


@contextmanager
def _callback_server() -> Iterator[tuple[str, list[str]]]:
    """Something listening at a redirect URI for Chromium to land on; the paths it was asked for."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = b"<!doctype html><title>back at the app</title><p>back at the app</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_chromium_signs_in_and_out(
        http: httpx2.Client, oidc_provider: OIDCProvider, new_page: NewPage) -> None:  # noqa: F811
    with _callback_server() as (app, seen):
        request = Request(oidc_provider, f"{app}/auth/callback")
        oidc_provider.allow_redirect_uri(request.redirect_uri)
        oidc_provider.allow_post_logout_redirect_uri(f"{app}/signed-out")
        page = new_page()

        page.goto(request.url)
        oidc_provider.sign_in(page, "bob")
        back = {key: values[0] for key, values in parse_qs(urlsplit(page.url).query).items()}
        token = _exchange(http, oidc_provider, request, back["code"]).json()
        claims = _verified_claims(http, oidc_provider, token, request.nonce)

        assert page.url.startswith(request.redirect_uri + "?") and back["state"] == request.state
        assert claims["sub"] == oidc_provider.accounts["bob"].sub

        # RP-initiated logout: the provider asks, then sends the browser back with the state.
        page.goto(f"{oidc_provider.issuer}/session/end?" + urlencode({
            "id_token_hint": token["id_token"], "post_logout_redirect_uri": f"{app}/signed-out", "state": "bye"}))
        oidc_provider.confirm_sign_out(page)
        assert page.url == f"{app}/signed-out?state=bye"

        # Signed out at the provider: the next sign-in asks for the password again.
        again = Request(oidc_provider, request.redirect_uri)
        page.goto(again.url)
        page.wait_for_url(f"{oidc_provider.issuer}/interaction/**")
        assert page.get_by_label("Password").is_visible()
        assert [path.split("?")[0] for path in seen if path != "/favicon.ico"] == ["/auth/callback", "/signed-out"]


def test_a_provider_on_another_site_keeps_its_cookies_apart(
        tmp_path: Path, http: httpx2.Client, new_page: NewPage) -> None:
    require()
    with _callback_server() as (app, _), running_provider(tmp_path, host="localhost") as provider:
        request = Request(provider, f"{app}/auth/callback")
        provider.allow_redirect_uri(request.redirect_uri)
        page = new_page()

        page.goto(request.url)
        provider.sign_in(page, "alice")
        back = {key: values[0] for key, values in parse_qs(urlsplit(page.url).query).items()}
        claims = _verified_claims(http, provider, _exchange(http, provider, request, back["code"]).json(), request.nonce)

        assert provider.issuer.startswith("http://localhost:") and claims["iss"] == provider.issuer
        assert {cookie["domain"] for cookie in page.context.cookies() if cookie["name"].startswith("_session")} \
            == {"localhost"}
