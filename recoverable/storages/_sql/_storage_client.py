"""Storage client that keeps stores in an SQL database: SQLite (embedded) or PostgreSQL (shared)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from typing_extensions import override

from recoverable.configuration import Configuration
from recoverable.errors import ConfigurationError, StoreNotFoundError
from recoverable.storages._base import StorageClient
from recoverable.storages._models import KeyValueStoreMetadata, new_store_id
from recoverable.storages._sql._connections import DriverConnections, PostgresConnections, SqliteConnections
from recoverable.storages._sql._dependency import sqlalchemy, sqlalchemy_asyncio
from recoverable.storages._sql._engine import check_engine, create_engine
from recoverable.storages._sql._errors import database_backend
from recoverable.storages._sql._key_value_store_client import SqlKeyValueStoreClient, aware
from recoverable.storages._sql._schema import DEFAULT_TABLE_PREFIX, Tables, alias_column, validate_table_prefix
from recoverable.storages._sql._statements import Statements, insert_for
from recoverable.storages._validation import store_alias, validate_store_name, validate_store_reference

__all__ = ["SqlStorageClient"]

DEFAULT_SQLITE_LOCK_TIMEOUT = timedelta(seconds=30)
"""How long a write of a SQLite database waits for its write lock unless `lock_timeout=` says otherwise."""


class SqlStorageClient(StorageClient):
    """Stores in an SQL database through SQLAlchemy's asyncio engine: SQLite or PostgreSQL.

    - SQLite (`sqlite+aiosqlite:///path/to/state.db`): an embedded alternative to the file system client,
      one file for every store, shared safely by the processes of one machine. The database runs in WAL
      mode with `synchronous=FULL`, so a write is on disk when it returns. Not for network file systems.
    - PostgreSQL (`postgresql+asyncpg://user:password@host:5432/db`): shared by processes and machines. A
      write is durable when it returns as long as the server keeps its default `fsync=on` and
      `synchronous_commit=on`.

    The tables are created on first use (`CREATE TABLE IF NOT EXISTS`); their layout is documented in
    `recoverable.storages._sql._schema`. Every write is one transaction, conditions included, and keys
    are always bound parameters. `postgresql://` and `sqlite://` URLs get the asyncio driver above.

    Record reads and every write skip SQLAlchemy's cost per operation: they run their statements,
    compiled once, with the driver, on connections the client keeps until `aclose()`: made by the engine
    but outside its pool, up to 4 on PostgreSQL (one per operation running), 2 on SQLite (one for the
    writes, one for the reads). The metadata and the listings go through the engine's pool.

    Args:
        url: The database URL; `RECOVERABLE_SQL_URL` when omitted.
        engine: An `AsyncEngine` to use instead of a URL (a SQLite file with aiosqlite, or PostgreSQL with
            asyncpg). The caller keeps it and disposes of it; `aclose()` closes the client's own connections
            and leaves the engine open. For SQLite, WAL mode and `synchronous=FULL` are then the caller's to
            set.
        table_prefix: The start of the table names; clients with different prefixes never see each
            other's stores.
        configuration: Where the URL comes from when neither `url` nor `engine` is given.
        lock_timeout: SQLite: longest a write waits for the database's write lock (its `busy_timeout`),
            then `StoreLockedError` names the process holding it (a process frozen in the middle of a
            write keeps it until it runs again or ends). PostgreSQL: longest a transaction of this client
            may sit idle (`idle_in_transaction_session_timeout`): the server then ends it, with its locks,
            so that a client frozen in the middle of a write blocks the others no longer than that. With
            `engine=`, both are the caller's to set.

    Raises:
        ConfigurationError: No URL was given or configured, the URL or engine names another database or
            driver, or an in-memory SQLite database, or both `url` and `engine` were given, or `lock_timeout`
            is not a positive timedelta.
        MissingDependencyError: SQLAlchemy (raised on import) or the database driver is not installed.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: sqlalchemy_asyncio.AsyncEngine | None = None,
        table_prefix: str = DEFAULT_TABLE_PREFIX,
        configuration: Configuration | None = None,
        lock_timeout: timedelta = DEFAULT_SQLITE_LOCK_TIMEOUT,
    ) -> None:
        if not isinstance(lock_timeout, timedelta) or lock_timeout <= timedelta(0):
            raise ConfigurationError(f"lock_timeout must be a positive timedelta, not {lock_timeout!r}")
        self._tables = Tables.for_prefix(validate_table_prefix(table_prefix))
        if engine is not None:
            if url is not None:
                raise ConfigurationError("pass either url or engine to SqlStorageClient, not both")
            check_engine(engine)
            self._engine = engine
            self._owns_engine = False
        else:
            if url is None:
                url = (configuration or Configuration.from_env()).sql_url
            if not url:
                raise ConfigurationError(
                    "SqlStorageClient needs a database: pass url='sqlite+aiosqlite:///state.db' or "
                    "'postgresql+asyncpg://user@host/db', or set RECOVERABLE_SQL_URL"
                )
            self._engine = create_engine(url, lock_timeout)
            self._owns_engine = True
        self._dialect = self._engine.dialect.name
        self._statements = Statements.build(self._tables, self._engine.dialect)
        self._connections: DriverConnections = (
            PostgresConnections(self._engine) if self._dialect == "postgresql" else SqliteConnections(self._engine)
        )
        self._database = self._engine.url.render_as_string(hide_password=True)
        self._backend = database_backend(
            self._database,
            self._engine.url.password,
            failures=self._connections.errors,
            sqlite_file=os.path.abspath(self._engine.url.database or "") if self._dialect == "sqlite" else None,
            lock_timeout_secs=lock_timeout.total_seconds(),
        )
        # The reads through SQLAlchemy (metadata, listings) need no transaction. PostgreSQL's would cost a
        # BEGIN and a ROLLBACK round trip, so they run in autocommit mode; SQLite's driver begins none for a
        # SELECT, and switching a connection's mode would cost two hops to its thread.
        self._reader = (
            self._engine.execution_options(isolation_level="AUTOCOMMIT")
            if self._dialect == "postgresql"
            else self._engine
        )
        self._tables_ready = False
        self._tables_lock = asyncio.Lock()

    @property
    def engine(self) -> sqlalchemy_asyncio.AsyncEngine:
        """The SQLAlchemy engine underneath."""
        return self._engine

    @property
    def database(self) -> str:
        """The database URL, as messages show it (the password hidden)."""
        return self._database

    @property
    def table_names(self) -> tuple[str, str]:
        """The names of the stores table and the records table."""
        return self._tables.stores.name, self._tables.records.name

    async def _ensure_tables(self) -> None:
        if self._tables_ready:
            return
        async with self._tables_lock:
            if self._tables_ready:
                return
            async with self._engine.begin() as conn:
                if self._dialect == "postgresql":
                    # Two processes creating the same tables at once would collide in PostgreSQL's catalog.
                    lock_id = int.from_bytes(
                        hashlib.sha256(self._tables.stores.name.encode()).digest()[:8], "big", signed=True
                    )
                    await conn.execute(sqlalchemy.select(sqlalchemy.func.pg_advisory_xact_lock(lock_id)))
                for table in (self._tables.stores, self._tables.records):
                    await conn.execute(sqlalchemy.schema.CreateTable(table, if_not_exists=True))
                    for index in sorted(table.indexes, key=lambda i: str(i.name)):
                        await conn.execute(sqlalchemy.schema.CreateIndex(index, if_not_exists=True))
            self._tables_ready = True

    @override
    async def open_key_value_store_client(
        self,
        *,
        id: str | None = None,
        name: str | None = None,
        alias: str | None = None,
    ) -> SqlKeyValueStoreClient:
        validate_store_reference(id=id, name=name, alias=alias)
        label = id or name or alias or "default"
        with self._backend.mapped("open", store=label):
            await self._ensure_tables()
            alias = None if id is not None or name is not None else alias_column(store_alias(alias))
            row = await self._open(id=id, name=name, alias=alias)
        if row is None:
            raise StoreNotFoundError(f"no key-value store has the id {id!r} in {self._database}", store=id)
        return SqlKeyValueStoreClient(
            reader=self._reader,
            connections=self._connections,
            database=self._database,
            embedded=self._dialect == "sqlite",  # SQLite runs in the writing process
            backend=self._backend,
            tables=self._tables,
            statements=self._statements,
            store_id=row.id,
            name=row.name,
            created_at=aware(row.created_at),
            accessed_at=aware(row.accessed_at),
        )

    async def _open(
        self, *, id: str | None, name: str | None, alias: str | None
    ) -> sqlalchemy.Row[Any, Any, Any, Any] | None:
        stores = self._tables.stores
        columns = (stores.c.id, stores.c.name, stores.c.created_at, stores.c.accessed_at)
        column, label = (
            (stores.c.id, id)
            if id is not None
            else (stores.c.name, name)
            if name is not None
            else (stores.c.alias, alias)
        )
        # An existing store is found by a read, which waits for no writer: a process frozen in the middle of
        # a write keeps SQLite's write lock, and must not keep the others from even opening the store.
        async with self._reader.connect() as conn:
            row = (await conn.execute(sqlalchemy.select(*columns).where(column == label))).first()
        if row is not None or id is not None:
            return row
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            # A write first (SQLite then takes its write lock at once), which does nothing when the store
            # exists; concurrent openers of a new name all end up with the one row that won.
            await conn.execute(
                insert_for(self._dialect, stores)
                .values(
                    id=new_store_id(),
                    name=name,
                    alias=alias,
                    created_at=now,
                    modified_at=now,
                    accessed_at=now,
                    version_counter=0,
                )
                .on_conflict_do_nothing(index_elements=[column.name])
            )
            touched = await conn.execute(
                sqlalchemy.update(stores).where(column == label).values(accessed_at=now).returning(*columns)
            )
            return touched.first()

    @override
    async def find_key_value_store(self, *, name: str) -> str | None:
        validate_store_name(name)
        stores = self._tables.stores
        with self._backend.mapped("look up", store=name):
            await self._ensure_tables()
            async with self._reader.connect() as conn:
                found = (await conn.execute(sqlalchemy.select(stores.c.id).where(stores.c.name == name))).first()
        return None if found is None else str(found.id)

    @override
    async def list_key_value_stores(self) -> list[KeyValueStoreMetadata]:
        stores = self._tables.stores
        with self._backend.mapped("list the key-value stores"):
            await self._ensure_tables()
            async with self._engine.connect() as conn:
                rows = (await conn.execute(sqlalchemy.select(stores).order_by(stores.c.created_at, stores.c.id))).all()
        listed = []
        for row in rows:
            created, modified = aware(row.created_at), aware(row.modified_at)
            listed.append(
                KeyValueStoreMetadata(
                    id=row.id,
                    name=row.name,
                    created_at=created,
                    modified_at=max(modified, created),
                    accessed_at=max(aware(row.accessed_at), modified, created),
                )
            )
        return listed

    @override
    async def aclose(self) -> None:
        await self._connections.aclose()
        if self._owns_engine:
            await self._engine.dispose()
