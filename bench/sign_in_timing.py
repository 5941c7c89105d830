"""Sign-in timing: an unknown name against a known name with a wrong password, through the whole
sign-in route (CHATAPP_AUTH=accounts, the real argon2id parameters, a SQLite file), interleaved so
that a slow moment weighs on both alike. An attacker who could tell them apart by time could list
the team's names. Bar (issue 15): medians within 20 % over 50 tries each.

    python bench/sign_in_timing.py [TRIES]
"""

from __future__ import annotations

import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatapp import create_app  # noqa: E402


async def main(tries: int) -> int:
    with tempfile.TemporaryDirectory() as folder:
        app = create_app({"database": str(Path(folder) / "chat.db"), "secret_key": "bench", "auth": "accounts",
                          "login_rate_limit": "100000/minute", "log_format": "text"})
        async with app.test_app():
            await app.extensions["accounts"].create_person("ada", "correct horse battery")
            client = app.test_client()
            page = await (await client.get("/sign-in")).get_data(as_text=True)
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]  # type: ignore[index]
            timings: dict[str, list[float]] = {"wrong password": [], "unknown name": []}
            for _ in range(tries):
                for case, name in (("wrong password", "ada"), ("unknown name", "nobody at all")):
                    started = time.perf_counter()
                    response = await client.post("/sign-in", form={"name": name, "password": "not the password",
                                                                   "csrf_token": csrf})
                    await response.get_data()
                    timings[case].append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 401, response.status_code
    print(f"{tries} tries each, interleaved; ms per sign-in attempt")
    print(f"  {'':16} {'median':>8} {'p10':>8} {'p90':>8}")
    for case, times in timings.items():
        deciles = statistics.quantiles(times, n=10)
        print(f"  {case:16} {statistics.median(times):8.1f} {deciles[0]:8.1f} {deciles[-1]:8.1f}")
    ratio = statistics.median(timings["unknown name"]) / statistics.median(timings["wrong password"])
    verdict = "PASS" if 0.8 <= ratio <= 1.2 else "FAIL"
    print(f"{verdict}: unknown name / wrong password, medians: {ratio:.3f} (bar: within 0.8 to 1.2)")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)))
