"""The `chatapp` command line, run as a real process in an empty folder with a clean environment.

Serving with hypercorn.toml, PORT and WEB_CONCURRENCY, as the deployment files call it, is tested
in test_deploy.py."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import pty
import re
import select
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from importlib import metadata
from pathlib import Path

import pytest

from chatapp import db as database
from chatapp.accounts import Accounts
from chatapp.db.migrations import MIGRATIONS
from chatapp.logs import REDACTED

from .support.live_server import CANARY_KEY, clean_environment, free_port, stop

ROOT = Path(__file__).resolve().parent.parent
MIGRATION_NAMES = [m.name for m in MIGRATIONS]
# A setting that stops start-up: a command that reads the settings exits with status 2.
BAD_SETTING = {"CHATAPP_LOG_FORMAT": "yaml"}
BAD_SETTING_LINE = "chatapp: configuration error: CHATAPP_LOG_FORMAT must be text or json; got 'yaml'"
CONSOLE_SCRIPT = Path(sys.executable).with_name("chatapp")  # what `pip install` made of [project.scripts]


def _chatapp(cwd: Path, *args: str, program: list[str] | None = None,
             **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(program or [sys.executable, "-m", "chatapp"]), *args],
        cwd=cwd, env={**clean_environment(), **env}, capture_output=True, text=True, timeout=60,
    )


def _applied(database: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(database)) as db:
        return db.execute("SELECT name, applied_at FROM migrations ORDER BY name").fetchall()


# --- help and version: nothing read, nothing made -----------------------------------------------


@pytest.mark.parametrize("program", [None, [str(CONSOLE_SCRIPT)]], ids=["python -m chatapp", "console script"])
def test_help_lists_the_commands_and_touches_nothing(tmp_path: Path, program: list[str] | None) -> None:
    result = _chatapp(tmp_path, "--help", program=program, **BAD_SETTING)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: chatapp ")
    listed = re.findall(r"^ {4}([\w-]+)", result.stdout, re.MULTILINE)  # a long name has its help below
    assert listed == ["serve", "migrate", "copy-db", "create-admin", "make-admin", "reset-link"]
    assert result.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_version_is_the_installed_packages(tmp_path: Path) -> None:
    result = _chatapp(tmp_path, "--version", **BAD_SETTING)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"chatapp {metadata.version('chatapp')}\n", "")
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_command_gets_the_usage_and_status_2(tmp_path: Path) -> None:
    result = _chatapp(tmp_path, "frobnicate")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: chatapp ")
    assert result.stderr.rstrip().endswith("invalid choice: 'frobnicate' (choose from 'serve', 'migrate', 'copy-db', "
                                              "'create-admin', 'make-admin', 'reset-link')")
    assert list(tmp_path.iterdir()) == []


# --- migrate ------------------------------------------------------------------------------------


def test_migrate_applies_every_migration_once(tmp_path: Path) -> None:
    first = _chatapp(tmp_path, "migrate")  # the default database, chatapp.db, in this folder
    assert first.returncode == 0, first.stderr
    n = len(MIGRATION_NAMES)
    assert first.stdout.splitlines() == [
        *(f"applied {name}" for name in MIGRATION_NAMES), f"chatapp.db: up to date; {n} applied now, {n} in all",
    ]
    recorded = _applied(tmp_path / "chatapp.db")
    assert [name for name, _ in recorded] == sorted(MIGRATION_NAMES)

    again = _chatapp(tmp_path, "migrate")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [f"chatapp.db: up to date; 0 applied now, {n} in all"]
    assert _applied(tmp_path / "chatapp.db") == recorded


def test_migrate_says_in_one_line_when_the_database_cannot_be_opened(tmp_path: Path) -> None:
    database = tmp_path / "no-such-folder" / "chat.db"
    result = _chatapp(tmp_path, "migrate", CHATAPP_DATABASE=str(database))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"chatapp: cannot migrate the database {database}: No such file or directory"]


# --- create-admin -------------------------------------------------------------------------------

PASSWORD = "correct horse battery"


def _create_admin(cwd: Path, *args: str, password: str = PASSWORD, **env: str) -> subprocess.CompletedProcess[str]:
    """`chatapp create-admin` as a script runs it: the password on standard input."""
    return subprocess.run([sys.executable, "-m", "chatapp", "create-admin", *args], input=f"{password}\n",
                          cwd=cwd, env={**clean_environment(), **env}, capture_output=True, text=True, timeout=60)


async def _admins(location: str) -> tuple[list[tuple[str, bool, bool]], list[str]]:
    """Each person's name, whether an admin, and whether PASSWORD signs them in; the audit's actions."""
    db = await database.connect(location)
    try:
        accounts = Accounts(db)
        people = [(p.person.name, p.person.is_admin, await accounts.check_password(p.person.name, PASSWORD) is not None)
                  for p in await accounts.people()]
        return people, [entry.action for entry in (await accounts.audit_log())[0]]
    finally:
        await db.close()


def test_create_admin_makes_an_admin_in_a_new_database_and_says_so(tmp_path: Path) -> None:
    result = _create_admin(tmp_path, "--name", "Ada")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == ["created 'Ada', an admin, in chatapp.db"]
    assert [name for name, _ in _applied(tmp_path / "chatapp.db")] == sorted(MIGRATION_NAMES)  # migrated first
    assert asyncio.run(_admins(str(tmp_path / "chatapp.db"))) == ([("Ada", True, True)], ["create admin"])

    again = _create_admin(tmp_path, "--name", "ADA", password="another good password")
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr.splitlines() == ["chatapp: cannot create 'ADA': That name is taken."]


def _on_a_terminal(cwd: Path, answers: list[str], **env: str) -> tuple[int, str]:
    """`chatapp create-admin` run on a terminal (a pseudo-terminal), typing each answer after its
    prompt: the exit status, and all that the terminal showed."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child, whose controlling terminal is the pseudo-terminal
        os.chdir(cwd)
        os.execve(sys.executable, [sys.executable, "-m", "chatapp", "create-admin"], {**clean_environment(), **env})
    shown, deadline = b"", time.monotonic() + 30

    def read() -> bytes:
        assert time.monotonic() < deadline and select.select([terminal], [], [], deadline - time.monotonic())[0], shown
        try:
            return os.read(terminal, 1024)
        except OSError:  # the child has ended, and its terminal with it
            return b""

    try:
        for answer in answers:
            asked = len(shown)
            while not shown[asked:].endswith(b": "):  # the prompt, after the echo of the last answer
                shown += read()
            os.write(terminal, answer.encode() + b"\n")
        while more := read():
            shown += more
    finally:
        os.close(terminal)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown.decode().replace("\r\n", "\n")


def test_create_admin_asks_on_a_terminal_and_hides_the_password(tmp_path: Path) -> None:
    status, shown = _on_a_terminal(tmp_path, ["Grace", PASSWORD, "a different password"])
    assert status == 1 and shown.splitlines()[-1] == "chatapp: the two passwords differ; nothing was created"
    assert list(tmp_path.iterdir()) == []

    status, shown = _on_a_terminal(tmp_path, ["Grace", PASSWORD, PASSWORD])
    assert status == 0, shown
    assert PASSWORD not in shown  # not echoed
    assert [line.strip() for line in shown.splitlines()] == [
        "name: Grace", "password:", "the same password again:", "created 'Grace', an admin, in chatapp.db"]
    assert asyncio.run(_admins(str(tmp_path / "chatapp.db"))) == ([("Grace", True, True)], ["create admin"])


def test_create_admin_works_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    result = _create_admin(tmp_path, "--name", "ada", CHATAPP_DATABASE_URL=postgres_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"created 'ada', an admin, in {database.redacted(postgres_url)}\n"
    assert asyncio.run(_admins(postgres_url)) == ([("ada", True, True)], ["create admin"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "password", "status", "line"), [
    (["--name", "ada"], "", 1, "chatapp: cannot create 'ada': The password is empty."),
    (["--name", "ada"], "short", 1, "chatapp: cannot create 'ada': A password needs at least 12 characters."),
    (["--name", "ada lovelace 1815"], "ADA LOVELACE 1815", 1,
     "chatapp: cannot create 'ada lovelace 1815': A password cannot be the name it signs in."),
    (["--name", " "], PASSWORD, 1, "chatapp: cannot create '': The name is empty."),
    ([], PASSWORD, 2, "chatapp: create-admin needs --name when standard input is not a terminal"),
])
def test_create_admin_refuses_in_one_line_and_makes_nothing(tmp_path: Path, args: list[str], password: str,
                                                             status: int, line: str) -> None:
    result = _create_admin(tmp_path, *args, password=password)
    assert (result.returncode, result.stderr.splitlines(), result.stdout) == (status, [line], "")
    assert list(tmp_path.iterdir()) == []


def test_create_admin_says_in_one_line_when_the_database_cannot_be_opened(tmp_path: Path) -> None:
    location = tmp_path / "no-such-folder" / "chat.db"
    result = _create_admin(tmp_path, "--name", "ada", CHATAPP_DATABASE=str(location))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"chatapp: cannot create the admin in {location}: No such file or directory"]


# --- configuration errors: one line, status 2, before anything starts ---------------------------


@pytest.mark.parametrize("args", [[], ["serve"], ["hypercorn.toml"], ["migrate"], ["create-admin", "--name", "ada"]])
def test_a_bad_setting_stops_every_command_with_one_line(tmp_path: Path, args: list[str]) -> None:
    result = _chatapp(tmp_path, *args, **BAD_SETTING)
    assert (result.returncode, result.stderr.splitlines(), result.stdout) == (2, [BAD_SETTING_LINE], "")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["serve", "missing.toml"], ["missing.toml"], ["serve", "broken.toml"],
                                  ["broken.toml"], ["serve", "."]])
def test_a_hypercorn_file_that_cannot_be_read_stops_serve_with_one_line(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "broken.toml").write_text("bind = [\n")
    result = _chatapp(tmp_path, *args)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"chatapp: configuration error: {args[-1]}: ")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["broken.toml"]


# --- serve --------------------------------------------------------------------------------------


def _get(port: int, path: str, **headers: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response
    finally:
        connection.close()


def _serve(command: list[str], port: int, cwd: Path, while_serving: Callable[[], object],
           **env: str) -> tuple[str, str]:
    """Start `command`, wait until /healthz answers on `port`, run `while_serving`, stop the
    server with SIGTERM: its stdout and stderr."""
    process = subprocess.Popen(command, cwd=cwd, env={**clean_environment(), **env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"the server exited with {process.returncode}"
            try:
                if _get(port, "/healthz").status == 200:
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not answer in time"
                time.sleep(0.1)
        while_serving()
    finally:
        out, err = stop(process)
    assert process.returncode == 0, err
    return out, err


def test_a_bare_chatapp_serves(tmp_path: Path) -> None:
    # No hypercorn.toml in this folder: Hypercorn's defaults, with the platform's PORT.
    port = free_port()
    _, err = _serve([str(CONSOLE_SCRIPT)], port, tmp_path, lambda: None, PORT=str(port),
                    CHATAPP_DATABASE=str(tmp_path / "chat.db"))
    assert f"Running on http://0.0.0.0:{port} " in err


SECRET_KEY = "cli-test-secret-0123456789abcdef0123"
# A User-Agent that tries to end its field and its line, carrying both kinds of secret.
HOSTILE_AGENT = f'probe" \\ \x85 {CANARY_KEY} {SECRET_KEY}'


@pytest.mark.parametrize("how", ["chatapp serve", "hypercorn"])
def test_json_logs_make_every_line_json_hypercorns_included(tmp_path: Path, how: str) -> None:
    port = free_port()
    config = str(ROOT / "hypercorn.toml")
    command = {
        "chatapp serve": [sys.executable, "-m", "chatapp", "serve", config],
        # README's other way: Hypercorn's own command, which runs the app factory alone.
        "hypercorn": [sys.executable, "-m", "hypercorn", "--config", config, "--bind", f"127.0.0.1:{port}",
                      "chatapp:create_app()"],
    }[how]
    answers = []

    def ask() -> None:
        answers.append(_get(port, "/healthz"))
        answers.append(_get(port, "/x%0A%22y?token=sk-query-string-0123456789", **{
            "User-Agent": HOSTILE_AGENT, "X-Forwarded-For": '1.2.3.4" "x'}))

    out, err = _serve(command, port, tmp_path, ask, PORT=str(port), CHATAPP_LOG_FORMAT="json",
                      SECRET_KEY=SECRET_KEY, CHATAPP_DATABASE=str(tmp_path / "chat.db"), CHATAPP_REPLICA="cli-test-1")

    lines = [json.loads(line) for line in (out + err).splitlines()]  # splitlines also breaks at \x85
    assert all({"time", "level", "logger", "request_id", "message"} <= line.keys() for line in lines)
    assert any(line["logger"] == "hypercorn.error" and "Running on" in line["message"] for line in lines)
    assert any(line["logger"] == "chatapp" for line in lines)
    health, hostile = answers
    access = {line["request_id"]: line for line in lines if line["logger"] == "hypercorn.access"}
    assert access[health.headers["X-Request-ID"]] | {"time": "", "client": "", "seconds": 0} == {
        "time": "", "level": "INFO", "logger": "hypercorn.access", "request_id": health.headers["X-Request-ID"],
        "message": "GET /healthz 200", "client": "", "forwarded_for": None, "method": "GET", "path": "/healthz",
        "status": 200, "bytes": 3, "seconds": 0, "user_agent": None, "replica": "cli-test-1",
    }
    line = access[hostile.headers["X-Request-ID"]]
    assert (line["path"], line["status"], line["message"]) == ('/x\\n"y', 404, 'GET /x\\n"y 404')
    assert line["forwarded_for"] == '1.2.3.4" "x'
    assert line["user_agent"] == f'probe" \\ \\x85 {REDACTED} {REDACTED}'
    assert line["client"].startswith("127.0.0.1:") and line["seconds"] >= 0
    assert CANARY_KEY not in out + err and SECRET_KEY not in out + err and "sk-query" not in out + err


# --- reset-link --------------------------------------------------------------------------------

def test_reset_link_lets_a_locked_out_admin_back_in(tmp_path: Path) -> None:
    assert _create_admin(tmp_path, "--name", "Ada").returncode == 0
    made = _chatapp(tmp_path, "reset-link", "--name", "ADA", "--base-url", "https://chat.example.com/")
    assert made.returncode == 0, made.stderr
    link = made.stdout.strip()
    assert re.fullmatch(r"https://chat\.example\.com/reset/[\w-]{43}", link)

    async def reset() -> tuple[str | None, bool]:
        db = await database.connect(str(tmp_path / "chatapp.db"))
        try:
            accounts = Accounts(db)
            token = link.rsplit("/", 1)[1]
            target = await accounts.reset_target(token)
            await accounts.reset_password(token, "a new long password")
            return (target.name if target else None), await accounts.check_password("ada", "a new long password") is not None
        finally:
            await db.close()

    assert asyncio.run(reset()) == ("Ada", True)


def test_reset_link_for_no_such_person_says_so(tmp_path: Path) -> None:
    made = _chatapp(tmp_path, "reset-link", "--name", "nobody")
    assert (made.returncode, made.stdout) == (1, "")
    assert made.stderr == "chatapp: no one signs in with a password as 'nobody'\n"


# --- make-admin -------------------------------------------------------------------------------

def test_make_admin_makes_a_person_who_signed_in_with_single_sign_on_an_admin(tmp_path: Path) -> None:
    async def sign_in_once() -> None:
        db = await database.connect(str(tmp_path / "chatapp.db"))
        try:
            await db.migrate()
            await Accounts(db).person_for_subject("oidc", "https://id.example.com 42", name="Grace")
        finally:
            await db.close()

    asyncio.run(sign_in_once())
    made = _chatapp(tmp_path, "make-admin", "--name", "grace")
    assert (made.returncode, made.stdout, made.stderr) == (0, "'Grace' is an admin\n", "")
    people, actions = asyncio.run(_admins(str(tmp_path / "chatapp.db")))
    assert people == [("Grace", True, False)] and actions == ["make admin"]


def test_make_admin_for_no_such_person_says_when_they_appear(tmp_path: Path) -> None:
    made = _chatapp(tmp_path, "make-admin", "--name", "nobody")
    assert made.returncode == 1
    assert made.stderr == "chatapp: no one is called 'nobody'; they appear once they have signed in\n"
