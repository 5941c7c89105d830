"""What reading a model's stream costs, by HTTP stack: the app's provider on the SDK's default
transport (httpx2) and on its aiohttp transport (what the app uses), against a bare asyncio
protocol that only counts the text chunks (the floor: one socket read per token, nothing else).

Starts the fake OpenAI-compatible server in its own process (bench/fake_server.py: TOKENS tokens,
DELAY seconds apart), then, in this process, for each stack: N streams at once, read to the end.
Prints this process's CPU per 1,000 tokens. Bounded: a few seconds per stack, loopback only, and
the fake server stops at the end.

    python bench/read_floor.py [N] [--tokens 400] [--delay 0.01]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lib.fakes import FakeProcess  # noqa: E402
from chatapp.llm import OpenAIProvider  # noqa: E402

HISTORY = [{"role": "user", "content": "hi"}]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def provider_reader(base_url: str, transport: str):
    provider = OpenAIProvider(api_key="sk-bench", base_url=base_url, model="m", connect_timeout=10,
                              first_token_timeout=30, idle_timeout=30, max_retries=0)
    if transport == "httpx":  # the SDK's default client, as configured for the app otherwise
        provider._client = openai.AsyncOpenAI(api_key="sk-bench", base_url=base_url, max_retries=0,  # noqa: SLF001
                                              timeout=openai.Timeout(None, connect=10),
                                              http_client=openai.DefaultAsyncHttpxClient(
                                                  limits=httpx2.Limits(max_connections=None), trust_env=False))

    async def read() -> int:
        return sum([isinstance(piece, str) async for piece in provider.stream(HISTORY)])

    return read, provider.aclose


def protocol_reader(base_url: str):
    """A bare asyncio protocol: sends the request, counts `data:` events, nothing else."""
    url = urlsplit(base_url)
    body = json.dumps({"model": "m", "messages": HISTORY, "stream": True}).encode()
    request = (f"POST {url.path}/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body

    class Counter(asyncio.Protocol):
        def __init__(self, done: asyncio.Future) -> None:
            self.done, self.count = done, 0

        def data_received(self, data: bytes) -> None:
            self.count += data.count(b'"delta": {"content"')  # the fake server's text chunks
            if b"[DONE]" in data and not self.done.done():
                self.done.set_result(self.count)

    async def read() -> int:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        transport, _ = await loop.create_connection(lambda: Counter(done), url.hostname, url.port)
        transport.write(request)
        try:
            return await done
        finally:
            transport.close()

    async def close() -> None:
        pass

    return read, close


async def measure(read, close, streams: int) -> tuple[float, int]:
    await asyncio.gather(*(read() for _ in range(3)))  # warm up (connections, imports)
    cpu_before = cpu_seconds()
    counts = await asyncio.gather(*(read() for _ in range(streams)))
    cpu = cpu_seconds() - cpu_before
    await close()
    return cpu / sum(counts) * 1e6, sum(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("streams", type=int, nargs="?", default=50)
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--delay", type=float, default=0.01)
    args = parser.parse_args()
    fake = FakeProcess(args.tokens, args.delay, 4096)
    try:
        print(f"reading {args.streams} streams at once, {args.tokens} tokens {args.delay * 1000:g} ms apart, "
              "one process, loopback")
        print(f"  {'stack':48} {'CPU per 1,000 tokens':>21}")
        for name, (read, close) in [
            ("SDK (default httpx2 transport) + raw parse", provider_reader(fake.base_url, "httpx")),
            ("SDK (aiohttp transport) + raw parse: the app", provider_reader(fake.base_url, "aiohttp")),
            ("bare asyncio protocol (the floor)", protocol_reader(fake.base_url)),
        ]:
            cpu_ms, tokens = asyncio.run(measure(read, close, args.streams))
            print(f"  {name:48} {cpu_ms:18.0f} ms   ({tokens:,} tokens)")
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
