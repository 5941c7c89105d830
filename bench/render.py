"""CPU cost of streaming a ~16 KB answer through StreamingMarkdown vs one render_markdown call, and
the cost a token of the live tail (rendered while it streams) near the start and near the end of a
very long open code block, paragraph and table: it must not grow with the tail.

Run: .venv/bin/python bench/render.py   (prints figures; not a test)
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatapp.rendering import StreamingMarkdown, render_markdown  # noqa: E402

SECTION = '''## Step {n}: configure the *service*

This section explains how the `service` is configured. The defaults are sensible, but in
production you will want to change a few of them; see [the docs](https://docs.example.com/{n})
for **every** option, and keep the file under version control.

- keep secrets in the environment, never in the repository
- restart the process after a change
- check the logs with `journalctl -u app`

1. Install the package.
2. Create the configuration file.
3. Start the service and watch the output.

```python
import os

def load_config(path: str = "config.toml") -> dict:
    """Read the settings, with the environment taking precedence."""
    settings = {{"debug": False, "workers": {n}}}
    settings.update({{k.lower(): v for k, v in os.environ.items() if k.startswith("APP_")}})
    return settings
```

| Setting   | Default | Meaning                       |
|:----------|:-------:|------------------------------:|
| workers   | {n}       | processes serving requests    |
| debug     | false   | verbose errors, never in prod |

> Note: a change to `workers` needs a restart; the others are read on every request.

'''


def build_answer(size: int = 16_000) -> str:
    text, n = "# Deploying the app\n\nHere is a step-by-step guide.\n\n", 1
    while len(text) < size:
        text += SECTION.format(n=n)
        n += 1
    return text


def tokens(text: str, size: int = 4) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def best(fn, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


LONG_TAILS = {
    "open code block": "```python\n" + "".join(f"    value_{i} = compute({i}, *args)  # [step] {i}\n"
                                               for i in range(2500)),
    "paragraph": "A **long** paragraph with `code`, [links](https://a.example) and *emphasis*. " * 1500,
    "table": "| Setting | Default |\n|:--|--:|\n" + "| *workers* | `4` |\n" * 6000,
}


def growth(text: str, window: int = 2000) -> tuple[float, float]:
    """CPU µs a 4-character token, mean over the first and over the last `window` tokens of `text`."""
    pieces = tokens(text)
    s = StreamingMarkdown()
    spent = []
    for i in range(0, len(pieces), window):
        start = time.process_time()
        for piece in pieces[i:i + window]:
            s.feed(piece)
        spent.append((time.process_time() - start) / len(pieces[i:i + window]))
    return spent[0] * 1e6, spent[-1] * 1e6


def main() -> None:
    text = build_answer()
    pieces = tokens(text)

    def streamed():
        s = StreamingMarkdown()
        for piece in pieces:
            s.feed(piece)
        return s.finish()

    def feed_only():
        s = StreamingMarkdown()
        for piece in pieces:
            s.feed(piece)

    assert streamed() == render_markdown(text)
    render_markdown(text)  # warm caches (Pygments lexers, regexes)
    t_stream, t_once, t_feed = best(streamed), best(lambda: render_markdown(text)), best(feed_only)
    print(f"answer: {len(text):,} chars, {len(pieces):,} tokens")
    print(f"(a) streamed, token by token, incl. finish(): {t_stream * 1e3:8.2f} ms CPU")
    print(f"(b) render_markdown once:                     {t_once * 1e3:8.2f} ms CPU")
    print(f"ratio (a)/(b): {t_stream / t_once:.2f}  (bar: <= 2.0)")
    print(f"per token, mean: {t_stream / len(pieces) * 1e6:.1f} µs "
          f"(feed() alone incl. block and live tail renders: {t_feed / len(pieces) * 1e6:.1f} µs)")
    print("a very long tail, fed 4 characters a token (the live tail must not cost more as it grows):")
    for name, text in LONG_TAILS.items():
        runs = [growth(text) for _ in range(3)]
        first, last = min(r[0] for r in runs), min(r[1] for r in runs)
        print(f"  {name + ':':17} {len(text):7,} chars, µs a token: first 2,000 {first:6.1f}, last 2,000 {last:6.1f}")


if __name__ == "__main__":
    main()
