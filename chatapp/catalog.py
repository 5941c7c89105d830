"""The models a person may choose from.

CHATAPP_MODELS when the operator set it. Otherwise what the model server lists (GET /v1/models):
an Ollama or LM Studio user sees the models they have pulled. The list is kept for a few minutes and
fetched again in the background, so no page waits on the model server; a server that lacks the
endpoint, fails or lists nothing leaves `OPENAI_MODEL` alone, with a line in the log. Either way the
list is an allowlist: a model not on it is never asked for.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from .llm import LLMError, Provider

log = logging.getLogger(__name__)

REFRESH_SECONDS = 300.0
# Hosted APIs list models that cannot chat (OpenAI's: embeddings, speech, images, moderation…).
NOT_FOR_CHAT = re.compile(r"embed|tts|whisper|transcribe|dall-e|image|moderation|audio|realtime|search|"
                          r"davinci|babbage|computer-use|rerank", re.IGNORECASE)
MOST_MODELS = 200  # a page lists at most this many


class ModelCatalog:
    def __init__(self, provider: Provider, *, configured: tuple[str, ...], default: str,
                 refresh_seconds: float = REFRESH_SECONDS) -> None:
        self._provider = provider
        self._default = provider.label if provider.is_demo else default
        self._fixed = bool(configured) or provider.is_demo
        self._names = list(configured) if configured else [self._default]
        self._refresh_seconds = refresh_seconds
        self._fetched_at = float("-inf")
        self._fetching: asyncio.Task[None] | None = None

    def names(self) -> list[str]:
        """The models offered now, the default first; a list older than a few minutes is fetched
        again in the background (this call never waits for the model server)."""
        if time.monotonic() - self._fetched_at >= self._refresh_seconds:
            self.refresh_soon()
        return self._names

    def refresh_soon(self) -> None:
        """Fetch the server's list in the background (unless the list is the operator's, or the demo's)."""
        if not self._fixed and (self._fetching is None or self._fetching.done()):
            self._fetching = asyncio.ensure_future(self.refresh())

    async def refresh(self) -> None:
        """Ask the model server for its list now (a failure keeps the list there was)."""
        self._fetched_at = time.monotonic()
        try:
            listed = await self._provider.models()
        except LLMError as error:
            log.warning("Could not list the model server's models (%s: %s); offering %s.",
                        error.kind, error.detail, ", ".join(self._names))
            return
        chat = sorted({name for name in listed if not NOT_FOR_CHAT.search(name)})[:MOST_MODELS]
        if not chat:
            log.info("The model server lists no models; offering %s only.", self._default)
            chat = [self._default]
        elif self._default in chat:  # the configured default stays the first choice
            chat.remove(self._default)
            chat.insert(0, self._default)
        self._names = chat

    async def aclose(self) -> None:
        if self._fetching is not None and not self._fetching.done():
            self._fetching.cancel()
            await asyncio.gather(self._fetching, return_exceptions=True)
