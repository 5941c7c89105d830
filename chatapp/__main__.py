"""`chatapp` (or `python -m chatapp`): serve the app with Hypercorn, configured by hypercorn.toml."""

from __future__ import annotations

import sys
from pathlib import Path

from hypercorn.config import Config as HypercornConfig
from hypercorn.run import run


def main() -> int:
    config_file = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("hypercorn.toml")
    config = HypercornConfig.from_toml(config_file) if config_file.exists() else HypercornConfig()
    config.application_path = "chatapp:create_app()"
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
