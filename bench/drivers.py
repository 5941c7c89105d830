"""asyncpg against psycopg 3 (with psycopg_pool), on the statements chatapp's store runs, against a
throwaway PostgreSQL cluster (tests/support/postgres.py) on its Unix socket.

Each statement shape runs for SECONDS, after a warm-up that lets each pooled connection prepare it,
at each concurrency: that many asyncio tasks sharing one pool of POOL connections. Reported per
operation: wall time (the run's length divided by the operations done: the latency at concurrency
1, the inverse of throughput above) and this process's CPU (user + system), the app's side of the
cost; the server's CPU is not counted. The shapes, on the app's `messages` table (18 columns):

    by_id         SELECT * of one message by primary key
    insert        INSERT ... RETURNING * of a message (the trigger touches its conversation)
    save_partial  UPDATE of an answer's text as it streams, 128 characters more each time up to 4 KiB
    claim         a short transaction: pg_advisory_xact_lock, SELECT COUNT(*), INSERT (a stream's place)
    page          1,000 messages of one conversation (a long conversation, or an export)

Rows are read by column name in the app, so psycopg returns dicts (dict_row); asyncpg's Record reads
by name as it is. Both use their defaults otherwise: statements prepared (asyncpg at once, psycopg
from the 5th use on a connection), autocommit outside explicit transactions. Bounded: about a minute
in all at the defaults, and a watchdog ends the run after DEADLINE seconds; the cluster is removed.

    python bench/drivers.py [--seconds 1] [--rounds 3] [--concurrency 1,50] [--pool 10]
                            [--drivers asyncpg,psycopg] [--shapes by_id,insert,save_partial,claim,page]

Two variants, to see where the costs lie: `asyncpg-noreset`, asyncpg with a pool that does not reset
a connection when it is given back (by default a round trip: RESET ALL, UNLISTEN *, unlock advisory
locks...), and `psycopg-tuples`, psycopg with its default rows (tuples, read by position only).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import importlib.util
import itertools
import json
import math
import os
import platform
import re
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lib.processes import start_watchdog  # noqa: E402
from chatapp.db.migrations import MIGRATIONS  # noqa: E402
from tests.support.postgres import PostgresServer, missing  # noqa: E402

# The app's own schema, as its migrations build it on PostgreSQL.
SCHEMA = "\n".join(migration.postgresql for migration in MIGRATIONS)
# 100 conversations of 100 messages (the rows read by id), one of 1,000 (the page), one per task for
# the inserts and the streaming answers. Questions of ~100 characters, answers of ~1,500 with their
# HTML, as in a chat.
FILL = """
INSERT INTO conversations (id, owner, title, created_at, updated_at)
    SELECT 'c-' || i, 'owner-' || i, 'Conversation ' || i, now()::text, now()::text FROM generate_series(0, 99) i;
INSERT INTO conversations (id, owner, title, created_at, updated_at) VALUES ('page', 'owner-0', 'Long', '', '');
INSERT INTO conversations (id, owner, title, created_at, updated_at)
    SELECT 'task-' || i, 'owner-' || i, 'Task ' || i, now()::text, now()::text FROM generate_series(0, {tasks}) i;
INSERT INTO messages (conversation_id, role, content, html, status, model, prompt_tokens, completion_tokens,
                      created_at, updated_at)
    SELECT CASE WHEN i <= 10000 THEN 'c-' || (i % 100) ELSE 'page' END,
           CASE WHEN i % 2 = 0 THEN 'user' ELSE 'assistant' END,
           repeat('word ', CASE WHEN i % 2 = 0 THEN 20 ELSE 300 END),
           CASE WHEN i % 2 = 0 THEN NULL ELSE '<p>' || repeat('word ', 360) || '</p>' END,
           'complete', 'some-model', 10 * i, 300,
           to_char(now() + i * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS.MS+00:00'),
           to_char(now() + i * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS.MS+00:00')
    FROM generate_series(1, 11000) i;
INSERT INTO messages (conversation_id, role, content, status, created_at, updated_at)
    SELECT 'task-' || i, 'assistant', '', 'streaming', now()::text, now()::text FROM generate_series(0, {tasks}) i;
ANALYZE;
"""
BY_ID = "SELECT * FROM messages WHERE id = $1"
INSERT = ("INSERT INTO messages (conversation_id, role, content, status, model, send_token, created_at, updated_at) "
          "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *")
SAVE_PARTIAL = "UPDATE messages SET content = $1, updated_at = $2 WHERE id = $3"
LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
COUNT = "SELECT COUNT(*) FROM streams WHERE owner = $1"
CLAIM = "INSERT INTO streams (id, owner, seen_at) VALUES ($1, $2, $3)"
PAGE = "SELECT * FROM messages WHERE conversation_id = $1 ORDER BY id LIMIT 1000"
SHAPES = ["by_id", "insert", "save_partial", "claim", "page"]
ANSWER = ("Streaming answers grow a little at a time, and each save rewrites the whole text so far. " * 50)[:4096]
QUESTION = "How do I read a file line by line in Python, and close it even when an exception is raised?"


def _psycopg_sql(statement: str) -> str:
    """$1, $2... as psycopg's %s (each parameter is used once, in order, in these statements)."""
    return re.sub(r"\$\d+", "%s", statement)


class Asyncpg:
    name = "asyncpg"

    async def open(self, url: str, size: int) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(url, min_size=size, max_size=size)

    async def close(self) -> None:
        await self.pool.close()

    async def by_id(self, message_id: int) -> Any:
        return await self.pool.fetchrow(BY_ID, message_id)

    async def insert(self, values: tuple) -> Any:
        return await self.pool.fetchrow(INSERT, *values)

    async def save_partial(self, text: str, now: str, message_id: int) -> None:
        await self.pool.execute(SAVE_PARTIAL, text, now, message_id)

    async def claim(self, owner: str, stream_id: str, seen_at: float) -> int:
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(LOCK, owner)
            taken = await connection.fetchval(COUNT, owner)
            await connection.execute(CLAIM, stream_id, owner, seen_at)
        return taken

    async def page(self, conversation_id: str) -> list:
        return await self.pool.fetch(PAGE, conversation_id)


class AsyncpgNoReset(Asyncpg):
    name = "asyncpg-noreset"

    async def open(self, url: str, size: int) -> None:
        import asyncpg

        async def keep(connection: asyncpg.Connection) -> None:
            """Nothing: the connection goes back as it is."""

        self.pool = await asyncpg.create_pool(url, min_size=size, max_size=size, reset=keep)


class Psycopg:
    name = "psycopg"
    by_name = True  # rows as dicts (dict_row), read by column name as the app reads them

    async def open(self, url: str, size: int) -> None:
        from psycopg.rows import dict_row, tuple_row
        from psycopg_pool import AsyncConnectionPool

        self.pool = AsyncConnectionPool(url, min_size=size, max_size=size, open=False, kwargs={
            "autocommit": True, "row_factory": dict_row if self.by_name else tuple_row})
        await self.pool.open(wait=True)

    async def close(self) -> None:
        await self.pool.close()

    async def by_id(self, message_id: int) -> Any:
        async with self.pool.connection() as connection:
            cursor = await connection.execute(_psycopg_sql(BY_ID), (message_id,))
            return await cursor.fetchone()

    async def insert(self, values: tuple) -> Any:
        async with self.pool.connection() as connection:
            cursor = await connection.execute(_psycopg_sql(INSERT), values)
            return await cursor.fetchone()

    async def save_partial(self, text: str, now: str, message_id: int) -> None:
        async with self.pool.connection() as connection:
            await connection.execute(_psycopg_sql(SAVE_PARTIAL), (text, now, message_id))

    async def claim(self, owner: str, stream_id: str, seen_at: float) -> int:
        async with self.pool.connection() as connection, connection.transaction():
            await connection.execute(_psycopg_sql(LOCK), (owner,))
            cursor = await connection.execute(_psycopg_sql(COUNT), (owner,))
            row = await cursor.fetchone()
            await connection.execute(_psycopg_sql(CLAIM), (stream_id, owner, seen_at))
        assert row is not None
        return row["count"] if self.by_name else row[0]

    async def page(self, conversation_id: str) -> list:
        async with self.pool.connection() as connection:
            cursor = await connection.execute(_psycopg_sql(PAGE), (conversation_id,))
            return await cursor.fetchall()


class PsycopgTuples(Psycopg):
    name = "psycopg-tuples"
    by_name = False  # psycopg's own default and its fastest rows, read by position only


DRIVERS: dict[str, tuple[type[Asyncpg] | type[Psycopg], list[str]]] = {
    "asyncpg": (Asyncpg, ["asyncpg"]),
    "asyncpg-noreset": (AsyncpgNoReset, ["asyncpg"]),
    "psycopg": (Psycopg, ["psycopg", "psycopg_pool"]),
    "psycopg-tuples": (PsycopgTuples, ["psycopg", "psycopg_pool"]),
}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def operation(driver: Asyncpg | Psycopg, shape: str, ids: dict[str, Any]) -> Callable[[int, int], Awaitable[Any]]:
    """The shape as `op(task, n)`: task k's n-th operation. Tasks never wait for each other's rows
    (each saves and inserts into its own conversation, claims for its own owner)."""
    read_ids, streaming_ids, run = ids["read"], ids["streaming"], ids["run"]
    unique = itertools.count()  # send tokens and stream ids: new in the warm-up and the run alike
    if shape == "by_id":
        return lambda task, n: driver.by_id(read_ids[(task * 7919 + n * 104729) % len(read_ids)])
    if shape == "insert":
        return lambda task, n: driver.insert((f"task-{task}", "user", QUESTION, "complete", "some-model",
                                              f"{run}-{next(unique)}", _now(), _now()))
    if shape == "save_partial":
        return lambda task, n: driver.save_partial(ANSWER[:128 * (n % 32 + 1)], _now(), streaming_ids[task])
    if shape == "claim":
        return lambda task, n: driver.claim(f"owner-{task}", f"{run}-{next(unique)}", time.time())
    if shape == "page":
        return lambda task, n: driver.page("page")
    raise ValueError(shape)


async def measure(op: Callable[[int, int], Awaitable[Any]], concurrency: int, seconds: float) -> dict[str, float]:
    """Run `op` from `concurrency` tasks for `seconds`; per-operation wall and CPU, in microseconds."""

    async def worker(task: int, until: float) -> int:
        n = 0
        while time.perf_counter() < until:
            await op(task, n)
            n += 1
        return n

    # Warm-up: every pooled connection prepares the statement, caches fill.
    warm = time.perf_counter() + min(0.3, seconds / 3)
    await asyncio.gather(*(worker(task, warm) for task in range(max(concurrency, 10))))
    gc.collect()
    wall, cpu = time.perf_counter(), cpu_seconds()
    counts = await asyncio.gather(*(worker(task, time.perf_counter() + seconds) for task in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    done = sum(counts)
    return {"ops": done, "wall_us": wall / done * 1e6, "cpu_us": cpu / done * 1e6}


async def bench(names: list[str], url: str, options: argparse.Namespace, shapes: list[str],
                concurrencies: list[int], ids: dict[str, Any]) -> dict[str, dict[tuple[str, int], dict[str, float]]]:
    """Every figure ROUNDS times, the drivers taking turns (so that load from outside the bench falls on
    each alike); the best round's wall and CPU are kept, each the lowest seen."""
    drivers = {name: DRIVERS[name][0]() for name in names}
    results: dict[str, dict[tuple[str, int], dict[str, float]]] = {name: {} for name in names}
    opened = []
    try:
        for driver in drivers.values():
            await driver.open(url, options.pool)
            opened.append(driver)
        for shape in shapes:
            for concurrency in concurrencies:
                for round_ in range(options.rounds):
                    for name, driver in drivers.items():
                        ids["run"] = f"{name}-{shape}-{concurrency}-{round_}"
                        figures = await measure(operation(driver, shape, ids), concurrency, options.seconds)
                        best = results[name].setdefault((shape, concurrency),
                                                        {"wall_us": math.inf, "cpu_us": math.inf})
                        best["wall_us"] = min(best["wall_us"], figures["wall_us"])
                        best["cpu_us"] = min(best["cpu_us"], figures["cpu_us"])
                        print(f"  {name:<15} {shape:<13} x{concurrency:<3} {figures['ops']:7.0f} ops  "
                              f"wall {figures['wall_us']:8.1f} µs/op  cpu {figures['cpu_us']:8.1f} µs/op", flush=True)
    finally:
        for driver in opened:
            await driver.close()
    return results


async def prepare(url: str, tasks: int) -> dict[str, Any]:
    """The schema and rows, through asyncpg or psycopg, whichever is there (both run the same SQL)."""
    statements = SCHEMA + FILL.format(tasks=tasks)
    if importlib.util.find_spec("asyncpg"):
        import asyncpg

        connection = await asyncpg.connect(url)
        try:
            await connection.execute(statements)
            read = [row[0] for row in await connection.fetch(
                "SELECT id FROM messages WHERE conversation_id LIKE 'c-%'")]
            streaming = [row[0] for row in await connection.fetch(
                "SELECT id FROM messages WHERE conversation_id LIKE 'task-%' ORDER BY substr(conversation_id, 6)::int")]
        finally:
            await connection.close()
    else:
        import psycopg

        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
            await connection.execute(statements)
            read = [row[0] for row in await (await connection.execute(
                "SELECT id FROM messages WHERE conversation_id LIKE 'c-%'")).fetchall()]
            streaming = [row[0] for row in await (await connection.execute(
                "SELECT id FROM messages WHERE conversation_id LIKE 'task-%' ORDER BY substr(conversation_id, 6)::int"
            )).fetchall()]
    return {"read": read, "streaming": streaming, "run": ""}


def print_table(results: dict[str, dict[tuple[str, int], dict[str, float]]], shapes: list[str],
                concurrencies: list[int]) -> None:
    """One row per shape and concurrency: each driver's wall and CPU per operation, and their ratios."""
    names = list(results)
    head = ["shape", "tasks"] + [f"{name} wall µs/op" for name in names] + [f"{name} CPU µs/op" for name in names]
    if len(names) == 2:
        head += [f"CPU {names[1]}/{names[0]}"]
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|")
    for shape in shapes:
        for concurrency in concurrencies:
            cells = [shape, str(concurrency)]
            cells += [f"{results[name][shape, concurrency]['wall_us']:,.0f}" for name in names]
            cells += [f"{results[name][shape, concurrency]['cpu_us']:,.0f}" for name in names]
            if len(names) == 2:
                first, second = (results[name][shape, concurrency]["cpu_us"] for name in names)
                cells.append(f"{second / first:.2f}×")
            print("| " + " | ".join(cells) + " |")


def _machine(server: PostgresServer) -> str:
    model = "unknown CPU"
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    version = server.sql("SHOW server_version").strip()
    drivers = ", ".join(f"{package} {importlib.metadata.version(package)}"
                        for package in ("asyncpg", "psycopg", "psycopg-binary", "psycopg-pool")
                        if _installed(package))
    return (f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, PostgreSQL {version} "
            f"on its Unix socket, {drivers}")


def _installed(package: str) -> bool:
    try:
        importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


async def main(options: argparse.Namespace) -> None:
    wanted = options.drivers.split(",")
    available = []
    for name in wanted:
        if name not in DRIVERS:
            sys.exit(f"drivers.py: unknown driver {name!r} (known: {', '.join(DRIVERS)})")
        modules = DRIVERS[name][1]
        if all(importlib.util.find_spec(module) for module in modules):
            available.append(name)
        else:
            print(f"drivers.py: skipping {name}: {' and '.join(modules)} not installed "
                  f"(pip install -e '.[bench]')", file=sys.stderr)
    if not available:
        sys.exit("drivers.py: no driver to measure")
    reason = missing()
    if reason is not None:
        sys.exit(f"drivers.py: {reason}")
    shapes = options.shapes.split(",")
    concurrencies = [int(value) for value in options.concurrency.split(",")]
    with PostgresServer() as server:
        watchdog = start_watchdog("drivers.py", options.deadline, {"postgres": server.pid})
        try:
            url = server.create_database("bench")
            ids = await prepare(url, max(concurrencies))
            print(_machine(server))
            print(f"{options.rounds} rounds of {options.seconds:g} s per figure, the best kept; "
                  f"pools of {options.pool} connections", flush=True)
            results = await bench(available, url, options, shapes, concurrencies, ids)
            print_table(results, shapes, concurrencies)
            if options.json:
                print("JSON " + json.dumps({name: {f"{shape}@{concurrency}": figures
                                                   for (shape, concurrency), figures in table.items()}
                                            for name, table in results.items()}))
        finally:
            watchdog.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="measured seconds per round (1.0)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure, the best kept (3)")
    parser.add_argument("--concurrency", default="1,50", help="tasks sharing the pool, comma-separated (1,50)")
    parser.add_argument("--pool", type=int, default=10, help="connections in each driver's pool (10)")
    parser.add_argument("--drivers", default="asyncpg,psycopg",
                        help=f"which, in order (asyncpg,psycopg; known: {','.join(DRIVERS)})")
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"which statements ({','.join(SHAPES)})")
    parser.add_argument("--deadline", type=float, default=170.0, help="the watchdog ends the run after this (170 s)")
    parser.add_argument("--json", action="store_true", help="also print one last line: JSON {...}")
    asyncio.run(main(parser.parse_args()))
