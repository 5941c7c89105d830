"""`chatapp` (or `python -m chatapp`): serve the app with Hypercorn, configured by hypercorn.toml.

Two environment variables that hosting platforms set override the file:
- PORT: bind 0.0.0.0:$PORT instead of the file's `bind` (Render, Heroku and the Docker image);
- WEB_CONCURRENCY: the number of worker processes instead of the file's `workers`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from hypercorn.config import Config as HypercornConfig
from hypercorn.run import run

from . import config_from_environment


def main() -> int:
    # Check the settings here first: a worker process that fails at start-up makes Hypercorn
    # exit with status 0, which would hide a bad setting from a process manager.
    config_from_environment()
    config_file = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("hypercorn.toml")
    config = HypercornConfig.from_toml(config_file) if config_file.exists() else HypercornConfig()
    config.application_path = "chatapp:create_app()"
    if (port := _whole_number("PORT", 1, 65535)) is not None:
        config.bind = [f"0.0.0.0:{port}"]  # the platform's router connects from outside the host
    if (workers := _whole_number("WEB_CONCURRENCY", 1, 64)) is not None:
        config.workers = workers
    if config.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker writes its metrics here and /metrics adds them up; a fresh folder per start,
        # inherited by the worker processes through the environment.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="chatapp-metrics-")
    return run(config)


def _whole_number(name: str, low: int, high: int) -> int | None:
    """The environment variable `name` as a number from low to high; unset or empty: None.
    Anything else stops start-up with one line and status 2, like a bad chatapp setting."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if raw.isascii() and raw.isdigit() and low <= int(raw) <= high:
        return int(raw)
    print(f"chatapp: configuration error: {name} must be a whole number between {low} and {high}; "
          f"got {raw[:20]!r}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    sys.exit(main())
