"""What the SQL storage client adds to the conformance suite: tables, WAL, atomicity, own connections, errors."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import sqlite3
import subprocess
import textwrap
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import create_async_engine

from recoverable.configuration import Configuration
from recoverable.errors import ConfigurationError, StorageBackendError, StoreNotFoundError, VersionConflictError
from recoverable.storages import (
    KeyValueStore,
    SqlStorageClient,
    StoredRecord,
    default_storage_client,
)
from recoverable.storages._sql._connections import PostgresConnections

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from sqlalchemy.ext.asyncio import AsyncEngine

    from recoverable.storages import KeyValueStoreClient

JSON = "application/json"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _table_names(client: SqlStorageClient) -> set[str]:
    async with client.engine.connect() as conn:
        names: list[str] = await conn.run_sync(lambda sync: sqlalchemy.inspect(sync).get_table_names())
    return set(names)


async def _keys(store: KeyValueStoreClient, **kwargs: object) -> list[str]:
    return [info.key async for info in store.iterate_keys(**kwargs)]  # type: ignore[arg-type]


# --- tables ---------------------------------------------------------------------------------------------


async def test_tables_are_created_on_first_use(database_url: str, table_prefix: str) -> None:
    async with SqlStorageClient(database_url, table_prefix=table_prefix) as client:
        assert client.table_names == (f"{table_prefix}kv_stores", f"{table_prefix}kv_records")
        assert not set(client.table_names) & await _table_names(client)

        assert await client.list_key_value_stores() == []

        assert set(client.table_names) <= await _table_names(client)
    async with SqlStorageClient(database_url, table_prefix=table_prefix) as again:
        store = await again.open_key_value_store_client(name="after")
        await store.set_record(key="k", value=b"1", content_type=JSON)
        assert [m.name for m in await again.list_key_value_stores()] == ["after"]


async def test_many_clients_create_the_tables_at_once(database_url: str, table_prefix: str) -> None:
    clients = [SqlStorageClient(database_url, table_prefix=table_prefix) for _ in range(6)]
    try:
        stores = await asyncio.gather(*(c.open_key_value_store_client(name="together") for c in clients))
        listed = await clients[0].list_key_value_stores()
    finally:
        for client in clients:
            await client.aclose()

    assert len({store.store_id for store in stores}) == 1
    assert [m.name for m in listed] == ["together"]


async def test_clients_opening_a_new_sqlite_file_at_once_all_switch_it_to_wal(tmp_path: Path) -> None:
    # Turning a new file to WAL takes its exclusive lock; SQLite refuses one of two connections doing
    # so at once without waiting in busy_timeout, so a client has to try again rather than fail.
    for round_ in range(16):
        url = f"sqlite+aiosqlite:///{tmp_path / f'new-{round_}.db'}"
        clients = [SqlStorageClient(url) for _ in range(8)]
        try:
            stores = await asyncio.gather(*(c.open_key_value_store_client(name="together") for c in clients))
        finally:
            for client in clients:
                await client.aclose()
        assert len({store.store_id for store in stores}) == 1
        with sqlite3.connect(tmp_path / f"new-{round_}.db") as plain:
            assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_sqlite_runs_in_wal_mode_with_full_sync(sqlite_url: str, tmp_path: Path) -> None:
    async with SqlStorageClient(sqlite_url) as client:
        store = await client.open_key_value_store_client()
        await store.set_record(key="k", value=b"1", content_type=JSON)
        async with client.engine.connect() as conn:
            journal_mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            synchronous = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
            busy_timeout = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()

        assert (journal_mode, synchronous) == ("wal", 2)  # 2 is FULL
        assert busy_timeout == 30_000
        assert (tmp_path / "state.db-wal").exists()
    with sqlite3.connect(tmp_path / "state.db") as plain:  # WAL is a property of the file
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_postgres_compares_keys_in_code_point_order(postgres_url: str, table_prefix: str) -> None:
    async with SqlStorageClient(postgres_url, table_prefix=table_prefix) as client:
        store = await client.open_key_value_store_client()
        async with client.engine.connect() as conn:
            collations: dict[str, str] = dict(
                (
                    await conn.execute(
                        sqlalchemy.text(
                            "SELECT column_name, collation_name FROM information_schema.columns "
                            "WHERE table_name = :table AND column_name IN ('key', 'key_head')"
                        ),
                        {"table": client.table_names[1]},
                    )
                ).all()
            )
        keys = ["B", "a", "Z", "é", "e", "😀", "\uffff", "ß", "Ω", "aa", "a b", "a\x7f"]
        for key in keys:
            await store.set_record(key=key, value=b"1", content_type=JSON)

        assert collations == {"key": "C", "key_head": "C"}
        assert await _keys(store) == sorted(keys)


async def test_sqlite_folder_is_created(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    async with SqlStorageClient(f"sqlite+aiosqlite:///{path}") as client:
        await (await client.open_key_value_store_client()).set_record(key="k", value=b"1", content_type=JSON)
    assert path.exists()


async def test_drop_deletes_every_row_of_the_store(sql_client: SqlStorageClient) -> None:
    store = await sql_client.open_key_value_store_client(name="dropped")
    kept = await sql_client.open_key_value_store_client(name="kept")
    for i in range(50):
        await store.set_record(key=f"k{i}", value=b"x", content_type=JSON)
    await kept.set_record(key="k", value=b"x", content_type=JSON)

    await store.drop()

    stores_table, records_table = sql_client.table_names
    async with sql_client.engine.connect() as conn:
        stores = (await conn.execute(sqlalchemy.text(f"SELECT id FROM {stores_table}"))).scalars().all()  # noqa: S608
        store_ids = (
            (await conn.execute(sqlalchemy.text(f"SELECT DISTINCT store_id FROM {records_table}")))  # noqa: S608
            .scalars()
            .all()
        )
    assert stores == [kept.store_id]
    assert store_ids == [kept.store_id]


async def test_versions_are_counters_of_the_store(sql_client: SqlStorageClient) -> None:
    store = await sql_client.open_key_value_store_client(name="counted")
    versions = [await store.set_record(key=f"k{i % 3}", value=b"1", content_type=JSON) for i in range(6)]
    await store.purge()

    assert versions == ["1", "2", "3", "4", "5", "6"]
    assert int(await store.set_record(key="k0", value=b"1", content_type=JSON)) > 6


# --- keys -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "'); DROP TABLE recoverable_kv_records; --",
        "' OR '1'='1",
        '"; DELETE FROM x; --',
        "%",
        "_",
        "\\",
        "$1",
        ":key",
    ],
)
async def test_keys_are_parameters_never_sql(sql_client: SqlStorageClient, key: str) -> None:
    store = await sql_client.open_key_value_store_client(name="injected")
    await store.set_record(key=key, value=b"v", content_type=JSON)
    await store.set_record(key="other", value=b"o", content_type=JSON)

    record = await store.get_record(key=key)

    assert record is not None
    assert record.value == b"v"
    assert await _keys(store) == sorted([key, "other"])
    assert await _keys(store, prefix=key) == [key]
    assert set(sql_client.table_names) <= await _table_names(sql_client)


async def test_long_keys_of_any_characters(sql_client: SqlStorageClient) -> None:
    # Keys of up to 4096 UTF-8 bytes, which PostgreSQL could not hold in a plain index, and keys alike in
    # their first 255 characters (the indexed head) that differ after it.
    rng = random.Random(7)
    keys = [
        "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(1024)),
        "".join(chr(rng.randint(0x10000, 0x10FFFF)) for _ in range(1024)),
        "h" * 255 + "b",
        "h" * 255 + "a" * 700,
        "h" * 255,
        "h" * 254 + "i",
        "h" * 300 + "😀",
    ]
    store = await sql_client.open_key_value_store_client(name="long")
    for i, key in enumerate(keys):
        await store.set_record(key=key, value=str(i).encode(), content_type=JSON)

    for i, key in enumerate(keys):
        record = await store.get_record(key=key)
        assert record is not None
        assert record.value == str(i).encode()
    assert await _keys(store) == sorted(keys)
    assert await _keys(store, prefix="h" * 255) == sorted(k for k in keys if k.startswith("h" * 255))
    assert await _keys(store, prefix="h" * 256) == sorted(k for k in keys if k.startswith("h" * 256))
    start = "h" * 255 + "a"
    assert await _keys(store, exclusive_start_key=start, limit=2) == [k for k in sorted(keys) if k > start][:2]


# --- atomicity under concurrent writers -----------------------------------------------------------------


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from recoverable.errors import VersionConflictError
    from recoverable.storages import SqlStorageClient

    async def main(url, increments):
        async with SqlStorageClient(url) as client:
            store = await client.open_key_value_store_client(name="counter")
            done = 0
            while done < increments:
                record = await store.get_record(key="n")
                try:
                    await store.set_record(key="n", value=str(int(record.value) + 1).encode(),
                                           content_type="application/json", if_version=record.version)
                except VersionConflictError:
                    continue
                done += 1

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


async def test_processes_sharing_a_sqlite_file_lose_no_increment(
    sqlite_url: str, child_env: dict[str, str], python: str
) -> None:
    async with SqlStorageClient(sqlite_url) as client:
        store = await client.open_key_value_store_client(name="counter")
        await store.set_record(key="n", value=b"0", content_type=JSON)
        children = [
            await asyncio.create_subprocess_exec(python, "-c", CHILD, sqlite_url, "20", env=child_env) for _ in range(4)
        ]
        codes = [await child.wait() for child in children]
        record = await store.get_record(key="n")

    assert codes == [0, 0, 0, 0]
    assert record is not None
    assert record.value == b"80"


async def test_conditional_writes_of_many_tasks_have_one_winner_per_version(sql_client: SqlStorageClient) -> None:
    store = await sql_client.open_key_value_store_client(name="tasks")
    version = await store.set_record(key="k", value=b"start", content_type=JSON)

    for round_ in range(4):
        results = await asyncio.gather(
            *(
                store.set_record(key="k", value=f"{round_}/{i}".encode(), content_type=JSON, if_version=version)
                for i in range(50)
            ),
            return_exceptions=True,
        )
        winners = [(i, r) for i, r in enumerate(results) if isinstance(r, str)]
        assert len(winners) == 1
        winner, version = winners[0]
        assert all(isinstance(r, VersionConflictError) and r.actual == version for r in results if r != version)
        record = await store.get_record(key="k")
        assert record is not None
        assert (record.value, record.version) == (f"{round_}/{winner}".encode(), version)

    absent = await asyncio.gather(
        *(store.set_record(key="new", value=b"x", content_type=JSON, if_absent=True) for _ in range(50)),
        return_exceptions=True,
    )
    assert len([r for r in absent if isinstance(r, str)]) == 1
    deleted = await asyncio.gather(
        *(store.delete_record(key="k", if_version=version) for _ in range(50)), return_exceptions=True
    )
    assert deleted.count(True) == 1
    assert all(isinstance(r, VersionConflictError) and r.actual is None for r in deleted if r is not True)
    assert not await store.record_exists(key="k")


async def test_increments_of_many_tasks_of_one_client_lose_nothing(sql_client: SqlStorageClient) -> None:
    tasks, increments = 50, 4
    store = await sql_client.open_key_value_store_client(name="counter")
    await store.set_record(key="n", value=b"0", content_type=JSON)

    async def task() -> None:
        done = 0
        while done < increments:
            record = await store.get_record(key="n")
            assert record is not None
            assert await store.record_exists(key="n")
            try:
                await store.set_record(
                    key="n", value=str(int(record.value) + 1).encode(), content_type=JSON, if_version=record.version
                )
            except VersionConflictError:
                continue
            done += 1

    await asyncio.gather(*(task() for _ in range(tasks)))

    record = await store.get_record(key="n")
    assert record is not None
    assert int(record.value) == tasks * increments


@pytest.mark.parametrize("isolation_level", [None, "AUTOCOMMIT"])
async def test_a_failed_conditional_write_or_delete_changes_nothing(
    database_url: str, table_prefix: str, isolation_level: str | None
) -> None:
    # A conflict rolls back the whole transaction, the store's counter taken first included (on
    # PostgreSQL a conditional set is one statement, which takes a version even when it writes nothing).
    # With isolation_level AUTOCOMMIT, SQLite's driver begins no transaction by itself.
    options = {} if isolation_level is None else {"isolation_level": isolation_level}
    engine = create_async_engine(database_url, **options)
    try:
        if isolation_level is not None and engine.dialect.name == "sqlite":
            async with engine.connect() as conn:
                raw = await conn.get_raw_connection()
                assert raw.driver_connection.isolation_level is None  # type: ignore[union-attr]
        async with SqlStorageClient(engine=engine, table_prefix=table_prefix) as client:
            store = await client.open_key_value_store_client(name="rolled-back")
            assert await store.set_record(key="k", value=b"1", content_type=JSON) == "1"
            before = await store.get_metadata()

            with pytest.raises(VersionConflictError):
                await store.delete_record(key="k", if_version="7")
            if engine.dialect.name == "sqlite":
                with pytest.raises(VersionConflictError):
                    await store.set_record(key="k", value=b"2", content_type=JSON, if_version="7")
                with pytest.raises(VersionConflictError):
                    await store.set_record(key="k", value=b"2", content_type=JSON, if_absent=True)

            assert (await store.get_metadata()).modified_at == before.modified_at
            assert await store.set_record(key="other", value=b"1", content_type=JSON) == "2"
            record = await store.get_record(key="k")
            assert record is not None
            assert (record.value, record.version) == (b"1", "1")
    finally:
        await engine.dispose()


# --- the client's own connections ----------------------------------------------------------------------


def _count_checkouts(engine: AsyncEngine) -> dict[str, int]:
    counts = {"checkout": 0}

    def count(*_: object) -> None:
        counts["checkout"] += 1

    sqlalchemy.event.listen(engine.sync_engine, "checkout", count)
    return counts


async def _record_operations(store: KeyValueStoreClient, key: str) -> None:
    version = await store.set_record(key=key, value=b"v", content_type=JSON)
    assert await store.get_record(key=key) is not None
    assert await store.record_exists(key=key)
    assert await store.delete_record(key=key, if_version=version)


async def test_record_operations_run_on_connections_the_client_keeps(database_url: str, table_prefix: str) -> None:
    # Neither a checkout from the engine's pool per operation, nor a connection per operation: a few
    # connections, made when first needed (PostgreSQL: one per operation running, up to 4; SQLite: a
    # writer and a reader).
    async with SqlStorageClient(database_url, table_prefix=table_prefix) as client:
        store = await client.open_key_value_store_client(name="kept")
        counts = _count_checkouts(client.engine)

        for i in range(30):
            await _record_operations(store, f"k{i}")
        sequential = counts["checkout"]
        await asyncio.gather(*(_record_operations(store, f"k{i}") for i in range(50)))

    postgres = client.engine.dialect.name == "postgresql"
    assert sequential == (1 if postgres else 2)
    assert counts["checkout"] == (4 if postgres else 2)


async def test_a_pool_of_one_connection_is_left_to_the_other_operations(database_url: str, table_prefix: str) -> None:
    engine = create_async_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=10)
    try:
        async with SqlStorageClient(engine=engine, table_prefix=table_prefix) as client:
            store = await client.open_key_value_store_client(name="small-pool")
            await asyncio.gather(
                *(_record_operations(store, f"k{i}") for i in range(20)),
                *(client.list_key_value_stores() for _ in range(3)),
                *(_keys(store) for _ in range(3)),
                *(store.get_metadata() for _ in range(3)),
            )
            assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def _postgres_backends(engine: AsyncEngine, application_name: str) -> list[int]:
    async with engine.connect() as conn:
        pids = await conn.execute(
            sqlalchemy.text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
            {"name": application_name},
        )
        return list(pids.scalars())


async def _aiosqlite_threads() -> int:
    return sum("_connection_worker_thread" in thread.name for thread in threading.enumerate())


async def test_closing_the_client_closes_its_connections(database_url: str, table_prefix: str) -> None:
    name = f"recoverable-{table_prefix}"
    options = {"connect_args": {"server_settings": {"application_name": name}}} if "postgresql" in database_url else {}
    engine = create_async_engine(database_url, poolclass=sqlalchemy.pool.NullPool, **options)
    sqlite_threads = await _aiosqlite_threads()
    try:
        async with SqlStorageClient(engine=engine, table_prefix=table_prefix) as client:
            store = await client.open_key_value_store_client(name="closed")
            await asyncio.gather(*(_record_operations(store, f"k{i}") for i in range(10)))
            if engine.dialect.name == "postgresql":
                assert 2 <= len(await _postgres_backends(engine, name)) <= 5  # its own, and the one asking
            else:
                assert await _aiosqlite_threads() >= sqlite_threads + 2

        for _ in range(200):  # a closed connection's backend, or aiosqlite's thread, ends soon after
            if engine.dialect.name == "postgresql":
                left = len(await _postgres_backends(engine, name)) - 1
            else:
                left = await _aiosqlite_threads() - sqlite_threads
            if left <= 0:
                break
            await asyncio.sleep(0.02)
        assert left <= 0
    finally:
        await engine.dispose()


async def test_a_connection_the_postgres_server_closed_is_replaced(postgres_url: str, table_prefix: str) -> None:
    name = f"recoverable-{table_prefix}"
    engine = create_async_engine(postgres_url, connect_args={"server_settings": {"application_name": name}})
    try:
        async with SqlStorageClient(engine=engine, table_prefix=table_prefix) as client:
            store = await client.open_key_value_store_client(name="restarted")
            await asyncio.gather(*(_record_operations(store, f"k{i}") for i in range(10)))
            async with engine.connect() as conn:
                await conn.execute(
                    sqlalchemy.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )

            for _ in range(500):  # the server ends them soon after
                if len(await _postgres_backends(engine, name)) == 1:  # the one asking
                    break
                await asyncio.sleep(0.02)

            # Each operation finds its connection closed and gets a new one.
            for i in range(5):
                await _record_operations(store, f"after{i}")
            await asyncio.gather(*(_record_operations(store, f"k{i}") for i in range(20)))
    finally:
        await engine.dispose()


async def _make_every_connection(store: KeyValueStoreClient) -> None:
    """Have the client make all the connections it keeps, by running more operations at once than it has."""
    await asyncio.gather(*(store.get_record(key="warm") for _ in range(20)))
    await asyncio.gather(*(store.delete_record(key="warm") for _ in range(20)))


async def test_a_cancelled_operation_leaves_the_client_sound(database_url: str, table_prefix: str) -> None:
    async with SqlStorageClient(database_url, table_prefix=table_prefix) as client:
        store = await client.open_key_value_store_client(name="cancelled")
        await _make_every_connection(store)
        counts = _count_checkouts(client.engine)
        await store.set_record(key="k", value=b"start", content_type=JSON)
        written = {b"start"}
        # Cancelled at each step of their way: before, during and after each round trip or hop.
        for steps in range(12):
            value = f"{steps}".encode()
            written.add(value)
            operations = [
                store.set_record(key="k", value=value, content_type=JSON),
                store.delete_record(key=f"other{steps}"),
                store.get_record(key="k"),
            ]
            tasks = [asyncio.ensure_future(operation) for operation in operations]
            for _ in range(steps):
                await asyncio.sleep(0)
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            expected = (str, bool, StoredRecord, type(None), asyncio.CancelledError)  # done, or cancelled
            assert not [r for r in results if not isinstance(r, expected)]

        record = await store.get_record(key="k")
        assert record is not None
        assert record.value in written
        results = await asyncio.gather(
            *(
                store.set_record(key="k", value=b"after", content_type=JSON, if_version=record.version)
                for _ in range(10)
            ),
            return_exceptions=True,
        )
        assert len([r for r in results if isinstance(r, str)]) == 1
        # The connections survived the cancellations: no new ones were needed.
        assert counts["checkout"] == 0
        # No transaction was left open (SQLite: the write lock held): another client writes at once.
        async with SqlStorageClient(database_url, table_prefix=table_prefix) as other:
            again = await other.open_key_value_store_client(name="cancelled")
            await again.set_record(key="k", value=b"other", content_type=JSON)
        record = await store.get_record(key="k")
        assert record is not None
        assert record.value == b"other"


async def test_a_cancelled_read_keeps_its_connection(database_url: str, table_prefix: str) -> None:
    async with SqlStorageClient(database_url, table_prefix=table_prefix) as client:
        store = await client.open_key_value_store_client(name="cancelled-reads")
        await store.set_record(key="k", value=b"1", content_type=JSON)
        await _make_every_connection(store)
        counts = _count_checkouts(client.engine)
        for steps in range(12):
            tasks = [asyncio.ensure_future(store.get_record(key="k")) for _ in range(3)]
            for _ in range(steps):
                await asyncio.sleep(0)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        record = await store.get_record(key="k")

        assert record is not None
        assert record.value == b"1"
        assert counts["checkout"] == 0


@contextlib.asynccontextmanager
async def _slow_answers(url: str, delay_secs: float) -> AsyncIterator[str]:
    """A loopback proxy to the database at `url` that holds each answer of the server back for `delay_secs`."""
    target = sqlalchemy.engine.make_url(url)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
        try:
            while data := await reader.read(65536):
                await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(target.host, target.port)
        await asyncio.gather(pipe(reader, server_writer, 0.0), pipe(server_reader, writer, delay_secs))

    proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    try:
        yield target.set(port=port).render_as_string(hide_password=False)
    finally:
        proxy.close()


async def test_writes_after_a_transaction_cancelled_on_its_way_are_committed(
    postgres_url: str, table_prefix: str
) -> None:
    # A BEGIN whose answer is still on its way when the operation is cancelled (the proxy delays every
    # answer by 40 ms; the cancellations come at several moments around it). The server may have begun a
    # transaction: the next writes on that connection must not run in it, never to be committed.
    async with (
        _slow_answers(postgres_url, 0.04) as slow_url,
        SqlStorageClient(slow_url, table_prefix=table_prefix) as client,
        SqlStorageClient(postgres_url, table_prefix=table_prefix) as observer,
    ):
        store = await client.open_key_value_store_client(name="cancelled-begin")
        await store.set_record(key="k", value=b"start", content_type=JSON)
        watched = await observer.open_key_value_store_client(name="cancelled-begin")
        versions = []
        for round_, cancel_after_ms in enumerate((0, 10, 20, 30, 45, 60, 75, 90)):
            cancelled = asyncio.ensure_future(store.delete_record(key="absent"))
            await asyncio.sleep(cancel_after_ms / 1000)
            cancelled.cancel()
            await asyncio.gather(cancelled, return_exceptions=True)

            value = f"after {round_}".encode()
            versions.append(await store.set_record(key="k", value=value, content_type=JSON))
            assert await store.delete_record(key="absent") is False  # a whole transaction, on that connection

            seen = await watched.get_record(key="k")
            assert seen is not None
            assert (seen.value, seen.version) == (value, versions[-1]), f"cancelled after {cancel_after_ms} ms"
        assert [int(v) for v in versions] == sorted({int(v) for v in versions})


async def test_a_postgres_connection_left_in_a_transaction_is_not_reused(postgres_url: str, table_prefix: str) -> None:
    # As after a rollback cut short by a second cancellation: the next operation on that connection would
    # run in the transaction, and its write would never be committed.
    async with SqlStorageClient(postgres_url, table_prefix=table_prefix) as client:
        store = await client.open_key_value_store_client(name="left-open")
        await store.set_record(key="k", value=b"1", content_type=JSON)
        connections = client._connections
        assert isinstance(connections, PostgresConnections)
        async with connections._pool.acquire() as connection:
            await connection.execute("BEGIN")

        await store.set_record(key="k", value=b"2", content_type=JSON)

        async with SqlStorageClient(postgres_url, table_prefix=table_prefix) as other:
            record = await (await other.open_key_value_store_client(name="left-open")).get_record(key="k")
        assert record is not None
        assert record.value == b"2"


async def test_errors_leave_the_connections_usable(database_url: str, table_prefix: str) -> None:
    async with SqlStorageClient(database_url, table_prefix=table_prefix) as client:
        store = await client.open_key_value_store_client(name="dropped-table")
        await _record_operations(store, "k")
        async with client.engine.begin() as conn:
            await conn.exec_driver_sql(f"DROP TABLE {client.table_names[1]}")

        for operation in (
            store.get_record(key="k"),
            store.record_exists(key="k"),
            store.set_record(key="k", value=b"1", content_type=JSON),
            store.set_record(key="k", value=b"1", content_type=JSON, if_version="1"),
            store.delete_record(key="k"),
        ):
            with pytest.raises(StorageBackendError) as info:
                await operation
            assert info.value.key == "k"
            assert "'dropped-table'" in str(info.value)

        async with SqlStorageClient(database_url, table_prefix=table_prefix) as other:
            await other.list_key_value_stores()  # creates the dropped table again
        await asyncio.gather(*(_record_operations(store, f"k{i}") for i in range(10)))


async def test_timestamps_written_by_the_driver_read_back_through_sqlalchemy(sql_client: SqlStorageClient) -> None:
    store = await sql_client.open_key_value_store_client(name="timestamps")
    before = datetime.now(UTC)
    await store.set_record(key="k", value=b"1", content_type=JSON)
    after = datetime.now(UTC)

    assert before <= (await store.get_metadata()).modified_at <= after
    if sql_client.engine.dialect.name == "sqlite":
        # Text in SQLAlchemy's own format, as its SQLite dialect writes and parses it.
        async with sql_client.engine.connect() as conn:
            table = sql_client.table_names[0]
            stored = (await conn.exec_driver_sql(f"SELECT modified_at FROM {table}")).scalar()  # noqa: S608
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", str(stored))


async def test_the_first_statement_of_a_sqlite_transaction_must_write(sqlite_url: str) -> None:
    # SQLite's driver begins a transaction before a write only: one that began with a read would not hold
    # the write lock from its start.
    async with SqlStorageClient(sqlite_url) as client:
        store = await client.open_key_value_store_client()
        statements = client._statements.driver
        with pytest.raises(RuntimeError, match="first statement"):
            async with client._connections.transaction() as transaction:
                await transaction.fetch(statements.record_version, {"p_store_id": store.store_id, "p_key_hash": b""})
        await store.set_record(key="k", value=b"1", content_type=JSON)
        assert await store.record_exists(key="k")


# --- errors ---------------------------------------------------------------------------------------------


async def test_a_database_that_is_down_raises_storage_backend_error_without_the_password() -> None:
    port = _free_port()
    async with SqlStorageClient(f"postgresql+asyncpg://worker:s3cret-pass@127.0.0.1:{port}/state") as client:
        with pytest.raises(StorageBackendError) as info:
            await client.open_key_value_store_client(name="crawl")

    message = str(info.value)
    assert f"postgresql+asyncpg://worker:***@127.0.0.1:{port}/state" in message
    assert "'crawl'" in message
    assert "s3cret-pass" not in message
    assert "s3cret-pass" not in client.database
    assert info.value.store == "crawl"
    assert isinstance(info.value.__cause__, OSError | sqlalchemy.exc.SQLAlchemyError)


async def test_an_unusable_sqlite_file_raises_storage_backend_error(tmp_path: Path) -> None:
    (tmp_path / "state.db").mkdir()
    async with SqlStorageClient(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}") as client:
        with pytest.raises(StorageBackendError) as info:
            await client.open_key_value_store_client()
    # After a failed connect, aiosqlite stops its worker thread without waiting for it; the thread then
    # reports to the event loop, which must still be running (else: "Event loop is closed" in the thread).
    for _ in range(200):
        if not any("_connection_worker_thread" in t.name for t in threading.enumerate()):
            break
        await asyncio.sleep(0.01)
    assert str(tmp_path / "state.db") in str(info.value)
    assert "'default'" in str(info.value)


async def test_errors_of_a_store_name_the_key(sqlite_url: str, tmp_path: Path) -> None:
    async with SqlStorageClient(sqlite_url) as client:
        store = await client.open_key_value_store_client(name="broken")
        async with client.engine.begin() as conn:
            await conn.exec_driver_sql(f"DROP TABLE {client.table_names[1]}")

        with pytest.raises(StorageBackendError) as info:
            await store.set_record(key="state/42", value=b"1", content_type=JSON)

    assert info.value.key == "state/42"
    assert "'state/42'" in str(info.value)
    assert "'broken'" in str(info.value)
    assert "no such table" in str(info.value)


async def test_a_dropped_store_is_gone_for_every_client(sql_client: SqlStorageClient, database_url: str) -> None:
    store = await sql_client.open_key_value_store_client(name="shared")
    table_prefix = sql_client.table_names[0].removesuffix("kv_stores")
    async with SqlStorageClient(database_url, table_prefix=table_prefix) as other:
        await (await other.open_key_value_store_client(name="shared")).drop()

    with pytest.raises(StoreNotFoundError):
        await store.set_record(key="k", value=b"1", content_type=JSON)
    with pytest.raises(StoreNotFoundError):
        await _keys(store)


# --- settings -------------------------------------------------------------------------------------------


async def test_the_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    monkeypatch.setenv("RECOVERABLE_SQL_URL", sqlite_url)
    async with SqlStorageClient() as client:
        await (await client.open_key_value_store_client()).set_record(key="k", value=b"1", content_type=JSON)
    assert client.database == sqlite_url


async def test_default_storage_client_builds_a_sql_client(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    monkeypatch.setenv("RECOVERABLE_STORAGE_CLIENT", "sql")
    monkeypatch.setenv("RECOVERABLE_SQL_URL", sqlite_url)
    configuration = Configuration.from_env()

    client = default_storage_client(configuration)

    assert isinstance(client, SqlStorageClient)
    assert configuration.sql_url == sqlite_url
    kvs = await KeyValueStore.open(name="default-client", configuration=configuration)
    await kvs.set_value("k", [1, 2])
    assert await kvs.get_value("k") == [1, 2]
    await client.aclose()


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///{tmp}/a.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///{tmp}/a.db", "sqlite+aiosqlite"),
        ("postgresql://u@127.0.0.1/db", "postgresql+asyncpg"),
        ("postgres://u@127.0.0.1/db", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@127.0.0.1/db", "postgresql+asyncpg"),
    ],
)
async def test_urls_get_an_asyncio_driver(url: str, driver: str, tmp_path: Path) -> None:
    client = SqlStorageClient(url.format(tmp=tmp_path))
    assert client.engine.url.drivername == driver
    await client.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:hunter2@127.0.0.1/db",
        "sqlite+aiosqlite://",
        "sqlite+aiosqlite:///:memory:",
        "not a url",
        "postgresql+psycopg2://u:hunter2@127.0.0.1/db",
    ],
)
def test_urls_that_cannot_be_used(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        SqlStorageClient(url)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("prefix", ["", "Upper_", "1st_", "with-dash_", "x" * 41, "a;b"])
def test_table_prefixes_are_identifiers(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="table_prefix"):
        SqlStorageClient("sqlite+aiosqlite:///state.db", table_prefix=prefix)


def test_a_url_is_required() -> None:
    with pytest.raises(ConfigurationError, match="RECOVERABLE_SQL_URL"):
        SqlStorageClient()


async def test_a_given_engine_is_used_and_left_open(sqlite_url: str, table_prefix: str) -> None:
    engine = create_async_engine(sqlite_url)
    with pytest.raises(ConfigurationError, match="not both"):
        SqlStorageClient(sqlite_url, engine=engine)
    async with SqlStorageClient(engine=engine, table_prefix=table_prefix) as client:
        kvs = await KeyValueStore.open(name="given", storage_client=client)
        await kvs.set_value("k", {"a": 1})
    async with engine.connect() as conn:
        assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1
    await engine.dispose()


async def test_given_engines_of_another_driver_or_in_memory_are_refused(sqlite_url: str) -> None:
    memory = create_async_engine("sqlite+aiosqlite://")
    other_driver = create_async_engine(sqlite_url)
    other_driver.dialect.driver = "pysqlcipher"  # no other asyncio driver of SQLite or PostgreSQL is installed
    try:
        with pytest.raises(ConfigurationError, match="in-memory"):
            SqlStorageClient(engine=memory)
        with pytest.raises(ConfigurationError, match="aiosqlite driver, not pysqlcipher"):
            SqlStorageClient(engine=other_driver)
    finally:
        await memory.dispose()
        await other_driver.dispose()


def test_without_sqlalchemy_the_error_says_what_to_install(child_env: dict[str, str], python: str) -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["sqlalchemy"] = None
        import recoverable
        from recoverable.errors import MissingDependencyError
        try:
            from recoverable import SqlStorageClient
        except MissingDependencyError as exc:
            print(exc)
        else:
            print("imported")
        """
    )
    result = subprocess.run([python, "-c", code], env=child_env, capture_output=True, text=True, check=True)
    assert "pip install 'recoverable[sql]'" in result.stdout
