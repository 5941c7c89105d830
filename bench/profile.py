"""Where the app's CPU goes while it relays: py-spy samples the worker during `load.py N`
(default 50 streams of 600 tokens, 10 ms apart, every one to the end: long enough for
several hundred samples), and the samples are summed by what the code is doing.

    python bench/profile.py [N] [--tokens 600] [--keep FILE]

Each sample is one stack; it counts for the first of these (looked for from the innermost frame
out) that it is in, so the shares add up to 100%:
  - markdown and sanitizing (chatapp.rendering, chatapp.sanitize, Markdown, bleach, Pygments)
  - SQLite (aiosqlite's thread)
  - reading the model's stream (aiohttp, httpx2, the SDK, chatapp.llm)
  - writing to the browsers (Quart sending the response, Hypercorn, h11, the socket write)
  - framing the answer (chatapp.web.streams, chatapp.web.sse, chatapp.reply)
  - handling requests before they stream (routing, session, form, templates, the SDK's request)
  - the event loop itself (running callbacks, polling)
Then the functions with the most samples of their own. Bounded: one load.py run (about 15 s).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (name, markers): a frame whose text contains a marker belongs to the category; frames are
# looked at from the innermost out, and the first category found wins.
CATEGORIES = [
    ("markdown and sanitizing", ["chatapp/rendering.py", "chatapp/sanitize.py", "markdown/", "bleach/",
                                 "pygments/"]),
    ("SQLite (aiosqlite's thread)", ["aiosqlite/"]),
    ("templates", ["jinja2/", "render_template"]),
    ("reading the model's stream", ["aiohttp/", "httpx2/", "openai/", "chatapp/llm/openai_server.py", "chatapp/llm/wire.py",
                                    "chatapp/llm/deadline.py", "_read (chatapp/llm/pacing.py",
                                    "json/"]),
    ("writing to the browsers", ["hypercorn/", "h11/", "quart/asgi.py", "asyncio/streams.py",
                                 "_SelectorSocketTransport.write"]),
    ("framing the answer", ["chatapp/web/streams.py", "chatapp/web/sse.py", "chatapp/reply.py",
                            "chatapp/llm/pacing.py"]),
    ("handling requests before they stream", ["chatapp/", "quart/", "werkzeug/", "itsdangerous/"]),
    ("the event loop (callbacks, polling)", ["asyncio/", "selectors.py"]),
]


# Where a thread waits with nothing to do. py-spy counts a thread blocked in these as busy (it
# cannot tell on this kind of machine), so they are left out: the shares are of work done.
WAITING = ("EpollSelector.select (selectors.py", "_connection_worker_thread (aiosqlite/core.py:59)",
           "_worker (concurrent/futures/thread.py:81)")


def summarize(path: Path) -> str:
    categories: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = waiting = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or not stack:
            continue
        frames, samples = stack.split(";"), int(count)
        if frames[-1].startswith(WAITING):
            waiting += samples
            continue
        total += samples
        own[frames[-1]] += samples
        categories[next((name for frame in reversed(frames) for name, markers in CATEGORIES
                         if any(marker in frame for marker in markers)), "other")] += samples
    lines = [f"{total:,} samples of the app worker at work (py-spy, 250 a second, in the load phase; "
             f"{waiting:,} more waiting in epoll or a thread's queue, left out)", "",
             "where the time goes                          share"]
    lines += [f"  {name:40} {count / total:6.1%}" for name, count in categories.most_common()]
    lines += ["", "functions with the most samples of their own"]
    lines += [f"  {count / total:6.1%}  {frame[:110]}" for frame, count in own.most_common(15)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("streams", type=int, nargs="?", default=50)
    parser.add_argument("--tokens", type=int, default=600, help="tokens per answer (600)")
    parser.add_argument("--keep", metavar="FILE", help="keep py-spy's raw output here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chatapp-profile-") as tmp:
        raw = Path(args.keep or Path(tmp) / "profile.txt")
        run = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), str(args.streams),
                              "--tokens", str(args.tokens), "--disconnect-share", "0", "--profile", str(raw)],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
        figures = [line for line in run.stdout.splitlines()
                   if line.startswith(("app CPU per", "completed", "errors", "tokens delivered"))]
        print(f"python bench/load.py {args.streams} --tokens {args.tokens} --disconnect-share 0, profiled:")
        print("\n".join(f"  {line}" for line in figures))
        if not raw.exists() or not raw.stat().st_size:
            print("py-spy wrote no samples (is it installed, and may it trace the worker?)")
            return 1
        print()
        print(summarize(raw))
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
