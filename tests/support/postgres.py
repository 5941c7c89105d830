"""A throwaway PostgreSQL server for the tests and the benches: the system's server binaries (Debian's
`postgresql` package), a cluster of its own in a temporary directory, reached on a Unix socket in
that directory and on no TCP port, tuned for speed rather than durability, stopped and removed at
the end. PostgreSQL refuses to run as root, so as root (as in CI) the server runs as the `postgres`
user.

The tests reach it through fixtures (list this module in tests/conftest.py's pytest_plugins, or
import the fixtures into a test module):

    postgres_server  the server, one per test session: .url(dbname) and .create_database()
    postgres_url     the URL of a fresh empty database on it, one per test

Without the binaries those tests are skipped, unless CHATAPP_REQUIRE_POSTGRES is set (as in CI),
where a missing server must fail the run rather than pass it quietly. A bench uses the server
itself: `with PostgresServer() as server: url = server.create_database()`.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from .live_server import Started

REQUIRE = "CHATAPP_REQUIRE_POSTGRES"
SUPERUSER = "postgres"
PORT = 5432  # names the socket file (.s.PGSQL.5432) in the cluster's own directory: no TCP port
# Nothing here outlives the run, so durability buys nothing. Connections: room for three replicas'
# pools and the tests' own.
SETTINGS = {
    "listen_addresses": "''",
    "port": str(PORT),
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}
# Root runs the server as the first of these that exists.
SERVER_USERS = ("postgres", "nobody")
# A socket's path must fit in sun_path (108 bytes on Linux), with the socket's own name.
_SOCKET_PATH_MAX = 100


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl are: pg_config's --bindir, else the newest /usr/lib/postgresql/N/bin."""
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            candidates.append(Path(found.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda path: _version(path.parent.name), reverse=True)
    for candidate in candidates:
        if all((candidate / tool).is_file() for tool in ("initdb", "pg_ctl", "psql")):
            return candidate
    return None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


def server_user() -> str | None:
    """Who the server runs as when it cannot be this process's user (root), or None to run it as is."""
    if os.geteuid() != 0:
        return None
    for name in SERVER_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise LookupError(f"none of the users {', '.join(SERVER_USERS)} exists to run PostgreSQL as")


def missing() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None if it can."""
    if find_bindir() is None:
        return "PostgreSQL's server binaries (initdb, pg_ctl) are not installed (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            server_user()
        except LookupError as error:
            return f"running as root, which PostgreSQL refuses, and {error}"
        if shutil.which("runuser") is None:
            return "running as root, which PostgreSQL refuses, and runuser is not installed to run it as another user"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip the test for `reason`, or fail it when CHATAPP_REQUIRE_POSTGRES says the server must be there."""
    if os.environ.get(REQUIRE):
        pytest.fail(f"{REQUIRE} is set but {reason}", pytrace=False)
    pytest.skip(reason)


class PostgresServer(Started):
    """A cluster of its own for the length of a `with` block (or from start() to stop()); stop()
    ends only the server it started and removes its directory, also after a start that failed."""

    def __init__(self, bindir: Path | None = None) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise FileNotFoundError("PostgreSQL's server binaries are not installed (apt-get install postgresql)")
        self.bindir = found
        self.directory: Path | None = None
        self.pid: int | None = None
        self._user = server_user()
        self._numbers = itertools.count(1)


    @property
    def data(self) -> Path:
        return self._directory / "data"

    @property
    def log(self) -> Path:
        return self._directory / "server.log"

    @property
    def _directory(self) -> Path:
        if self.directory is None:
            raise RuntimeError("the server is not started")
        return self.directory

    def start(self) -> None:
        """initdb a cluster in a fresh directory and start it; waits until it accepts connections."""
        if self.directory is not None:
            raise RuntimeError("the server is already started")
        self.directory = Path(tempfile.mkdtemp(prefix="chatapp-pg-", dir=_temporary_root()))
        try:
            if self._user is not None:  # the directory is the server's own: its data and its socket
                account = pwd.getpwnam(self._user)
                os.chown(self.directory, account.pw_uid, account.pw_gid)
            self._run("initdb", "-D", str(self.data), "--auth=trust", f"--username={SUPERUSER}",
                      "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")
            settings = {**SETTINGS, "unix_socket_directories": f"'{self.directory}'"}
            with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
                conf.write("\n# A throwaway cluster for chatapp's tests.\n")
                conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-s", "start")
            finally:
                self.pid = self._postmaster_pid()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server at once (nothing in it is kept) and remove its directory. Safe to call twice."""
        if self.directory is None:
            return
        try:
            if self.pid is None:
                self.pid = self._postmaster_pid()
            if self.pid is not None and self._is_ours(self.pid):
                try:
                    self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "20", "-s", "stop")
                except (RuntimeError, OSError, subprocess.SubprocessError):
                    pass
                if self._is_ours(self.pid):  # the last resort, for this server's postmaster alone
                    try:
                        os.kill(self.pid, signal.SIGKILL)
                    except OSError:
                        pass
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
            self.pid = None

    def url(self, dbname: str = "postgres") -> str:
        """A libpq connection URI for one of the server's databases, through its socket; asyncpg and
        psycopg (libpq) read it alike."""
        return (f"postgresql://{SUPERUSER}@/{quote(dbname, safe='')}"
                f"?host={quote(str(self._directory))}&port={PORT}")

    def create_database(self, prefix: str = "test") -> str:
        """A fresh, empty database (from template0, so nothing a test added to template1 comes
        along); returns its URL. Each name is new for the life of the server."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", prefix):
            raise ValueError(f"a database prefix is lower-case letters, digits and _: {prefix!r}")
        name = f"{prefix}_{next(self._numbers)}"
        self.sql(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def sql(self, statement: str, dbname: str = "postgres") -> str:
        """Run SQL through psql, no driver needed; returns what it printed (unaligned, tuples only)."""
        done = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-d", self.url(dbname), "-c", statement],
            capture_output=True, text=True, env=_environment(), timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def _run(self, tool: str, *arguments: str) -> None:
        command = [str(self.bindir / tool), *arguments]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, cwd=self._directory, capture_output=True, text=True,
                              env=_environment(), timeout=120)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stdout}{done.stderr}{log}".strip())

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return None

    def _is_ours(self, pid: int) -> bool:
        """Whether `pid` is still this cluster's postmaster (not a process that took its number)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z" and os.fsencode(self.data) in cmdline


def _temporary_root() -> str | None:
    """Where the cluster's directory goes: the usual temporary directory, unless the socket's path
    would be too long there, or, as root, the server's user might not be able to reach it."""
    usual = tempfile.gettempdir()
    if os.geteuid() == 0 or len(usual) + len("/chatapp-pg-xxxxxxxx/.s.PGSQL.5432") > _SOCKET_PATH_MAX:
        return "/tmp"
    return None


def _environment() -> dict[str, str]:
    """This environment without libpq's PG* settings, which would override the URL's (PGPORT, PGHOST...)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PG")}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session, stopped and removed at its end. Skipped when
    the binaries are missing, failed instead when CHATAPP_REQUIRE_POSTGRES is set."""
    reason = missing()
    if reason is not None:
        skip_or_fail(reason)
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database of the session's server, for one test."""
    return postgres_server.create_database()
