"""A real OpenID Provider for the sign-in tests: panva's oidc-provider (tests/oidc/, on the machine's
Node.js) on 127.0.0.1, with one confidential client and the test accounts in ACCOUNTS.

    oidc_provider   the provider, one per test run (an OIDCProvider): .issuer, .client_id,
                    .client_secret, .accounts; .allow_redirect_uri(uri) before the app sends a
                    browser there (redirect URIs match exactly, as at any real provider: allow the
                    app's own callback, port included, once the app is up); .sign_in(page, username)
                    signs in on the provider's pages where the app sent a Playwright page;
                    .held_callback(page, username) too, but returns the way back to the app unvisited;
                    .walk(http, url, username) the same without a browser (an httpx2 client).

A test that needs a provider of its own (on another site than the app, with other accounts, or
stopped on purpose) calls `require()`, then uses `running_provider(directory, ...)`.

Without Node.js or the provider's npm packages (`npm ci` in tests/oidc) these tests are skipped,
unless CHATAPP_REQUIRE_OIDC is set (as in CI), where a missing provider must fail the run rather
than pass it quietly.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin

import pytest

from .live_server import ROOT, free_port

if TYPE_CHECKING:
    import httpx2
    from playwright.sync_api import Page

HERE = ROOT / "tests" / "oidc"
SCRIPT = HERE / "provider.mjs"
REQUIRE = "CHATAPP_REQUIRE_OIDC"
# oidc-provider 9 reads URLs with URL.parse, which Node.js has from 20.18 on.
NODE_AT_LEAST = (20, 18)


@dataclass(frozen=True)
class Account:
    username: str
    password: str
    sub: str  # the provider's stable id for the person: what the app must key accounts on
    email: str
    name: str
    email_verified: bool = True


ACCOUNTS = (
    Account("alice", "alice-password-1", "248289761001", "alice@example.com", "Alice Liddell"),
    Account("bob", "bob-password-2", "248289761002", "bob@example.com", "Bob Dobbs"),
    # An address the provider has not checked: an app must not link accounts by it.
    Account("carol", "carol-password-3", "248289761003", "carol@example.com", "Carol Danvers", email_verified=False),
)


def missing() -> str | None:
    """Why the provider cannot run here, or None if it can."""
    node = shutil.which("node")
    if node is None:
        return "Node.js is not installed (apt-get install nodejs npm)"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout
    try:
        found = tuple(int(part) for part in version.strip().lstrip("v").split(".")[:2])
    except ValueError:
        return f"cannot read Node.js's version from {version!r}"
    if found < NODE_AT_LEAST:
        return f"Node.js {version.strip()} is older than {'.'.join(map(str, NODE_AT_LEAST))}, which oidc-provider needs"
    if not (HERE / "node_modules" / "oidc-provider" / "package.json").exists():
        return "the provider's npm packages are not installed (cd tests/oidc && npm ci)"
    return None


class OIDCProvider:
    """The provider as the tests and the app see it: its issuer URL (http, no trailing slash: the
    ID tokens' `iss` is exactly this), its one client, its accounts."""

    client_id = "chatapp"

    def __init__(self, settings: Path, port: int, redirect_uris: Iterable[str], accounts: Iterable[Account],
                 host: str = "127.0.0.1"):
        self.issuer = f"http://{host}:{port}"
        self.client_secret = secrets.token_urlsafe(32)
        self.accounts = {account.username: account for account in accounts}
        self._settings = settings
        self._port = port
        self._redirect_uris = list(redirect_uris)
        self._post_logout_redirect_uris: list[str] = []
        self._write()

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def allow_redirect_uri(self, uri: str) -> None:
        """Register a redirect URI on the client (honoured from the next request on)."""
        if uri not in self._redirect_uris:
            self._redirect_uris.append(uri)
            self._write()

    def allow_post_logout_redirect_uri(self, uri: str) -> None:
        """Register where RP-initiated logout (the end_session_endpoint) may send the browser back."""
        if uri not in self._post_logout_redirect_uris:
            self._post_logout_redirect_uris.append(uri)
            self._write()

    def sign_in(self, page: Page, username: str, *, password: str | None = None, allow: bool = True) -> None:
        """Where the app sent the browser to the provider, sign in as `username` and answer the
        consent page (Allow, or Deny with allow=False), as a person would; returns once the browser
        has left the provider (for the app's redirect URI). A refused password fails the test."""
        self._log_in(page, username, password)
        if page.url.startswith(f"{self.issuer}/interaction/"):  # consent, asked once per grant
            with page.expect_navigation():
                page.get_by_role("button", name="Allow" if allow else "Deny").click()

    def held_callback(self, page: Page, username: str) -> str:
        """Sign in as `sign_in` does, but answer the consent page and follow the provider's
        redirects outside the page (with its context's cookies): the URL that the provider sends
        the browser back to, not visited. For tests that tamper with a callback or replay it (a
        Playwright route cannot hold it: routes see no request that a redirect made)."""
        self._log_in(page, username, None)
        action = page.locator("form").get_attribute("action")
        assert action is not None and action.endswith("/confirm"), page.content()
        response = page.request.post(urljoin(page.url, action), form={"decision": "allow"}, max_redirects=0)
        location = urljoin(response.url, response.headers.get("location", ""))
        while response.status in (302, 303) and location.startswith(self.issuer + "/"):
            response = page.request.get(location, max_redirects=0)
            location = urljoin(response.url, response.headers.get("location", ""))
        assert response.status in (302, 303), f"{response.status} at {response.url}: {response.text()[:300]}"
        return location

    def _log_in(self, page: Page, username: str, password: str | None) -> None:
        """Where the app sent the browser, fill in the provider's sign-in page (if it asks)."""
        page.wait_for_url(f"{self.issuer}/interaction/**")
        if page.locator("#username").count():
            page.get_by_label("Username").fill(username)
            page.get_by_label("Password").fill(password if password is not None else self.accounts[username].password)
            with page.expect_navigation():
                page.get_by_role("button", name="Sign in").click()
            error = page.locator("#error")
            if error.count():
                raise AssertionError(f"the provider refused to sign {username} in: {error.inner_text()}")

    def walk(self, http: httpx2.Client, url: str, username: str) -> str:
        """The browser's part without a browser (the provider's pages need no JavaScript): from the
        authorization URL an app sent, sign in as `username` if asked, allow if asked, and return
        the URL the provider sends back to, unvisited. `http` keeps the provider's cookies and
        follows no redirect, as test_oidc_provider's client does."""
        from bs4 import BeautifulSoup

        response = http.get(url)
        for _ in range(10):
            location = urljoin(str(response.url), response.headers.get("location", ""))
            if response.is_redirect and not location.startswith(self.issuer + "/"):
                return location
            if response.is_redirect:
                response = http.get(location)
                continue
            form = BeautifulSoup(response.text, "html.parser").select_one("form")
            assert response.status_code == 200 and form is not None, response.text[:300]
            if form.select_one("input[name=username]") is not None:
                fields = {"username": username, "password": self.accounts[username].password}
            else:
                fields = {"decision": "allow"}
            response = http.post(urljoin(str(response.url), str(form["action"])), data=fields)
        raise AssertionError(f"the provider never sent the browser back: at {response.url}")

    def confirm_sign_out(self, page: Page) -> None:
        """Where the app sent the browser to the end_session_endpoint, confirm the sign-out."""
        page.wait_for_url(f"{self.issuer}/session/end**")
        with page.expect_navigation():
            page.get_by_role("button", name="Yes, sign me out").click()

    def _write(self) -> None:
        client = {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "client_name": "chatapp",
            "redirect_uris": self._redirect_uris,
            "post_logout_redirect_uris": self._post_logout_redirect_uris,
            "response_types": ["code"],
            "grant_types": ["authorization_code"],
            "scope": "openid email profile",
            "token_endpoint_auth_method": "client_secret_basic",
        }
        settings = {"port": self._port, "issuer": self.issuer, "client": client,
                    "accounts": [asdict(account) for account in self.accounts.values()]}
        # Whole or not at all: the provider reads this file at each lookup of the client.
        partial = self._settings.with_suffix(".partial")
        partial.write_text(json.dumps(settings))
        partial.replace(self._settings)


@contextmanager
def running_provider(directory: Path, *, redirect_uris: Iterable[str] = (), accounts: Iterable[Account] = ACCOUNTS,
                     host: str = "127.0.0.1") -> Iterator[OIDCProvider]:
    """The provider on a free port of 127.0.0.1 for the length of the block, its settings and log in
    `directory`. With host="localhost" its issuer names localhost: to a browser, another site than
    an app on 127.0.0.1 (its own cookies, and SameSite as between an app and a real provider)."""
    port = free_port()
    provider = OIDCProvider(directory / "provider.json", port, redirect_uris, accounts, host)
    with open(directory / "provider.log", "wb") as log:
        # Its standard input is a pipe it watches: should this process die, the provider stops too.
        process = subprocess.Popen(["node", str(SCRIPT), str(directory / "provider.json")], cwd=HERE,
                                   stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until_up(process, provider.discovery_url, log.name)
            yield provider
        finally:
            assert process.stdin is not None
            process.stdin.close()
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_up(process: subprocess.Popen[bytes], url: str, log: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the OpenID Provider exited with {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the OpenID Provider did not start in time; see {log}")


def require() -> None:
    """Skip the calling test or fixture where the provider cannot run (fail it, under CHATAPP_REQUIRE_OIDC)."""
    reason = missing()
    if reason is not None:
        if os.environ.get(REQUIRE):
            pytest.fail(f"{REQUIRE} is set but {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    """The provider, started once for the test run."""
    require()
    with running_provider(tmp_path_factory.mktemp("oidc")) as provider:
        yield provider
