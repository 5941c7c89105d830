"""The fake OpenAI-compatible server for the benches: in a process of its own (bench/fake_server.py,
the default, so that it and the load client do not share one GIL), or in a thread of this process
(to compare). Both answer every request with the same scripted reply and report what they served."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.fake_server import BenchFake, bench_reply

ROOT = Path(__file__).resolve().parents[2]


class FakeProcess:
    """bench/fake_server.py in a subprocess (the default)."""

    def __init__(self, tokens: int, delay: float, backlog: int, reasoning: int = 0) -> None:
        self._process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "fake_server.py"), "--tokens", str(tokens), "--delay", str(delay),
             "--backlog", str(backlog), "--reasoning", str(reasoning)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the fake server did not start")
        info = json.loads(line)
        self.base_url, self.pid = info["base_url"], info["pid"]

    def stats(self) -> dict:
        self._process.stdin.write("stats\n")
        self._process.stdin.flush()
        return json.loads(self._process.stdout.readline())

    def stop(self) -> None:
        try:
            self._process.stdin.close()
            self._process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self._process.kill()
            self._process.wait()


class FakeThread:
    """The fake server in a thread of this process (load.py's `--fake thread`, to compare)."""

    def __init__(self, tokens: int, delay: float, backlog: int, reasoning: int = 0) -> None:
        self._fake = BenchFake(default=bench_reply(tokens, delay, reasoning), backlog=backlog).start()
        self.base_url, self.pid = self._fake.base_url, None

    def stats(self) -> dict:
        return {"requests": len(self._fake.requests), "completed": self._fake.completed,
                "disconnects": len(self._fake.disconnects), "cpu_seconds": None}

    def stop(self) -> None:
        self._fake.stop()
