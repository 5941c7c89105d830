"""The real app under the real Hypercorn, in a subprocess on 127.0.0.1, for browser tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

ROOT = Path(__file__).resolve().parent.parent.parent
# A key that must never show up anywhere it is not sent upstream (tests/conftest.py uses it too).
CANARY_KEY = "sk-canary-DO-NOT-LEAK-0123456789abcdefABCDEF"


def clean_environment() -> dict[str, str]:
    """This process's environment without any chatapp or OpenAI settings (a developer's .env or key)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CHATAPP_", "SECRET_KEY"))}


def app_environment(base_url: str, database: Path, **extra: str) -> dict[str, str]:
    """Settings for the app under test: the fake model server, a fresh database, no rate limits."""
    return {
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": CANARY_KEY,
        "OPENAI_MODEL": "fake-model",
        "CHATAPP_DATABASE": str(database),
        "SECRET_KEY": "live-test-secret-0123456789abcdef0123",
        "CHATAPP_MAX_RETRIES": "0",
        "CHATAPP_RATE_LIMIT_PER_SESSION": "off",
        "CHATAPP_RATE_LIMIT_PER_ADDRESS": "off",
        **extra,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen[bytes], timeout: float = 40) -> tuple[bytes | None, bytes | None]:
    """Stop a server a test started (SIGTERM, then SIGKILL after `timeout` seconds) and collect its
    output."""
    process.terminate()
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


class Started:
    """A server the tests start and stop (`start()`, `stop()`), also as a with-block."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


class LiveServer:
    def __init__(self, env: dict[str, str], log_path: Path, *, workers: int = 1, graceful_timeout: float = 5):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
             "--graceful-timeout", str(graceful_timeout), "chatapp:create_app()"],
            cwd=ROOT, env={**clean_environment(), **env}, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._wait_until_up()

    def _wait_until_up(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the app exited with {self._process.returncode}; see {self._log.name}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("the app did not start in time")

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()
