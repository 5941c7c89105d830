"""The fake OpenAI-compatible server (tests/support/fake_openai.py) in a process of its own, for bench/load.py.

bench/load.py runs its load client in its own process and starts this runner as a subprocess, so
the fake model server and the client do not share one GIL (see bench/load.py's docstring).

    python bench/fake_server.py [--tokens 200] [--delay 0.01] [--paragraph 25] [--backlog 4096]

Prints one JSON line, {"base_url": ..., "port": ..., "pid": ...}, once it listens on 127.0.0.1.
Then it reads commands on stdin, one a line:
    stats   prints one JSON line: {"requests", "completed", "disconnects", "cpu_seconds"}
End of input (the parent closed the pipe or died) stops the server and exits, so it never outlives
the bench.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lib.processes import raise_fd_limit  # noqa: E402
from tests.support.fake_openai import FakeOpenAI, Reply  # noqa: E402


def reply_tokens(count: int, paragraph: int, word: str = "word") -> list[str]:
    """`count` numbered tokens (`word0 word1 …`); every `paragraph`-th ends its paragraph (a blank
    line), so the app's streaming renderer finishes blocks as it goes, as with real Markdown answers."""
    tokens = []
    for i in range(count):
        end = paragraph and (i + 1) % paragraph == 0 and i + 1 < count
        tokens.append(f"{word}{i}.\n\n" if end else f"{word}{i} ")
    return tokens


def bench_reply(tokens: int, delay: float, reasoning: int = 0, paragraph: int = 25) -> Reply:
    """The answer every bench request gets: `reasoning` tokens of reasoning (`thought0 …`, as
    reasoning_content), then `tokens` of answer, each `delay` seconds apart."""
    return Reply(tokens=reply_tokens(tokens, paragraph), delay=delay,
                 reasoning=reply_tokens(reasoning, paragraph, "thought"), reasoning_delay=delay)


class BenchFake(FakeOpenAI):
    """FakeOpenAI with a listen backlog of `backlog` (asyncio's default is 100): with hundreds of
    streams starting at once, the app's connections to the model would otherwise overflow the
    fake's accept queue, wait out SYN retransmits (1 s, 3 s, 7 s ...) and hit the app's 10 s connect
    timeout, which measures the fake server, not the app."""

    def __init__(self, *args, backlog: int = 4096, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.backlog = backlog

    def _run(self, ready) -> None:  # as FakeOpenAI._run, with the backlog
        self._loop = loop = asyncio.new_event_loop()
        self._server = loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=self.backlog))
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.01)
    parser.add_argument("--paragraph", type=int, default=25)
    parser.add_argument("--reasoning", type=int, default=0, help="reasoning tokens before each answer (0)")
    parser.add_argument("--backlog", type=int, default=4096, help="listen backlog (asyncio's default: 100)")
    args = parser.parse_args()
    raise_fd_limit()
    fake = BenchFake(default=bench_reply(args.tokens, args.delay, args.reasoning, args.paragraph),
                     backlog=args.backlog)
    fake.start()
    try:
        print(json.dumps({"base_url": fake.base_url, "port": fake.port, "pid": os.getpid()}), flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                usage = resource.getrusage(resource.RUSAGE_SELF)
                print(json.dumps({"requests": len(fake.requests), "completed": fake.completed,
                                  "disconnects": len(fake.disconnects),
                                  "cpu_seconds": usage.ru_utime + usage.ru_stime}), flush=True)
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
