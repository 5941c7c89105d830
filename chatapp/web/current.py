"""The app's long-lived resources, for code serving a request: one accessor each.

They are made by the app factory (web/app.py) when the app starts serving and live in
`current_app`; nothing else reads `current_app.extensions` or the CHATAPP config entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import current_app

if TYPE_CHECKING:
    from ..accounts import Accounts
    from ..catalog import ModelCatalog
    from ..config import Config
    from ..llm import Provider
    from ..openid import OpenIDClient
    from ..quota import Quota
    from ..storage import Store


def config() -> Config:
    return current_app.config["CHATAPP"]


def store() -> Store:
    return current_app.extensions["store"]


def provider() -> Provider:
    return current_app.extensions["provider"]


def models() -> list[str]:
    """The models a person may choose now (catalog.py)."""
    catalog: ModelCatalog = current_app.extensions["catalog"]
    return catalog.names()


def quota() -> Quota:
    return current_app.extensions["quota"]


def accounts() -> Accounts:
    """The people (CHATAPP_AUTH accounts, header, oidc; identity.py opens them)."""
    return current_app.extensions["accounts"]


def openid() -> OpenIDClient:
    """The OpenID Provider's client (CHATAPP_AUTH oidc; oidc.py opens it)."""
    return current_app.extensions["openid"]
