"""What the Redis and SQL storage clients cost, next to the bare client doing the same commands in the same run.

For each backend (Redis, PostgreSQL, and SQLite as the embedded reference):

- state persist: `RecoverableState.persist_state()` of a 200,000-entry state (about 8 MB of JSON) after a
  change, against the floor of `to_json(model)` plus the bare client running the commands the storage
  client runs for one write;
- state load: `RecoverableState.initialize()` of a new state object, against the bare client's read plus
  `model_validate_json`;
- small records: sequential `set_record`, `get_record`, `record_exists` and `delete_record` of a
  200-byte value, in operations per second, against the bare client running the same commands (the
  deletes delete records written, untimed, before each run).

The bare clients are `redis.asyncio` (a write's commands in one MULTI/EXEC: the Lua script of the storage
client runs the same ones), `asyncpg` (the same statements on one connection: a query or a one-statement
write in autocommit mode, a delete in BEGIN ... COMMIT) and `aiosqlite` (the same statements on one
connection, a write in one transaction, each statement one `execute_fetchall`, the driver's quickest
call). Each figure is the median of several repetitions, ours and bare alternated. The target is
ours/bare <= 1.5. The script prints figures and never fails on them.

    eval "$(.ci/services.sh)"     # Redis and PostgreSQL on loopback, as the tests use them
    python benchmarks/bench_redis_sql.py [--entries 200000] [--repeat 7] [--ops 2000]

The servers come from `--redis-url` / `--postgres-url`, else RECOVERABLE_TEST_REDIS_URL /
RECOVERABLE_TEST_POSTGRES_URL; a backend without a server is left out. Everything the script writes is
under a random key prefix / table prefix and removed at the end. Durability is the servers': run Redis
with `appendfsync always` to compare durable writes (`.ci/services.sh` does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite
import asyncpg
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from recoverable import KeyValueStore, RecoverableState, RedisStorageClient, SqlStorageClient

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from recoverable.storages import KeyValueStoreClient, StorageClient

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_KEY = "BENCH_STATE"
SMALL_VALUE = bytes(range(200))
JSON = "application/json"
TARGET = 1.5


class BenchState(BaseModel):
    """A crawler-like state: one big dict of URLs to counters (as in bench_state.py)."""

    entries: dict[str, int] = Field(default_factory=dict)
    version: int = 0


def make_state(entries: int) -> BenchState:
    """A state of `entries` dict entries, about 43 bytes of JSON each."""
    return BenchState(entries={f"https://example.com/page/{i:07d}": i * 7919 % 10_000_000 for i in range(entries)})


# --- the bare clients: the same commands, without the library -------------------------------------------


class Bare:
    """The commands of one write and one read of a record, run by the bare client of a backend."""

    async def write(self, key: str, value: bytes) -> None:
        """Write a record as the storage client would."""
        raise NotImplementedError

    async def read(self, key: str) -> bytes | None:
        """Read a record as the storage client would."""
        raise NotImplementedError

    async def exists(self, key: str) -> bool:
        """Tell whether a record exists as the storage client would."""
        raise NotImplementedError

    async def delete(self, key: str) -> None:
        """Delete a record as the storage client would."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release the connection."""


class BareRedis(Bare):
    """The commands of the storage client's SET and GET scripts, in MULTI/EXEC and a pipeline."""

    def __init__(self, redis: Redis, prefix: str, store_id: str) -> None:
        self._redis = redis
        tag = "{" + prefix + ":" + store_id + "}"
        self._meta, self._keys, self._record = f"{tag}:meta", f"{tag}:keys", f"{tag}:r:"

    async def write(self, key: str, value: bytes) -> None:
        """The commands of the SET script, in MULTI/EXEC."""
        record = self._record + key
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.exists(self._meta)
            pipe.hget(record, "ver")
            pipe.hincrby(self._meta, "counter", 1)
            pipe.hset(record, mapping={"v": value, "ct": JSON, "ver": "1"})
            pipe.zadd(self._keys, {key: 0})
            pipe.hset(self._meta, "modified_at", time.time_ns() // 1000)
            await pipe.execute()

    async def read(self, key: str) -> bytes | None:
        """The commands of the GET script, in one pipeline."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(self._meta)
            pipe.hmget(self._record + key, ["v", "ct", "ver"])
            _, (value, _, _) = await pipe.execute()
        return value  # type: ignore[no-any-return]

    async def exists(self, key: str) -> bool:
        """The commands of the RECORD_EXISTS script, in one pipeline."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(self._meta)
            pipe.exists(self._record + key)
            _, found = await pipe.execute()
        return bool(found)

    async def delete(self, key: str) -> None:
        """The commands of the DELETE script, in MULTI/EXEC."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.exists(self._meta)
            pipe.hget(self._record + key, "ver")
            pipe.delete(self._record + key)
            pipe.zrem(self._keys, key)
            pipe.hset(self._meta, "modified_at", time.time_ns() // 1000)
            await pipe.execute()


_SQL_BUMP = (
    "UPDATE {stores} SET version_counter = version_counter + 1, modified_at = {p1} WHERE id = {p2} "
    "RETURNING version_counter"
)
_SQL_UPSERT = (
    "INSERT INTO {records} (store_id, key_hash, key_head, key, value, content_type, version, size) "
    "VALUES ({p1}, {p2}, {p3}, {p4}, {p5}, {p6}, {p7}, {p8}) ON CONFLICT (store_id, key_hash) DO UPDATE SET "
    "value = excluded.value, content_type = excluded.content_type, version = excluded.version, size = excluded.size"
)
# PostgreSQL: the storage client's one-statement write (see recoverable/storages/_sql/_statements.py).
_PG_WRITE = (
    "WITH bumped AS (UPDATE {stores} SET modified_at = $1, version_counter = version_counter + 1 WHERE id = $2 "
    "RETURNING id AS store_id, version_counter AS counter) "
    "INSERT INTO {records} (store_id, key_hash, key_head, key, value, content_type, version, size) "
    "SELECT $2, $3::bytea, $4::varchar, $5::varchar, $6::bytea, $7::text, CAST(bumped.counter AS VARCHAR(32)), "
    "$8::bigint FROM bumped ON CONFLICT (store_id, key_hash) DO UPDATE SET value = excluded.value, "
    "content_type = excluded.content_type, version = excluded.version, size = excluded.size RETURNING version"
)
_SQL_READ = (
    "SELECT s.id, r.value, r.content_type, r.version FROM {stores} AS s LEFT OUTER JOIN {records} AS r "
    "ON r.store_id = s.id AND r.key_hash = {p1} WHERE s.id = {p2}"
)
_SQL_EXISTS = (
    "SELECT s.id, r.version FROM {stores} AS s LEFT OUTER JOIN {records} AS r "
    "ON r.store_id = s.id AND r.key_hash = {p1} WHERE s.id = {p2}"
)
_SQL_DELETE = "DELETE FROM {records} WHERE store_id = {p1} AND key_hash = {p2} RETURNING version"


def _sql(template: str, tables: tuple[str, str], placeholder: Callable[[int], str]) -> str:
    return template.format(stores=tables[0], records=tables[1], **{f"p{i}": placeholder(i) for i in range(1, 9)})


class BarePostgres(Bare):
    """The storage client's statements on one asyncpg connection."""

    def __init__(self, conn: Any, tables: tuple[str, str], store_id: str) -> None:
        self._conn = conn
        self._store_id = store_id
        self._write = _PG_WRITE.format(stores=tables[0], records=tables[1])
        self._read = _sql(_SQL_READ, tables, lambda i: f"${i}")
        self._exists = _sql(_SQL_EXISTS, tables, lambda i: f"${i}")
        self._bump = _sql(_SQL_BUMP, tables, lambda i: f"${i}")
        self._delete = _sql(_SQL_DELETE, tables, lambda i: f"${i}")

    async def write(self, key: str, value: bytes) -> None:
        """One statement, in autocommit mode."""
        await self._conn.fetchval(
            self._write,
            datetime.now(UTC),
            self._store_id,
            hashlib.sha256(key.encode()).digest(),
            key[:255],
            key,
            value,
            JSON,
            len(value),
        )

    async def read(self, key: str) -> bytes | None:
        """One query."""
        row = await self._conn.fetchrow(self._read, hashlib.sha256(key.encode()).digest(), self._store_id)
        return None if row is None else row["value"]

    async def exists(self, key: str) -> bool:
        """One query."""
        row = await self._conn.fetchrow(self._exists, hashlib.sha256(key.encode()).digest(), self._store_id)
        return row is not None and row["version"] is not None

    async def delete(self, key: str) -> None:
        """The two statements, in one transaction."""
        async with self._conn.transaction():
            await self._conn.fetchrow(self._bump, datetime.now(UTC), self._store_id)
            await self._conn.fetchrow(self._delete, self._store_id, hashlib.sha256(key.encode()).digest())

    async def close(self) -> None:
        """Close the connection."""
        await self._conn.close()


class BareSqlite(Bare):
    """The storage client's statements on one aiosqlite connection (WAL, synchronous=FULL)."""

    def __init__(self, conn: aiosqlite.Connection, tables: tuple[str, str], store_id: str) -> None:
        self._conn = conn
        self._store_id = store_id
        self._bump = _sql(_SQL_BUMP, tables, lambda _: "?")
        self._upsert = _sql(_SQL_UPSERT, tables, lambda _: "?")
        self._read = _sql(_SQL_READ, tables, lambda _: "?")
        self._exists = _sql(_SQL_EXISTS, tables, lambda _: "?")
        self._delete = _sql(_SQL_DELETE, tables, lambda _: "?")

    async def _bumped(self) -> int:
        """Begin the transaction (implicitly) with the store's UPDATE; the new counter."""
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        (row,) = await self._conn.execute_fetchall(self._bump, (now, self._store_id))
        return int(row[0])

    async def write(self, key: str, value: bytes) -> None:
        """The two statements, in one transaction."""
        counter = await self._bumped()
        await self._conn.execute_fetchall(
            self._upsert,
            (
                self._store_id,
                hashlib.sha256(key.encode()).digest(),
                key[:255],
                key,
                value,
                JSON,
                str(counter),
                len(value),
            ),
        )
        await self._conn.commit()

    async def read(self, key: str) -> bytes | None:
        """One query."""
        rows = list(
            await self._conn.execute_fetchall(self._read, (hashlib.sha256(key.encode()).digest(), self._store_id))
        )
        return rows[0][1] if rows else None

    async def exists(self, key: str) -> bool:
        """One query."""
        rows = list(
            await self._conn.execute_fetchall(self._exists, (hashlib.sha256(key.encode()).digest(), self._store_id))
        )
        return bool(rows) and rows[0][1] is not None

    async def delete(self, key: str) -> None:
        """The two statements, in one transaction."""
        await self._bumped()
        await self._conn.execute_fetchall(self._delete, (self._store_id, hashlib.sha256(key.encode()).digest()))
        await self._conn.commit()

    async def close(self) -> None:
        """Close the connection."""
        await self._conn.close()


# --- measuring ------------------------------------------------------------------------------------------


async def timed(func: Callable[[], Awaitable[object]]) -> float:
    """Seconds one await of `func()` took."""
    start = time.perf_counter()
    await func()
    return time.perf_counter() - start


async def alternate(
    ours: Callable[[], Awaitable[object]],
    bare: Callable[[], Awaitable[object]],
    repeat: int,
    *,
    prepare: Callable[[], Awaitable[object]] | None = None,
) -> tuple[float, float]:
    """Median seconds of `ours` and of `bare`, after a warm-up of each, run alternately.

    `prepare`, when given, runs untimed before each run of either.
    """
    ours_times: list[float] = []
    bare_times: list[float] = []
    for i in range(repeat + 1):
        for func, times in ((ours, ours_times), (bare, bare_times)):
            if prepare is not None:
                await prepare()
            elapsed = await timed(func)
            if i:  # the first round warms up
                times.append(elapsed)
    return statistics.median(ours_times), statistics.median(bare_times)


def row(label: str, ours: float, bare: float, *, ops: int | None = None) -> str:
    """One line of the report: times (or ops/s) and the ratio."""
    ratio = ours / bare
    verdict = "met" if ratio <= TARGET else "NOT met"
    if ops is None:
        figures = f"ours {ours * 1000:9.2f} ms   bare {bare * 1000:9.2f} ms"
    else:
        figures = f"ours {ops / ours:9.0f} op/s  bare {ops / bare:9.0f} op/s"
    return f"  {label:<28} {figures}   ours/bare {ratio:5.2f}  (<= {TARGET}: {verdict})"


async def bench_state(kvs: KeyValueStore, bare: Bare, args: argparse.Namespace) -> None:
    """Persist and load of the large state: RecoverableState against to_json / model_validate_json and bare."""
    state = RecoverableState(
        default_state=make_state(args.entries),
        persist_state_key=STATE_KEY,
        persistence_enabled="explicit_only",
        key_value_store=kvs,
        lease_ttl=None,
    )
    await state.initialize()
    value = state.current_value

    def change() -> None:
        value.version += 1
        value.entries["https://example.com/page/0000000"] = value.version

    async def persist() -> None:
        change()
        await state.persist_state()

    async def bare_persist() -> None:
        change()
        await bare.write(STATE_KEY, BenchState.__pydantic_serializer__.to_json(value))

    print(row(f"state persist ({args.size_mb:.1f} MB)", *await alternate(persist, bare_persist, args.repeat)))

    async def load() -> None:
        fresh = RecoverableState(
            default_state=BenchState(),
            persist_state_key=STATE_KEY,
            persistence_enabled="explicit_only",
            key_value_store=kvs,
            lease_ttl=None,
        )
        await fresh.initialize()
        if len(fresh.current_value.entries) != args.entries:
            raise RuntimeError("the loaded state is not the saved one")

    async def bare_load() -> None:
        raw = await bare.read(STATE_KEY)
        if raw is None:
            raise RuntimeError("the bare client found no state")
        BenchState.model_validate_json(raw)

    print(row(f"state load ({args.size_mb:.1f} MB)", *await alternate(load, bare_load, args.repeat)))
    await state.teardown()


async def bench_small(store: KeyValueStoreClient, bare: Bare, args: argparse.Namespace) -> None:
    """Sequential small-record writes, reads, checks and deletes, in operations per second."""
    keys = [f"item/{i:06d}" for i in range(args.ops)]

    def each(operation: Callable[[str], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            for key in keys:
                await operation(key)

        return run

    writes = each(lambda key: store.set_record(key=key, value=SMALL_VALUE, content_type=JSON))
    bare_writes = each(lambda key: bare.write(key, SMALL_VALUE))

    async def write_both() -> None:
        await writes()
        await bare_writes()

    repeat = max(3, args.repeat // 2)
    print(row("small record writes", *await alternate(writes, bare_writes, repeat), ops=args.ops))
    reads = await alternate(each(lambda key: store.get_record(key=key)), each(bare.read), repeat)
    print(row("small record reads", *reads, ops=args.ops))
    checks = await alternate(each(lambda key: store.record_exists(key=key)), each(bare.exists), repeat)
    print(row("small record exists", *checks, ops=args.ops))
    deletes = await alternate(
        each(lambda key: store.delete_record(key=key)), each(bare.delete), repeat, prepare=write_both
    )
    print(row("small record deletes", *deletes, ops=args.ops))


async def bench_backend(
    label: str,
    client: StorageClient,
    make_bare: Callable[[str], Awaitable[Bare]],
    args: argparse.Namespace,
) -> None:
    """Measure one backend: ours in one store, the bare client in another one of the same storage."""
    ours = await KeyValueStore.open(name="bench-ours", storage_client=client)
    bare_store = await client.open_key_value_store_client(name="bench-bare")
    bare = await make_bare((await bare_store.get_metadata()).id)
    try:
        print(f"{label}:")
        await bench_state(ours, bare, args)
        await bench_small(ours.client, bare, args)
        print()
    finally:
        await bare.close()
        await ours.drop()
        await bare_store.drop()


async def bench_redis(url: str, run_id: str, args: argparse.Namespace) -> None:
    """Redis against redis.asyncio."""
    raw = Redis.from_url(url)
    try:
        settings = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in (await raw.config_get("append*")).items()
        }
        prefix = f"bench-{run_id}"
        async with RedisStorageClient(url, key_prefix=prefix) as client:

            async def make_bare(store_id: str) -> Bare:
                return BareRedis(raw, prefix, store_id)

            label = f"Redis {client.server} (appendonly={settings.get('appendonly')}, "
            label += f"appendfsync={settings.get('appendfsync')})"
            await bench_backend(label, client, make_bare, args)
    finally:
        await raw.aclose()


async def bench_postgres(url: str, run_id: str, args: argparse.Namespace) -> None:
    """PostgreSQL against asyncpg."""
    async with SqlStorageClient(url, table_prefix=f"bench_{run_id}_") as client:

        async def make_bare(store_id: str) -> Bare:
            dsn = client.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            return BarePostgres(await asyncpg.connect(dsn), client.table_names, store_id)

        try:
            await bench_backend(f"PostgreSQL {client.database}", client, make_bare, args)
        finally:
            async with client.engine.begin() as conn:
                for table in client.table_names:
                    await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


async def bench_sqlite(args: argparse.Namespace) -> None:
    """SQLite against aiosqlite, in a file on disk."""
    work = Path(tempfile.mkdtemp(prefix="bench-sqlite-", dir=bench_root(args)))
    path = work / "state.db"
    try:
        async with SqlStorageClient(f"sqlite+aiosqlite:///{path}") as client:

            async def make_bare(store_id: str) -> Bare:
                conn = await aiosqlite.connect(path)
                await conn.execute("PRAGMA journal_mode=WAL")
                await conn.execute("PRAGMA synchronous=FULL")
                return BareSqlite(conn, client.table_names, store_id)

            await bench_backend(f"SQLite {path} (WAL, synchronous=FULL)", client, make_bare, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def run(args: argparse.Namespace) -> None:
    """Measure every backend that has a server."""
    args.size_mb = len(BenchState.__pydantic_serializer__.to_json(make_state(args.entries))) / 1e6
    print(f"state: {args.entries:,} dict entries, {args.size_mb:.1f} MB of JSON; medians of {args.repeat} runs")
    print(f"small records: {args.ops} sequential operations of {len(SMALL_VALUE)} bytes per run\n")
    run_id = secrets.token_hex(4)
    hint = 'pass --{} or run `eval "$(.ci/services.sh)"`'
    if args.redis_url:
        await bench_redis(args.redis_url, run_id, args)
    else:
        print(f"Redis: no server ({hint.format('redis-url')}); left out\n")
    if args.postgres_url:
        await bench_postgres(args.postgres_url, run_id, args)
    else:
        print(f"PostgreSQL: no server ({hint.format('postgres-url')}); left out\n")
    await bench_sqlite(args)


def bench_root(args: argparse.Namespace) -> Path:
    """Where the SQLite file goes: `--dir`, or `.bench-tmp/` in the repository (a disk, not a tmpfs)."""
    root: Path = args.dir if args.dir is not None else REPO_ROOT / ".bench-tmp"
    root.mkdir(parents=True, exist_ok=True)
    return root


def main() -> int:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=200_000, help="dict entries in the state (default 200000)")
    parser.add_argument("--repeat", type=int, default=7, help="repetitions of each measurement (default 7)")
    parser.add_argument("--ops", type=int, default=2000, help="small-record operations per run (default 2000)")
    parser.add_argument("--redis-url", default=os.environ.get("RECOVERABLE_TEST_REDIS_URL"))
    parser.add_argument("--postgres-url", default=os.environ.get("RECOVERABLE_TEST_POSTGRES_URL"))
    parser.add_argument("--dir", type=Path, default=None, help="where to put the SQLite file")
    args = parser.parse_args()
    asyncio.run(run(args))
    if args.dir is None:
        with contextlib.suppress(OSError):  # another run still uses it, or it holds another benchmark's files
            (REPO_ROOT / ".bench-tmp").rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
