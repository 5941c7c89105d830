"""The model boundary: the only package that knows the `openai` SDK.

base.py says what a provider is; openai_server.py is the real one (wire.py reads its event stream,
thinking.py splits inline `<think>` reasoning off the answer), demo.py the offline one, pacing.py
evens out a bursty stream; errors.py is the one error family and its messages.
"""

from __future__ import annotations

from .base import Ending, Piece, Provider, Retrying, Thought, Usage
from .demo import DemoProvider
from .errors import LLMError
from .openai_server import PLACEHOLDER_KEY, OpenAIProvider
from .pacing import PacedProvider

__all__ = ["DemoProvider", "Ending", "LLMError", "OpenAIProvider", "PacedProvider", "Piece", "Provider", "Retrying",
           "Thought", "Usage", "make_provider"]


def make_provider(*, api_key: str | None, base_url: str | None, model: str, connect_timeout: float,
                  first_token_timeout: float, idle_timeout: float, max_retries: int = 2,
                  demo_delay: float = 0.02) -> Provider:
    """No key and no base URL → the offline demo; otherwise the OpenAI-compatible server."""
    if not api_key and not base_url:
        return DemoProvider(delay=demo_delay)
    return OpenAIProvider(api_key=api_key or PLACEHOLDER_KEY, base_url=base_url, model=model,
                          connect_timeout=connect_timeout, first_token_timeout=first_token_timeout,
                          idle_timeout=idle_timeout, max_retries=max_retries)
