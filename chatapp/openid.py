"""The app's side of OpenID Connect sign-in (CHATAPP_AUTH=oidc), glued from Authlib's pieces: the
provider's metadata (discovery, fetched once), the authorization request (the code flow with PKCE
S256, `state` and `nonce`), the code exchange at the token endpoint (the client authenticated as
the provider's metadata allows), and the ID token's check (its signature against the provider's
keys with joserfc; iss, aud, exp, iat, nonce and azp with Authlib's CodeIDToken).

No web framework here: web/oidc.py keeps a Flow in the browser's session and makes pages of the
errors. Every failure is a SignInFailed: a sentence for the person, a reason for the audit log.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

import httpx2
from authlib.common.security import generate_token  # type: ignore[import-untyped]
from authlib.oauth2.auth import ClientAuth  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request  # type: ignore[import-untyped]
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]
from authlib.oidc.core import CodeIDToken  # type: ignore[import-untyped]
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

log = logging.getLogger(__name__)

UNREACHABLE = "chatapp could not reach the sign-in service. Try again in a minute."
MISCONFIGURED = ("Sign-in is not set up right: the sign-in service did not answer as chatapp expects. "
                 "Tell whoever runs chatapp.")
EXPIRED = "This sign-in link was already used or has expired. Sign in again."
REFUSED = "The sign-in service did not accept this sign-in. Sign in again."
UNVERIFIED = "The sign-in service's answer could not be verified, so you are not signed in. Sign in again."
DENIED = "You did not allow chatapp to use your account there, so you are not signed in."
PROVIDER_ERROR = "The sign-in service could not sign you in. Try again, or tell whoever runs chatapp."

# How long a sign-in may take at the provider (its own sign-in pages, a second factor).
FLOW_SECONDS = 600
# Clock skew allowed between this server and the provider when reading exp and iat.
LEEWAY = 60
# The provider's keys are fetched again for a key id not seen yet (the provider rotated its keys),
# at most this often: a token naming made-up key ids cannot make chatapp hammer the provider.
KEYS_REFETCH_SECONDS = 30
# Signatures only with the provider's published keys: never "none", nor HMAC with the client secret.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class SignInFailed(Exception):
    """A sign-in that did not go through: `message` for the person, `reason` for the audit log."""

    def __init__(self, message: str, reason: str, status: int = 400):
        super().__init__(reason)
        self.message, self.reason, self.status = message, reason, status


@dataclass(frozen=True)
class Flow:
    """What the browser's session keeps between sending it to the provider and its coming back."""

    state: str
    nonce: str
    code_verifier: str
    next: str
    started: float

    @classmethod
    def new(cls, next_url: str) -> Flow:
        return cls(generate_token(32), generate_token(32), generate_token(64), next_url, time.time())

    @classmethod
    def restore(cls, stored: object) -> Flow | None:
        """The flow kept in the session, or None if there is none, it is malformed or too old."""
        if not isinstance(stored, dict):
            return None
        try:
            flow = cls(**stored)
        except TypeError:
            return None
        if not all(isinstance(value, str) and value for value in (flow.state, flow.nonce, flow.code_verifier)):
            return None
        if not isinstance(flow.started, int | float) or not 0 <= time.time() - flow.started <= FLOW_SECONDS:
            return None
        return flow

    def stored(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Claims:
    """Who the provider vouched for, once its ID token was checked."""

    issuer: str
    subject: str
    name: str  # the person's name here: preferred_username, else the address's local part, else sub
    display_name: str | None


class OpenIDClient:
    """This app as a client of one OpenID Provider, for the life of the app (one HTTP client)."""

    def __init__(self, issuer: str, client_id: str, client_secret: str | None, scopes: str, *,
                 timeout: float = 10.0):
        self.issuer, self.client_id, self.client_secret, self.scopes = issuer, client_id, client_secret, scopes
        self._http = httpx2.AsyncClient(timeout=timeout, follow_redirects=False)
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._keys_at = 0.0

    async def aclose(self) -> None:
        await self._http.aclose()

    async def authorization_url(self, redirect_uri: str, flow: Flow) -> str:
        """Where to send the browser to sign in (raises SignInFailed if the provider cannot say)."""
        metadata = await self.metadata()
        return str(prepare_grant_uri(
            metadata["authorization_endpoint"], self.client_id, "code", redirect_uri=redirect_uri,
            scope=self.scopes, state=flow.state, nonce=flow.nonce,
            code_challenge=create_s256_code_challenge(flow.code_verifier), code_challenge_method="S256"))

    async def sign_in(self, code: str, redirect_uri: str, flow: Flow, *, answered_by: str | None = None) -> Claims:
        """Exchange the code (with the flow's PKCE verifier) and check the ID token against the
        flow's nonce; who it names. `answered_by`: the callback's `iss`, where the provider sends
        one (RFC 9207: a code from another provider is never sent to this one). Raises SignInFailed."""
        metadata = await self.metadata()
        if answered_by is not None and answered_by != metadata["issuer"]:
            raise SignInFailed(UNVERIFIED, f"answered by another issuer: {answered_by[:100]!r}")
        token = await self._exchange(code, redirect_uri, flow.code_verifier)
        claims = await self._verified(token, flow.nonce)
        email = claims.get("email")
        local_part = email.split("@")[0] if isinstance(email, str) else None
        name = next((value for value in (claims.get("preferred_username"), local_part, claims["sub"])
                     if isinstance(value, str) and value.strip()), claims["sub"])
        display_name = claims.get("name") if isinstance(claims.get("name"), str) else None
        return Claims(claims["iss"], claims["sub"], name, display_name)

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document, fetched once (a failed fetch is tried again next time)."""
        if self._metadata is None:
            document = await self._get_json(f"{self.issuer}/.well-known/openid-configuration", "discovery")
            # CHATAPP_OIDC_ISSUER is read without a trailing slash, which some issuers have (Auth0):
            # the tokens' `iss` is then checked against the provider's own spelling.
            named = document.get("issuer")
            if not isinstance(named, str) or named.rstrip("/") != self.issuer:
                log.error("OpenID discovery names the issuer %r, not CHATAPP_OIDC_ISSUER=%r: the two must be the "
                          "same string", named, self.issuer)
                raise SignInFailed(MISCONFIGURED, f"discovery names another issuer: {str(named)[:100]!r}", 502)
            for endpoint in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(document.get(endpoint), str):
                    log.error("OpenID discovery of %s has no %s", self.issuer, endpoint)
                    raise SignInFailed(MISCONFIGURED, f"discovery has no {endpoint}", 502)
            self._metadata = document
        return self._metadata

    async def _exchange(self, code: str, redirect_uri: str, code_verifier: str) -> dict[str, Any]:
        metadata = await self.metadata()
        body = prepare_token_request("authorization_code", code=code, redirect_uri=redirect_uri,
                                     code_verifier=code_verifier)
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        url, headers, body = self._client_auth(metadata).prepare("POST", metadata["token_endpoint"], headers, body)
        try:
            response = await self._http.post(url, headers=headers, content=body)
        except (httpx2.HTTPError, httpx2.InvalidURL) as error:
            log.warning("OpenID token endpoint unreachable: %r", error)
            raise SignInFailed(UNREACHABLE, f"token endpoint unreachable: {type(error).__name__}", 502) from None
        token = _json(response)
        if response.status_code == 200 and isinstance(token.get("id_token"), str):
            return token
        error_code = str(token.get("error") or f"HTTP {response.status_code}")[:100]
        if response.status_code == 400 and error_code in ("invalid_grant", "invalid_request"):
            raise SignInFailed(REFUSED, f"token endpoint refused: {error_code}")  # a used or stolen code
        log.error("OpenID token endpoint answered %s (%s): check CHATAPP_OIDC_CLIENT_ID and _SECRET",
                  response.status_code, error_code)
        raise SignInFailed(MISCONFIGURED, f"token endpoint answered {response.status_code}: {error_code}", 502)

    def _client_auth(self, metadata: dict[str, Any]) -> ClientAuth:
        """client_secret_basic unless the provider takes client_secret_post only; a client without
        a secret is a public one (PKCE alone)."""
        if not self.client_secret:
            return ClientAuth(self.client_id, None, "none")
        supported = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if "client_secret_basic" not in supported and "client_secret_post" in supported:
            return ClientAuth(self.client_id, self.client_secret, "client_secret_post")
        # RFC 6749 2.3.1: both are form-encoded before they go into the Basic header.
        return ClientAuth(quote(self.client_id, safe=""), quote(self.client_secret, safe=""), "client_secret_basic")

    async def _verified(self, token: dict[str, Any], nonce: str) -> dict[str, Any]:
        metadata = await self.metadata()
        algorithms = [alg for alg in metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
                      if alg in ALGORITHMS]
        try:
            keys = await self._signing_keys(_key_id(token["id_token"]))
            decoded = jwt.decode(token["id_token"], keys, algorithms=algorithms)
            claims = CodeIDToken(
                decoded.claims, decoded.header,
                {"iss": {"essential": True, "value": metadata["issuer"]}, "aud": {"essential": True, "value": self.client_id},
                 "sub": {"essential": True}},
                {"nonce": nonce, "client_id": self.client_id, "access_token": token.get("access_token")})
            claims.validate(leeway=LEEWAY)
        except (JoseError, ValueError) as error:
            log.warning("OpenID ID token refused: %r", error)
            raise SignInFailed(UNVERIFIED, f"id token refused: {error}"[:200]) from None
        return dict(claims)

    async def _signing_keys(self, key_id: str | None) -> KeySet:
        known = self._keys is not None and (key_id is None or key_id in {key.kid for key in self._keys.keys})
        if not known and (self._keys is None or time.monotonic() - self._keys_at > KEYS_REFETCH_SECONDS):
            document = await self._get_json((await self.metadata())["jwks_uri"], "keys")
            try:
                self._keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError, KeyError) as error:
                log.error("OpenID provider's keys cannot be read: %r", error)
                raise SignInFailed(MISCONFIGURED, "the provider's keys cannot be read", 502) from None
            self._keys_at = time.monotonic()
        assert self._keys is not None
        return self._keys

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url, headers={"Accept": "application/json"})
        except (httpx2.HTTPError, httpx2.InvalidURL) as error:
            log.warning("OpenID %s at %s unreachable: %r", what, url, error)
            raise SignInFailed(UNREACHABLE, f"{what} unreachable: {type(error).__name__}", 502) from None
        document = _json(response)
        if response.status_code != 200 or not document:
            log.error("OpenID %s at %s answered %s", what, url, response.status_code)
            raise SignInFailed(MISCONFIGURED, f"{what} answered {response.status_code}", 502)
        return document


def _json(response: httpx2.Response) -> dict[str, Any]:
    """The response's JSON object, or {} for anything else."""
    try:
        document = response.json()
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _key_id(token: str) -> str | None:
    """The `kid` of a compact JWS's header, read before its signature is checked (only to pick the key)."""
    kid = extract_compact(token.encode()).protected.get("kid")
    return kid if isinstance(kid, str) else None
