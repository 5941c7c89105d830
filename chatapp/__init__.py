"""chatapp: a light, safe, streaming chat front end for any OpenAI-compatible model server.

The layers, from the edge in: `web/` (the only code that knows Quart: routes, streams, forms,
sessions), the domain modules here (a turn, its reply, history, choices, quota, storage,
rendering), and `llm/` (the only code that knows the openai SDK).
"""

from __future__ import annotations

from .web.app import config_from_environment, create_app

__all__ = ["config_from_environment", "create_app"]
