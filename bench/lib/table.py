"""How a bench prints its figures: percentiles, a two-column table with the errors counted by
reason, and one `JSON {...}` line for bench/relay_table.py to read."""

from __future__ import annotations

import json
import math
import re


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def print_json(summary: dict) -> None:
    """The figures as one line, `JSON {...}`, for bench/relay_table.py: NaN as null, floats to 3 places."""
    clean = {key: None if isinstance(value, float) and math.isnan(value) else
             round(value, 3) if isinstance(value, float) else value for key, value in summary.items()}
    print("JSON " + json.dumps(clean), flush=True)


def print_table(title: str, rows: list[tuple[str, str]], errors: list, deadline_passed: float | None) -> None:
    """The figures as a two-column table, then the errors (anything with a `reason`) counted by reason."""
    width = max(len(name) for name, _ in rows)
    print()
    print(title)
    print("-" * (width + 60))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print("-" * (width + 60))
    if deadline_passed is not None:
        print(f"the {deadline_passed:g} s deadline passed: streams still open were cancelled (counted as errors)")
    if errors:
        reasons: dict[str, int] = {}
        for result in errors:
            reason = re.sub(r"\d+", "N", result.reason)
            reasons[reason] = reasons.get(reason, 0) + 1
        print("errors by reason:")
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
            print(f"  {count:6}  {reason}")
