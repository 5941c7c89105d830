"""`chatapp` (or `python -m chatapp`): the command line. `chatapp --help` lists the commands.

- `chatapp serve [CONFIG]` serves the app with Hypercorn, configured by CONFIG (hypercorn.toml).
  A bare `chatapp`, or `chatapp CONFIG` with a path, serves too: the deployment files and older
  guides call it that way. Two environment variables that hosting platforms set override the file:
  PORT binds 0.0.0.0:$PORT instead of the file's `bind` (Render, Heroku and the Docker image), and
  WEB_CONCURRENCY sets the number of worker processes instead of the file's `workers`.
- `chatapp migrate` brings the database's schema up to date, says what it applied, and stops.
- `chatapp copy-db FROM TO` copies one database's history into another (a SQLite file into
  PostgreSQL), resumable, and compares the counts at the end.
- `chatapp create-admin [--name NAME]` creates an admin with a password (the first one, who then
  invites the others), asking for both; a script gives --name and the password on standard input.
- `chatapp make-admin --name NAME` makes a person an admin: the first admin of the single sign-on
  and proxy modes, once they have signed in (their name is on their account page).
- `chatapp reset-link --name NAME` prints a password-reset link for a local person: the way back in
  for an admin who forgot their password, when no other admin can make one.

`--help` and `--version` read no setting and start nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

from hypercorn.config import Config as HypercornConfig
from hypercorn.run import run

from . import config_from_environment
from . import db as database
from .accounts import Accounts, Person, Refused, name_problem
from .db import copy as copying
from .passwords import MIN_LENGTH, problem

T = TypeVar("T")


def main(argv: list[str] | None = None) -> int:
    parser, commands = _parser()
    args = parser.parse_args(_with_default_command(commands, sys.argv[1:] if argv is None else argv))
    return args.command(args)


def _parser() -> tuple[argparse.ArgumentParser, set[str]]:
    """The parser, and the names of its commands."""
    parser = argparse.ArgumentParser(
        prog="chatapp", description="A streaming chat front end for any OpenAI-compatible model server.",
        epilog="Settings come from the environment and .env; see README.md, Configuration.",
    )
    parser.add_argument("--version", action="version", version=f"chatapp {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve", help="serve the app with Hypercorn (what a bare `chatapp` does)",
        description="Serve the app with Hypercorn. PORT binds 0.0.0.0:$PORT instead of the file's bind; "
                    "WEB_CONCURRENCY sets the number of workers.",
    )
    serve.add_argument("config", metavar="CONFIG", nargs="?", type=Path,
                       help="Hypercorn's settings file (default: hypercorn.toml, if there is one)")
    serve.set_defaults(command=_serve)
    migrate = commands.add_parser(
        "migrate", help="apply the database migrations not applied yet, then stop",
        description="Open the configured database (CHATAPP_DATABASE_URL or CHATAPP_DATABASE), apply the "
                    "migrations it lacks (once, however many replicas run it at once), "
                    "say which, and stop. `serve` does the same at start-up.",
    )
    migrate.set_defaults(command=_migrate)
    copy_db = commands.add_parser(
        "copy-db", help="copy a database into another (a SQLite file into PostgreSQL), checked by counts",
        description="Copy conversations, messages (with their ids), token usage, the signing key and "
                    "signed-in sessions from FROM into TO, which is migrated first; FROM must be at the same "
                    "migration step. Run it again after an interruption: it goes on, and never duplicates. "
                    "It ends by comparing the two: status 0 if they hold the same, 1 if not.",
    )
    copy_db.add_argument("source", metavar="FROM", help="the database to copy: a SQLite file or a postgresql:// URL")
    copy_db.add_argument("target", metavar="TO", help="the database to copy into (created or migrated as needed)")
    copy_db.set_defaults(command=_copy_db)
    create_admin = commands.add_parser(
        "create-admin", help="create an admin with a password, who can then invite the others",
        description="Create a person who is an admin, with a password, in the configured database (migrated "
                    "first). Asks for the name (unless --name gives it) and the password, twice; when standard "
                    f"input is not a terminal, the password is its first line. A password needs {MIN_LENGTH} "
                    "characters or more.",
    )
    create_admin.add_argument("--name", help="the admin's name, which signs them in (any case)")
    create_admin.set_defaults(command=_create_admin)
    make_admin = commands.add_parser(
        "make-admin", help="make a person who has signed in an admin (the first one, with single sign-on)",
        description="Make the person NAME an admin. With CHATAPP_AUTH=oidc or header people are made at their "
                    "first sign-in: sign in, then run this with the name shown on your account page.",
    )
    make_admin.add_argument("--name", required=True, help="the person's name (any case)")
    make_admin.set_defaults(command=_make_admin)
    reset_link = commands.add_parser(
        "reset-link", help="print a password-reset link for a local person (an admin locked out)",
        description="Make a password-reset link for the local person NAME, valid once for a day, and print its "
                    "path (open it at the app's own address; --base-url prints the whole link).",
    )
    reset_link.add_argument("--name", required=True, help="the person's name (any case)")
    reset_link.add_argument("--base-url", help="the app's address, such as https://chat.example.com")
    reset_link.set_defaults(command=_reset_link)
    return parser, set(commands.choices)


def _with_default_command(commands: set[str], args: list[str]) -> list[str]:
    """`chatapp` and `chatapp hypercorn.toml` served before there were commands, and still do. A
    first argument counts as a settings file when it looks like one (`.toml`, a folder in it) or
    names a file; any other word is left to argparse, which refuses an unknown command."""
    if not args:
        return ["serve"]
    first = args[0]
    if first.startswith("-") or first in commands:
        return args
    if first.endswith(".toml") or os.sep in first or Path(first).is_file():
        return ["serve", *args]
    return args


def _version() -> str:
    try:
        return metadata.version("chatapp")
    except metadata.PackageNotFoundError:  # a source checkout run without installing
        return "unknown"


def _serve(args: argparse.Namespace) -> int:
    # Check the settings here first: a worker process that fails at start-up makes Hypercorn
    # exit with status 0, which would hide a bad setting from a process manager.
    config_from_environment()
    config = _hypercorn_config(args.config)
    config.application_path = "chatapp:create_app()"
    if (port := _whole_number("PORT", 1, 65535)) is not None:
        config.bind = [f"0.0.0.0:{port}"]  # the platform's router connects from outside the host
    if (workers := _whole_number("WEB_CONCURRENCY", 1, 64)) is not None:
        config.workers = workers
    if config.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker writes its metrics here and /metrics adds them up; a fresh folder per start,
        # inherited by the worker processes through the environment.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="chatapp-metrics-")
    return run(config)


def _hypercorn_config(path: Path | None) -> HypercornConfig:
    """The named file, which must exist; unnamed, hypercorn.toml if there is one, or Hypercorn's
    defaults. A file that cannot be read is a configuration error."""
    if path is None:
        path = Path("hypercorn.toml")
        if not path.exists():
            return HypercornConfig()
    try:
        return HypercornConfig.from_toml(path)
    except (OSError, ValueError) as error:  # ValueError: tomllib's TOMLDecodeError
        _configuration_error(f"{path}: {_reason(error)}")


def _migrate(args: argparse.Namespace) -> int:
    location = config_from_environment().database

    async def migrate() -> tuple[list[str], list[str]]:
        db = await database.connect(location)
        try:
            return await db.migrate(), await db.applied_migrations()
        finally:
            await db.close()

    try:
        applied, now = asyncio.run(migrate())
    except Exception as error:  # one line, whatever it is: a missing folder, a server that refuses
        print(f"chatapp: cannot migrate the database {database.redacted(location)}: {_reason(error)}",
              file=sys.stderr)
        return 1
    for name in applied:
        print(f"applied {name}")
    print(f"{database.redacted(location)}: up to date; {len(applied)} applied now, {len(now)} in all")
    return 0


def _create_admin(args: argparse.Namespace) -> int:
    location = config_from_environment().database
    typed = sys.stdin.isatty()
    if args.name is None and not typed:
        print("chatapp: create-admin needs --name when standard input is not a terminal", file=sys.stderr)
        return 2
    name = args.name if args.name is not None else input("name: ")
    password = getpass.getpass("password: ") if typed else sys.stdin.readline().rstrip("\r\n")
    if trouble := name_problem(name) or problem(password, name):
        print(f"chatapp: cannot create {name.strip()!r}: {trouble}", file=sys.stderr)
        return 1
    if typed and getpass.getpass("the same password again: ") != password:
        print("chatapp: the two passwords differ; nothing was created", file=sys.stderr)
        return 1

    async def create(people: Accounts) -> Person:
        person = await people.create_person(name, password, admin=True)
        await people.record("create admin", target=person.name, detail="chatapp create-admin")
        return person

    try:
        person = _with_accounts(location, create)
    except Refused as refusal:  # the name is taken
        print(f"chatapp: cannot create {name.strip()!r}: {refusal}", file=sys.stderr)
        return 1
    except Exception as error:  # one line, whatever it is: a missing folder, a server that refuses
        print(f"chatapp: cannot create the admin in {database.redacted(location)}: {_reason(error)}", file=sys.stderr)
        return 1
    print(f"created {person.name!r}, an admin, in {database.redacted(location)}")
    return 0


def _make_admin(args: argparse.Namespace) -> int:
    location = config_from_environment().database

    async def make(people: Accounts) -> Person | None:
        person = await people.find(args.name)
        if person is None:
            return None
        await people.set_admin(person.id, True)
        await people.record("make admin", target=person.id, detail="chatapp make-admin")
        return person

    try:
        person = _with_accounts(location, make)
    except Exception as error:  # one line, whatever it is
        print(f"chatapp: cannot make an admin in {database.redacted(location)}: {_reason(error)}", file=sys.stderr)
        return 1
    if person is None:
        print(f"chatapp: no one is called {args.name.strip()!r}; they appear once they have signed in",
              file=sys.stderr)
        return 1
    print(f"{person.name!r} is an admin")
    return 0


def _reset_link(args: argparse.Namespace) -> int:
    location = config_from_environment().database

    async def make(people: Accounts) -> str | None:
        person = await people.find(args.name)
        if person is None or person.source != "local":
            return None
        token = await people.create_reset(person.id, None)
        await people.record("reset link", target=person.id, detail="chatapp reset-link")
        return token

    try:
        token = _with_accounts(location, make)
    except Exception as error:  # one line, whatever it is
        print(f"chatapp: cannot make a link in {database.redacted(location)}: {_reason(error)}", file=sys.stderr)
        return 1
    if token is None:
        print(f"chatapp: no one signs in with a password as {args.name.strip()!r}", file=sys.stderr)
        return 1
    path = f"/reset/{token}"
    print(f"{args.base_url.rstrip('/')}{path}" if args.base_url else path)
    print("It works once, for a day; it signs the person out everywhere else.", file=sys.stderr)
    return 0


def _with_accounts(location: str, work: Callable[[Accounts], Awaitable[T]]) -> T:
    """Run `work` on the people of the database at `location` (migrated first), then close it."""

    async def run_it() -> T:
        db = await database.connect(location)
        try:
            await db.migrate()
            return await work(Accounts(db))
        finally:
            await db.close()

    return asyncio.run(run_it())


def _copy_db(args: argparse.Namespace) -> int:
    source, target = args.source, args.target
    started = time.monotonic()
    shown: dict[str, float] = {}

    def progress(table: str, done: int, total: int) -> None:
        # A line a second per table, and its last one.
        if done == total or time.monotonic() - shown.get(table, 0) >= 1:
            shown[table] = time.monotonic()
            print(f"{table}: {done:,} / {total:,}", flush=True)

    async def copy_and_compare() -> tuple[list[str], list[copying.Check]]:
        copying.check_locations(source, target)
        from_db = await database.connect(source, pool_size=2)
        try:
            to_db = await database.connect(target, pool_size=2)
            try:
                print(f"copying {from_db.where} into {to_db.where}", flush=True)
                left_out = await copying.copy(from_db, to_db, progress=progress)
                return left_out, await copying.compare(from_db, to_db)
            finally:
                await to_db.close()
        finally:
            await from_db.close()

    try:
        left_out, checks = asyncio.run(copy_and_compare())
    except KeyboardInterrupt:  # each batch is one transaction: what was written stays whole
        print("chatapp: copy interrupted; run the same command again to go on", file=sys.stderr)
        return 130
    except Exception as error:  # one line, whatever it is: a refusal, a server that refuses
        print(f"chatapp: cannot copy {database.redacted(source)} into {database.redacted(target)}: "
              f"{_reason(error)}", file=sys.stderr)
        return 1
    if left_out:
        print(f"not copied: {', '.join(left_out)} (short-lived state, which starts afresh)")
    _print_figures(checks)
    if differing := [check.label.strip() for check in checks if not check.equal]:
        print(f"chatapp: TO differs from FROM ({', '.join(differing)}): if FROM was written to during the copy, "
              "run copy-db again; if TO held data of its own, copy into an empty database", file=sys.stderr)
        return 1
    print(f"\ncopied and checked in {time.monotonic() - started:.1f} s: TO holds what FROM does. "
          f"Point chatapp at it: CHATAPP_DATABASE_URL={database.redacted(target)}")
    return 0


def _print_figures(checks: list[copying.Check]) -> None:
    """A table: each figure in FROM and in TO, marked where they differ."""
    rows = [(check.label, _figure(check.source), _figure(check.target), "" if check.equal else "  differs")
            for check in checks]
    widths = [max(len(row[i]) for row in [("", "FROM", "TO"), *rows]) for i in range(3)]
    print()
    for label, theirs, ours, mark in [("", "FROM", "TO", ""), *rows]:
        print(f"{label:<{widths[0]}}  {theirs:>{widths[1]}}  {ours:>{widths[2]}}{mark}")


def _figure(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else "none" if value is None else str(value)


def _whole_number(name: str, low: int, high: int) -> int | None:
    """The environment variable `name` as a number from low to high; unset or empty: None.
    Anything else stops start-up with one line and status 2, like a bad chatapp setting."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if raw.isascii() and raw.isdigit() and low <= int(raw) <= high:
        return int(raw)
    _configuration_error(f"{name} must be a whole number between {low} and {high}; got {raw[:20]!r}")


def _reason(error: Exception) -> str:
    """What went wrong, without the file name that the message already gives."""
    return (error.strerror if isinstance(error, OSError) else None) or str(error)


def _configuration_error(message: str) -> NoReturn:
    print(f"chatapp: configuration error: {message}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    sys.exit(main())
