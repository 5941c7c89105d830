"""nginx from Debian's package in front of chatapp, configured from deploy/nginx.conf as shipped:
the tested file is the deployed file. Only what cannot work on a test host is changed, at run
time: local ports instead of 80 and 443 (no IPv6 listeners), a throwaway certificate made with
openssl, and the `upstream chatapp` block's one server line replaced by one line per replica.

The file is included, as /etc/nginx/conf.d/ would include it, in an http block of our own that
adds an access log naming, for each request, the replicas nginx tried and what each answered
(`Access`), so a test can tell which replica served what and whether a 5xx came from nginx.

    with Nginx([8001, 8002, 8003], directory) as nginx:
        httpx2.get(nginx.url + "/healthz", verify=nginx.ssl_context(), headers={"Host": nginx.host})
        nginx.accesses()

Without nginx or openssl the tests that need them are skipped, unless CHATAPP_REQUIRE_NGINX is set
(as in CI), where they fail instead. stop() ends only the nginx process this harness started.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .live_server import ROOT, Started, free_port
from .live_server import stop as stop_process

REQUIRE = "CHATAPP_REQUIRE_NGINX"
SITE = ROOT / "deploy" / "nginx.conf"
HOST = "chat.example.com"  # deploy/nginx.conf's server_name, which the certificate names too
UPSTREAM_LINE = "server 127.0.0.1:8000;"
# A line of the HTTPS server block, after which `server_lines` go.
SERVER_BLOCK_LINE = "    client_max_body_size 2m;"
# When the request ended, how long it took, what nginx answered, the replicas it tried (", "
# between them) and what each answered, the app's request id (empty: nginx answered by itself),
# and the request line's method and path.
ACCESS_FORMAT = ('$msec $request_time $status "$upstream_addr" "$upstream_status" '
                 '"$upstream_http_x_request_id" $request_method $uri')
_ACCESS = re.compile(r'^(\S+) (\S+) (\d+) "([^"]*)" "([^"]*)" "([^"]*)" (\S+) (\S+)$')


def find_nginx() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def missing() -> str | None:
    """Why nginx cannot run here, or None if it can."""
    if find_nginx() is None or shutil.which("openssl") is None:
        return "needs nginx and openssl (apt-get install nginx openssl)"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip the test for `reason`, or fail it when CHATAPP_REQUIRE_NGINX says nginx must be there."""
    if os.environ.get(REQUIRE):  # CI: it must run there, never skip
        pytest.fail(f"{REQUIRE} is set but {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class Access:
    """One line of the access log."""

    ended: float              # seconds since the epoch
    duration: float
    status: int               # what nginx answered
    upstreams: list[str]      # the replicas tried, in order ("127.0.0.1:8001")
    upstream_statuses: list[str]  # what each answered ("502" where nginx could not reach it)
    request_id: str           # empty when the app did not answer (nginx's own error page)
    method: str
    path: str

    @property
    def started(self) -> float:
        return self.ended - self.duration

    @property
    def served_by(self) -> str | None:
        """The replica whose answer nginx passed on, or None if none answered."""
        return self.upstreams[-1] if self.upstreams and self.request_id else None

    @property
    def from_nginx(self) -> bool:
        """nginx's own error page (no replica answered), not an answer of the app."""
        return self.status >= 500 and not self.request_id


def site(upstreams: list[int], *, https_port: int, http_port: int, cert: Path, key: Path,
         server_lines: str = "") -> str:
    """deploy/nginx.conf with local ports, the certificate, and one server line per replica;
    `server_lines` added to its HTTPS server block (as a snippet the docs say to include there)."""
    text = SITE.read_text(encoding="utf-8")
    servers = "\n    ".join(f"server 127.0.0.1:{port};" for port in upstreams)
    for old, new in [
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;"),
        (UPSTREAM_LINE, servers),
        (f"/etc/letsencrypt/live/{HOST}/fullchain.pem", str(cert)),
        (f"/etc/letsencrypt/live/{HOST}/privkey.pem", str(key)),
        (SERVER_BLOCK_LINE, f"{SERVER_BLOCK_LINE}\n{server_lines}"),
    ]:
        if old not in text:
            raise ValueError(f"deploy/nginx.conf no longer has {old!r}: update tests/support/nginx.py")
        text = text.replace(old, new)
    return re.sub(r"^\s*listen \[::\]:.*\n", "", text, flags=re.MULTILINE)  # the host may lack IPv6


class Nginx(Started):
    """nginx (one process, in the foreground) in front of replicas on 127.0.0.1 `upstreams`, with
    its files in `directory`, and `server_lines` in its HTTPS server block; from start() (or
    `with`) to stop()."""

    def __init__(self, upstreams: list[int], directory: Path, *, connections: int = 4096,
                 server_lines: str = "") -> None:
        executable = find_nginx()
        if executable is None:
            raise FileNotFoundError("nginx is not installed (apt-get install nginx)")
        self.executable, self.upstreams, self.directory = executable, upstreams, directory
        self.connections, self.server_lines = connections, server_lines
        self.https_port, self.http_port = free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.https_port}"
        self.host = HOST
        self.cafile = directory / "cert.pem"
        self.access_log, self.error_log = directory / "access.log", directory / "error.log"
        self._process: subprocess.Popen[bytes] | None = None


    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        key = self.directory / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", f"/CN={HOST}", "-keyout", str(key), "-out", str(self.cafile)],
                       check=True, capture_output=True, timeout=60)
        (self.directory / "chatapp.conf").write_text(site(
            self.upstreams, https_port=self.https_port, http_port=self.http_port, cert=self.cafile, key=key,
            server_lines=self.server_lines))
        temp = " ".join(f"{kind}_temp_path {self.directory / kind};"
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        config = self.directory / "nginx.conf"
        # warn: nginx says when it takes a replica out ("upstream server temporarily disabled").
        config.write_text(
            f"daemon off; master_process off; pid {self.directory / 'nginx.pid'};\n"
            f"error_log {self.error_log} warn; worker_rlimit_nofile {2 * self.connections + 64};\n"
            f"events {{ worker_connections {self.connections}; }}\n"
            f"http {{ log_format replicas '{ACCESS_FORMAT}'; access_log {self.access_log} replicas; {temp}\n"
            f"       include {self.directory / 'chatapp.conf'}; }}\n"
        )
        self._process = subprocess.Popen([self.executable, "-c", str(config), "-p", str(self.directory)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while True:
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                self._process = None
                raise RuntimeError(f"nginx exited at start: {error}{self.errors()}")
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("nginx did not listen in time") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the nginx this harness started (SIGTERM, then SIGKILL after 30 s). Safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        stop_process(process, timeout=30)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the throwaway certificate (which names chat.example.com,
        not 127.0.0.1: the host name is not checked)."""
        context = ssl.create_default_context(cafile=str(self.cafile))
        context.check_hostname = False
        return context

    def accesses(self) -> list[Access]:
        """Every request nginx has logged so far (a request is logged when it ends)."""
        if not self.access_log.exists():
            return []
        found = []
        for line in self.access_log.read_text(errors="replace").splitlines():
            match = _ACCESS.match(line)
            if match is None:
                raise ValueError(f"an access log line not in the harness's format: {line!r}")
            ended, duration, status, upstreams, statuses, request_id, method, path = match.groups()
            found.append(Access(float(ended), float(duration), int(status), _list(upstreams), _list(statuses),
                                "" if request_id == "-" else request_id, method, path))
        return found

    def errors(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""


def _list(field: str) -> list[str]:
    """An upstream variable's values: ", " between tries (" : " between internal redirects)."""
    return [] if field in ("", "-") else [value for value in re.split(r", | : ", field) if value]
