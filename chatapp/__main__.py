"""`chatapp` (or `python -m chatapp`): serve the app with Hypercorn, configured by hypercorn.toml."""

from __future__ import annotations

import sys
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
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
