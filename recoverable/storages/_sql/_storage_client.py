"""Storage client that keeps stores in an SQL database: SQLite (embedded) or PostgreSQL (shared)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import sqlite3
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, cast

from typing_extensions import override

from recoverable._backoff import backoff_delay
from recoverable.configuration import Configuration
from recoverable.errors import ConfigurationError, MissingDependencyError, RecoverableError, StoreNotFoundError
from recoverable.storages._base import StorageClient
from recoverable.storages._models import KeyValueStoreMetadata, new_store_id
from recoverable.storages._sql._dependency import INSTALL_HINT, sqlalchemy, sqlalchemy_asyncio, sqlalchemy_exc
from recoverable.storages._sql._errors import DatabaseInfo, backend_error
from recoverable.storages._sql._key_value_store_client import SqlKeyValueStoreClient, aware
from recoverable.storages._sql._schema import DEFAULT_TABLE_PREFIX, Tables, alias_column, validate_table_prefix
from recoverable.storages._sql._statements import Statements, insert_for
from recoverable.storages._validation import store_alias, validate_store_name, validate_store_reference

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry

    from recoverable.storages._sql._statements import DriverStatement

__all__ = ["DriverConnections", "DriverTransaction", "SqlStorageClient"]

_BACKEND_ERRORS = (sqlalchemy_exc.SQLAlchemyError, OSError)
_ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
DEFAULT_SQLITE_LOCK_TIMEOUT = timedelta(seconds=30)
"""How long a write of a SQLite database waits for its write lock unless `lock_timeout=` says otherwise."""
# The PostgreSQL connections of a client's record operations and writes: as many of them run at once.
_POSTGRES_CONNECTIONS = 4


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
            if engine.dialect.name not in _ASYNC_DRIVERS:
                raise ConfigurationError(
                    f"SqlStorageClient supports SQLite and PostgreSQL, not {engine.dialect.name} (the given engine)"
                )
            if engine.dialect.driver != _ASYNC_DRIVERS[engine.dialect.name]:
                raise ConfigurationError(
                    f"SqlStorageClient runs {engine.dialect.name} with the {_ASYNC_DRIVERS[engine.dialect.name]} "
                    f"driver, not {engine.dialect.driver} (the given engine)"
                )
            if engine.dialect.name == "sqlite":
                # The client's own connections would each open another, empty, in-memory database.
                _reject_memory_sqlite(engine.url, "the given engine")
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
            self._engine = _create_engine(url, lock_timeout)
            self._owns_engine = True
        self._database = DatabaseInfo(
            self._engine.url.render_as_string(hide_password=True),
            self._engine.url.password,
            sqlite_file=os.path.abspath(self._engine.url.database or "")
            if self._engine.dialect.name == "sqlite"
            else None,
            lock_timeout_secs=lock_timeout.total_seconds(),
        )
        self._dialect = self._engine.dialect.name
        self._statements = Statements.build(self._tables, self._engine.dialect)
        self._connections: DriverConnections = (
            PostgresConnections(self._engine) if self._dialect == "postgresql" else SqliteConnections(self._engine)
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
        return self._database.description

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
        try:
            await self._ensure_tables()
            alias = None if id is not None or name is not None else alias_column(store_alias(alias))
            row = await self._open(id=id, name=name, alias=alias)
        except _BACKEND_ERRORS as exc:
            raise backend_error(self._database, "open", exc, store=label) from exc
        if row is None:
            raise StoreNotFoundError(f"no key-value store has the id {id!r} in {self._database.description}", store=id)
        return SqlKeyValueStoreClient(
            reader=self._reader,
            connections=self._connections,
            database=self._database,
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
        try:
            await self._ensure_tables()
            async with self._reader.connect() as conn:
                found = (await conn.execute(sqlalchemy.select(stores.c.id).where(stores.c.name == name))).first()
        except _BACKEND_ERRORS as exc:
            raise backend_error(self._database, "look up", exc, store=name) from exc
        return None if found is None else str(found.id)

    @override
    async def list_key_value_stores(self) -> list[KeyValueStoreMetadata]:
        stores = self._tables.stores
        try:
            await self._ensure_tables()
            async with self._engine.connect() as conn:
                rows = (await conn.execute(sqlalchemy.select(stores).order_by(stores.c.created_at, stores.c.id))).all()
        except _BACKEND_ERRORS as exc:
            raise backend_error(self._database, "list the key-value stores", exc) from exc
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


def _create_engine(url: str, lock_timeout: timedelta) -> sqlalchemy_asyncio.AsyncEngine:
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy_exc.ArgumentError:
        raise ConfigurationError(
            "the SQL URL is not a database URL: use e.g. sqlite+aiosqlite:///state.db or "
            "postgresql+asyncpg://user@host/db"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    shown = parsed.render_as_string(hide_password=True)
    if backend not in _ASYNC_DRIVERS:
        raise ConfigurationError(f"SqlStorageClient supports SQLite and PostgreSQL, not {backend!r} ({shown})")
    if driver and driver != _ASYNC_DRIVERS[backend]:
        raise ConfigurationError(
            f"SqlStorageClient runs {backend} with the {_ASYNC_DRIVERS[backend]} driver, not {driver} ({shown}): "
            f"use {backend}+{_ASYNC_DRIVERS[backend]}:// or {backend}://"
        )
    parsed = parsed.set(drivername=f"{backend}+{_ASYNC_DRIVERS[backend]}")
    if backend == "sqlite":
        _prepare_sqlite_file(parsed, shown)
    try:
        # hide_parameters: values (and keys) never appear in SQLAlchemy's error messages.
        connect_args: dict[str, Any] = {}
        if backend == "postgresql":
            # A client frozen in the middle of a transaction (SIGSTOP, a paused container) would keep the locks
            # it took, the row of its store among them, and with it every writer of that store, for as long as
            # it stays frozen: the server ends such a transaction instead, and nothing of it is committed.
            timeout_ms = str(max(1, round(lock_timeout.total_seconds() * 1000)))
            connect_args["server_settings"] = {"idle_in_transaction_session_timeout": timeout_ms}
        engine = sqlalchemy_asyncio.create_async_engine(parsed, hide_parameters=True, connect_args=connect_args)
    except ImportError as exc:
        raise MissingDependencyError(
            f"the driver of {shown} is not installed ({exc.name or exc}): {INSTALL_HINT}"
        ) from exc
    except sqlalchemy_exc.ArgumentError as exc:
        raise ConfigurationError(f"cannot use {shown}: {exc}") from exc
    if backend == "sqlite":
        busy_timeout_ms = max(1, round(lock_timeout.total_seconds() * 1000))
        sqlalchemy.event.listen(
            engine.sync_engine, "connect", functools.partial(_sqlite_on_connect, busy_timeout_ms=busy_timeout_ms)
        )
    return engine


def _reject_memory_sqlite(url: sqlalchemy.URL, shown: str) -> None:
    database = url.database
    if not database or database == ":memory:" or url.query.get("mode") == "memory":
        raise ConfigurationError(
            f"{shown} is an in-memory SQLite database, which does not survive a restart: give a file "
            "(sqlite+aiosqlite:///state.db), or use MemoryStorageClient"
        )


def _prepare_sqlite_file(url: sqlalchemy.URL, shown: str) -> None:
    _reject_memory_sqlite(url, shown)
    folder = os.path.dirname(os.path.abspath(url.database or ""))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create the folder {folder} of {shown}: {exc.strerror or exc}") from exc


def _sqlite_on_connect(
    dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry, *, busy_timeout_ms: int
) -> None:
    # WAL: readers never block the writer and a commit is one append; FULL: that append is fsync'd
    # before the commit returns, so a returned write survives a power loss.
    try:
        cast("sqlalchemy.engine.AdaptedConnection", dbapi_connection).run_async(
            functools.partial(_sqlite_settings, busy_timeout_ms=busy_timeout_ms)
        )
    except BaseException:
        # SQLAlchemy does not close a connection whose connect event failed; left to the garbage
        # collector, aiosqlite's thread would outlive the event loop.
        dbapi_connection.close()
        raise


async def _sqlite_settings(connection: Any, *, busy_timeout_ms: int) -> None:
    """Set up one of aiosqlite's connections."""

    async def pragma(statement: str) -> None:
        async with connection.execute(statement) as cursor:
            await cursor.fetchall()  # a statement left with rows unread would keep holding its lock

    await pragma(f"PRAGMA busy_timeout={busy_timeout_ms}")
    await pragma("PRAGMA synchronous=FULL")
    # Turning a new database to WAL takes its exclusive lock, and when several connections try at once
    # SQLite can answer some of them "database is locked" whatever busy_timeout says (it does not wait
    # where waiting could deadlock). Such a connection tries again; the mode is the file's, so once one
    # of them has switched, the others' switch is a no-op.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + busy_timeout_ms / 1000
    attempt = 0
    while True:
        try:
            await pragma("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            attempt += 1
            delay = backoff_delay(attempt, first=0.002, maximum=0.1)
            if "locked" not in str(exc) or loop.time() + delay > deadline:
                raise
            await asyncio.sleep(delay)
        else:
            return


# --- the connections of the record operations and the writes ---------------------------------------------
#
# Through SQLAlchemy, each operation checks a connection out of the engine's pool and returns it (with a
# rollback on return), in greenlets, and runs its statements in an execution context: about 0.3 ms, more
# than the database takes to read or write a small record. These operations instead keep a few
# connections of their own and run their statements, compiled once (`DriverStatement`), with the driver
# itself. The connections are made by the engine, with its settings and connect events (SQLite's WAL and
# synchronous=FULL), then detached from its pool, whose size stays the other operations'.


class _Held:
    """A connection made by the engine and detached from its pool, and the driver's connection inside it."""

    __slots__ = ("connection", "driver")

    def __init__(self, connection: sqlalchemy_asyncio.AsyncConnection, driver: Any) -> None:
        self.connection = connection
        self.driver = driver


class _Lender:
    """Up to `limit` connections, made when first needed and kept, each lent to one operation at a time.

    After an operation that failed with one of the `harmless` exceptions (the database refused a
    statement, the caller's own error, a cancellation), the connection is as good as before and is kept;
    after a cancellation, once `settle` has run on it. After any other exception (a lost connection, a
    driver in an unknown state), or when `settle` fails, it is closed and the next operation gets a new
    one; so is one that `usable` rejects, when an operation ends or before one begins (the server closed
    it meanwhile). After `aclose()`, each connection is closed when its operation ends.
    """

    def __init__(
        self,
        engine: sqlalchemy_asyncio.AsyncEngine,
        limit: int,
        *,
        harmless: tuple[type[BaseException], ...],
        usable: Callable[[Any], bool] | None = None,
        terminate: Callable[[Any], object] | None = None,
        settle: Callable[[Any], Awaitable[object]] | None = None,
    ) -> None:
        self._engine = engine
        self._slots = asyncio.Semaphore(limit)
        self._harmless = harmless
        self._usable = usable
        self._terminate = terminate
        self._settle = settle
        self._idle: list[_Held] = []
        self._closed = False

    @contextlib.asynccontextmanager
    async def lend(self) -> AsyncIterator[Any]:
        """The driver's connection, for this caller alone until the block ends."""
        async with self._slots:
            held = await self._take()
            try:
                yield held.driver
            except BaseException as exc:
                if isinstance(exc, self._harmless) and await self._settled(held, exc):
                    await self._give_back(held)
                else:
                    await self._discard(held)
                raise
            await self._give_back(held)

    async def _settled(self, held: _Held, exc: BaseException) -> bool:
        """After a cancellation, whether `settle` brought the connection back to a known state."""
        if self._settle is None or not isinstance(exc, asyncio.CancelledError):
            return True
        try:
            # Shielded, as the task may be cancelled again; the connection is then closed instead.
            await asyncio.shield(self._settle(held.driver))
        except BaseException:  # noqa: BLE001 - whatever went wrong, the connection is closed
            return False
        return True

    async def _take(self) -> _Held:
        while self._idle:
            held = self._idle.pop()
            if self._usable is None or self._usable(held.driver):
                return held
            await self._discard(held)
        connection = await self._engine.connect()
        try:
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            # Out of the pool: it keeps its size for the other operations, and a client that is never closed
            # leaves no checked-out connection behind. Closing `connection` now closes the driver's.
            raw.detach()
        except BaseException:
            await connection.close()
            raise
        return _Held(connection, driver)

    async def _give_back(self, held: _Held) -> None:
        if self._usable is not None and not self._usable(held.driver):
            await self._discard(held)
        elif self._closed:
            await held.connection.close()
        else:
            self._idle.append(held)

    async def _discard(self, held: _Held) -> None:
        if self._terminate is not None:
            self._terminate(held.driver)  # at once, whatever the connection was in the middle of
        # Shielded: closed even when this task is being cancelled; quietly, as the error that got the
        # connection discarded is the one to report.
        with contextlib.suppress(Exception):
            await asyncio.shield(held.connection.close())

    async def aclose(self) -> None:
        """Close the idle connections, and the lent ones when their operations end."""
        self._closed = True
        idle, self._idle = self._idle, []
        for held in idle:
            await held.connection.close()


class DriverTransaction(Protocol):
    """A transaction of `DriverConnections.transaction()`."""

    async def fetch(self, statement: DriverStatement, params: Mapping[str, Any]) -> Sequence[Any] | None:
        """Run `statement` in the transaction; its first row, if any."""


class DriverConnections(ABC):
    """The connections of one client's record reads and writes, which run their statements with the driver.

    Attributes:
        errors: What a failure of the database raises: SQLAlchemy's errors (when a connection is made),
            OSError and the driver's own errors.
    """

    errors: tuple[type[BaseException], ...]

    @abstractmethod
    async def read(self, statement: DriverStatement, params: Mapping[str, Any]) -> Sequence[Any] | None:
        """The first row of a query run outside any transaction: it sees every write that returned before."""

    async def run_alone(self, statement: DriverStatement, params: Mapping[str, Any]) -> Sequence[Any] | None:
        """Run one statement as a transaction of its own, committed when this returns; its first row, if any."""
        async with self.transaction() as transaction:
            return await transaction.fetch(statement, params)

    @abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[DriverTransaction]:
        """A transaction: committed when the block ends, rolled back when it raises.

        Its first statement must be a write, which takes the write lock (SQLite) or locks rows (PostgreSQL):
        SQLite's driver begins the transaction before it.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Close the connections, each one as soon as no operation uses it."""


async def _postgres_fetch(
    connection: Any, statement: DriverStatement, params: Mapping[str, Any]
) -> Sequence[Any] | None:
    row: Sequence[Any] | None = await connection.fetchrow(statement.sql, *statement.arguments(params))
    return row


class _PostgresTransaction:
    def __init__(self, connection: Any) -> None:
        self._connection = connection

    async def fetch(self, statement: DriverStatement, params: Mapping[str, Any]) -> Sequence[Any] | None:
        return await _postgres_fetch(self._connection, statement, params)


class PostgresConnections(DriverConnections):
    """asyncpg connections of the engine, one per operation running: up to 4 operations at once.

    A connection runs outside transactions (asyncpg's autocommit), so a read is one round trip and so is a
    one-statement write, which commits when it returns; `transaction()` is BEGIN ... COMMIT.
    """

    def __init__(self, engine: sqlalchemy_asyncio.AsyncEngine) -> None:
        import asyncpg  # noqa: PLC0415 - the engine has loaded it already

        driver_errors = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)
        self.errors = (*_BACKEND_ERRORS, *driver_errors, TimeoutError)
        self._lender = _Lender(
            engine,
            _POSTGRES_CONNECTIONS,
            # After an error of the server (a failed statement) the connection is idle and usable,
            # `transaction()` having rolled back.
            harmless=(asyncpg.PostgresError, RecoverableError, asyncio.CancelledError),
            # After a cancellation, asyncpg has the server cancel the statement, whose answer may still be on
            # its way: a BEGIN may have begun a transaction the connection does not know of yet. A ROLLBACK
            # runs after that answer, and ends any transaction (it only warns when there is none).
            settle=lambda connection: connection.execute("ROLLBACK"),
            usable=lambda connection: not connection.is_closed() and not connection.is_in_transaction(),
            terminate=lambda connection: connection.terminate(),
        )

    @override
    async def read(self, statement: DriverStatement, params: Mapping[str, Any]) -> Sequence[Any] | None:
        async with self._lender.lend() as connection:
            return await _postgres_fetch(connection, statement, params)

    @override
    async def run_alone(self, statement: DriverStatement, params: Mapping[str, Any]) -> Sequence[Any] | None:
        # In autocommit mode one statement is its own transaction: atomic, and durable when it returns.
        return await self.read(statement, params)

    @override
    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[DriverTransaction]:
        # Plain statements, not asyncpg's `transaction()`: a BEGIN of that one cancelled on its way leaves
        # the connection sure it is in a transaction, and the connection's next one would be a SAVEPOINT.
        async with self._lender.lend() as connection:
            await connection.execute("BEGIN")
            try:
                yield _PostgresTransaction(connection)
            except asyncio.CancelledError:
                raise  # the lender's settle rolls back, after the cancelled statement's answer
            except BaseException:
                try:
                    await connection.execute("ROLLBACK")
                except Exception:  # noqa: BLE001 - the error to report is the one above
                    connection.terminate()  # in an unknown state: the lender closes it
                raise
            await connection.execute("COMMIT")

    @override
    async def aclose(self) -> None:
        await self._lender.aclose()


async def _sqlite_fetch(connection: Any, statement: DriverStatement, params: Mapping[str, Any]) -> Sequence[Any] | None:
    # One hop to the connection's thread: run, and fetch every row, which ends the statement.
    rows: list[Sequence[Any]] = list(await connection.execute_fetchall(statement.sql, statement.arguments(params)))
    return rows[0] if rows else None


class _SqliteTransaction:
    def __init__(self, connection: Any, *, begun: bool) -> None:
        self._connection = connection
        self._begun = begun

    async def fetch(self, statement: DriverStatement, params: Mapping[str, Any]) -> Sequence[Any] | None:
        row = await _sqlite_fetch(self._connection, statement, params)
        if not self._begun:
            # The driver began the transaction before this first statement, as it does before a write only.
            if not self._connection.in_transaction:
                raise RuntimeError("the first statement of a SQLite transaction must be a write")
            self._begun = True
        return row


class SqliteConnections(DriverConnections):
    """Two aiosqlite connections of the engine: one for the writes, one for the reads.

    SQLite runs one write transaction at a time, so the writes of a client take turns on one connection
    (other clients and processes wait in SQLite's busy handler). The reads have their own connection: on
    the writer's, they would see its open transaction.
    """

    errors = (*_BACKEND_ERRORS, sqlite3.Error)

    def __init__(self, engine: sqlalchemy_asyncio.AsyncEngine) -> None:
        # A cancelled operation leaves the connection sound: aiosqlite runs every call queued before the
        # cancellation, and a transaction's rollback is queued before it is awaited.
        harmless = (sqlite3.Error, RecoverableError, asyncio.CancelledError)
        self._writer = _Lender(engine, 1, harmless=harmless)
        self._reader = _Lender(engine, 1, harmless=harmless)

    @override
    async def read(self, statement: DriverStatement, params: Mapping[str, Any]) -> Sequence[Any] | None:
        # The driver begins no transaction for a SELECT: each query reads the latest commit.
        async with self._reader.lend() as connection:
            return await _sqlite_fetch(connection, statement, params)

    @override
    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[DriverTransaction]:
        async with self._writer.lend() as connection:
            try:
                # By default the driver begins the transaction itself, before the first write: one hop to the
                # connection's thread less. In its autocommit mode (isolation_level None), it is begun here.
                begun = connection.isolation_level is None
                if begun:
                    await connection.execute_fetchall("BEGIN IMMEDIATE")
                yield _SqliteTransaction(connection, begun=begun)
                await connection.commit()
            except BaseException:
                # Queued on the connection's thread before this task can be cancelled again: it runs before
                # anything the next writer sends.
                await connection.rollback()
                raise

    @override
    async def aclose(self) -> None:
        await self._writer.aclose()
        await self._reader.aclose()
