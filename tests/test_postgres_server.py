"""The throwaway PostgreSQL server the tests run against (tests/support/postgres.py): it starts, each
fresh database is empty and apart from the others, the app's driver (asyncpg) reaches it on its
socket, and it leaves nothing behind."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.support import postgres
from tests.support.postgres import PostgresServer


async def _user_tables(url: str) -> list[str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    finally:
        await connection.close()
    return [row["tablename"] for row in rows]


async def test_the_driver_reaches_a_fresh_database_on_the_socket_alone(postgres_url: str) -> None:
    connection = await asyncpg.connect(postgres_url)
    try:
        settings = {name: await connection.fetchval(f"SHOW {name}")
                    for name in ("listen_addresses", "fsync", "synchronous_commit", "max_connections")}
        database = await connection.fetchval("SELECT current_database()")
        address = await connection.fetchval("SELECT inet_server_addr()")
    finally:
        await connection.close()
    assert settings == {"listen_addresses": "", "fsync": "off", "synchronous_commit": "off", "max_connections": "200"}
    assert database == urlsplit(postgres_url).path.removeprefix("/")
    assert address is None  # a Unix socket: no TCP address
    assert await _user_tables(postgres_url) == []


async def test_two_fresh_databases_are_apart(postgres_server: PostgresServer) -> None:
    first, second = postgres_server.create_database(), postgres_server.create_database("other")
    assert first != second
    connection = await asyncpg.connect(first)
    try:
        await connection.execute("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)")
        await connection.execute("INSERT INTO notes VALUES (1, 'only here')")
    finally:
        await connection.close()
    assert await _user_tables(first) == ["notes"]
    assert await _user_tables(second) == []


def test_a_server_leaves_nothing_behind_even_when_its_block_fails() -> None:
    reason = postgres.missing()
    if reason is not None:
        postgres.skip_or_fail(reason)
    with pytest.raises(RuntimeError, match="a test that failed"):
        with PostgresServer() as server:
            directory, pid = server.directory, server.pid
            assert directory is not None and pid is not None
            assert (directory / f".s.PGSQL.{postgres.PORT}").is_socket()
            assert server.sql("SELECT 1").strip() == "1"
            raise RuntimeError("a test that failed")
    assert not directory.exists()
    assert not _running(pid)
    server.stop()  # a second stop does nothing


def _running(pid: int) -> bool:
    """Alive and not a zombie (the postmaster's parent may reap it late)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.parametrize("required", ["", "1"])
def test_missing_binaries_skip_unless_required(monkeypatch: pytest.MonkeyPatch, required: str) -> None:
    monkeypatch.setenv(postgres.REQUIRE, required)
    monkeypatch.setattr(postgres, "find_bindir", lambda: None)
    reason = postgres.missing()
    assert reason is not None and "apt-get install postgresql" in reason
    expected = pytest.fail.Exception if required else pytest.skip.Exception
    with pytest.raises(expected, match="PostgreSQL's server binaries"):
        postgres.skip_or_fail(reason)


def test_the_cluster_directory_is_the_servers_own(postgres_server: PostgresServer) -> None:
    """As root the server runs as another user (PostgreSQL refuses root), who owns its directory."""
    assert postgres_server.directory is not None
    user = postgres.server_user()
    expected = os.geteuid() if user is None else pwd.getpwnam(user).pw_uid
    assert postgres_server.directory.stat().st_uid == expected != 0
