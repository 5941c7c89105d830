"""The offline demo model: a fixed markdown answer, streamed at a human pace, so a fresh checkout
works without a key or a model server. Same input, same output."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncGenerator

from .base import Usage

# Token-sized pieces: a word part of up to four characters (with its leading space), one
# punctuation mark (with its leading space), or one whitespace character. Together they cover
# every character, so the pieces join back into the exact text.
_PIECE = re.compile(r" ?\w{1,4}| ?[^\w\s]|\s")
_MAX_QUOTE = 2000

_TEMPLATE = """\
## Hello from the demo model

This is the **offline demo**: no language model is connected, so every question gets this same \
sample answer. To talk to a real model, set `OPENAI_API_KEY` (for OpenAI), or `OPENAI_BASE_URL` \
for any OpenAI-compatible server such as Ollama, vLLM or LM Studio, and restart the app.

What this answer shows off:

- **Streaming**: the text arrives piece by piece, like a real model's.
- **Markdown**: headings, lists, code and tables are rendered safely.
- **History**: this conversation has {turns} so far.

```python
def greet(name: str) -> str:
    return f"Hello, {{name}}!"
```

| Setting | What it does |
| --- | --- |
| `OPENAI_API_KEY` | Key for OpenAI or a compatible service |
| `OPENAI_BASE_URL` | Address of your own model server |
| `OPENAI_MODEL` | Which model to ask |

You asked:

{quote}
"""


def demo_reply(messages: list[dict[str, str]]) -> str:
    """The demo's whole answer to this conversation."""
    question = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    question = question.strip() or "(nothing)"
    if len(question) > _MAX_QUOTE:
        question = question[:_MAX_QUOTE] + "…"
    quote = "\n".join(f"> {line}" for line in question.splitlines())
    count = sum(1 for m in messages if m.get("role") in ("user", "assistant"))
    turns = f"{count} message" + ("" if count == 1 else "s")
    return _TEMPLATE.format(turns=turns, quote=quote)


def pieces(text: str) -> list[str]:
    """Split text into token-sized pieces that join back into it."""
    return _PIECE.findall(text)


class DemoProvider:
    label = "Demo model (offline)"
    is_demo = True

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay

    async def stream(self, messages: list[dict[str, str]], model: str | None = None) -> AsyncGenerator[str | Usage, None]:
        reply = demo_reply(messages)
        for piece in pieces(reply):
            await asyncio.sleep(self.delay)  # also a cancellation point when the delay is 0
            yield piece
        prompt = sum(len(m.get("content", "")) for m in messages)
        yield Usage(prompt_tokens=math.ceil(prompt / 4), completion_tokens=math.ceil(len(reply) / 4))

    async def check(self) -> None:
        pass  # always there: it runs in this process

    async def models(self) -> list[str]:
        return [self.label]

    async def aclose(self) -> None:
        pass
