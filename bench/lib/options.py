"""The command-line options bench/load.py and bench/direct.py share: bench/relay_table.py runs both
with the same N and the same flags, so they must mean the same in each."""

from __future__ import annotations

import argparse


def add_stream_options(parser: argparse.ArgumentParser, count: str, starts: str) -> None:
    """N (named `count`), the fake server's answer, the deadline, the ramp (spreading `starts`), the
    waves and the JSON line."""
    parser.add_argument(count, type=int, nargs="?", default=200)
    parser.add_argument("--tokens", type=int, default=200, help="tokens per answer (default 200)")
    parser.add_argument("--delay", type=float, default=0.01, help="seconds between tokens (default 0.01)")
    parser.add_argument("--deadline", type=float, default=120.0, help="global deadline in seconds (120)")
    parser.add_argument("--ramp", type=float, default=0.0, help=f"spread the {starts} over this many seconds (0)")
    parser.add_argument("--repeat", type=int, default=1, help="waves of N, one after another, pooled (1)")
    parser.add_argument("--json", action="store_true", help="also print one last line: JSON {...}")
