"""The connections of a SQL storage client's record reads and writes, which run their statements with the driver.

Through SQLAlchemy, each operation checks a connection out of the engine's pool and returns it (with a
rollback on return), in greenlets, and runs its statements in an execution context: about 0.3 ms, more
than the database takes to read or write a small record. These operations instead keep a few
connections of their own and run their statements, compiled once (`DriverStatement`), with the driver
itself. The connections are made by the engine, with its settings and connect events (SQLite's WAL and
synchronous=FULL), then detached from its pool, whose size stays the other operations'.

They are kept in a pool of this module rather than a library's, as the libraries' cost more per
operation. Against the bare driver (benchmarks/bench_redis_sql.py, small-record reads, medians of 4 runs
on a loaded 2-core machine), this pool's reads cost 1.35x (PostgreSQL and SQLite); asyncpg's own pool
(`create_pool` with no reset query and no idle expiry) 1.86x, its release running in a task of its own;
a SQLAlchemy queue pool without reset on return or pre-ping 2.0-2.5x (PostgreSQL) and 2.8-3.2x (SQLite),
each checkout running in a greenlet of its own. aiosqlite has no pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Protocol

from typing_extensions import override

from recoverable.errors import RecoverableError
from recoverable.storages._sql._errors import BACKEND_ERRORS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

    from recoverable.storages._sql._dependency import sqlalchemy_asyncio
    from recoverable.storages._sql._statements import DriverStatement

__all__ = ["DriverConnections", "DriverTransaction", "PostgresConnections", "SqliteConnections"]

# The PostgreSQL connections of a client's record operations and writes: as many of them run at once.
_POSTGRES_CONNECTIONS = 4


class _DetachedConnection:
    """A connection made by the engine and detached from its pool, and the driver's connection inside it."""

    __slots__ = ("driver_connection", "engine_connection")

    def __init__(self, engine_connection: sqlalchemy_asyncio.AsyncConnection, driver_connection: Any) -> None:
        self.engine_connection = engine_connection
        self.driver_connection = driver_connection


class _DriverConnectionPool:
    """Up to `limit` driver connections made by the engine when first needed, each used by one operation at a time.

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
        self._idle: list[_DetachedConnection] = []
        self._closed = False

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        """The driver's connection, for this caller alone until the block ends."""
        async with self._slots:
            pooled = await self._checkout()
            try:
                yield pooled.driver_connection
            except BaseException as exc:
                if isinstance(exc, self._harmless) and await self._settled(pooled, exc):
                    await self._checkin(pooled)
                else:
                    await self._discard(pooled)
                raise
            await self._checkin(pooled)

    async def _settled(self, pooled: _DetachedConnection, exc: BaseException) -> bool:
        """After a cancellation, whether `settle` brought the connection back to a known state."""
        if self._settle is None or not isinstance(exc, asyncio.CancelledError):
            return True
        try:
            # Shielded, as the task may be cancelled again; the connection is then closed instead.
            await asyncio.shield(self._settle(pooled.driver_connection))
        except BaseException:  # noqa: BLE001 - whatever went wrong, the connection is closed
            return False
        return True

    async def _checkout(self) -> _DetachedConnection:
        while self._idle:
            pooled = self._idle.pop()
            if self._usable is None or self._usable(pooled.driver_connection):
                return pooled
            await self._discard(pooled)
        connection = await self._engine.connect()
        try:
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            # Out of the engine's pool: it keeps its size for the other operations, and a client that is never
            # closed leaves no checked-out connection behind. Closing `connection` now closes the driver's.
            raw.detach()
        except BaseException:
            await connection.close()
            raise
        return _DetachedConnection(connection, driver)

    async def _checkin(self, pooled: _DetachedConnection) -> None:
        if self._usable is not None and not self._usable(pooled.driver_connection):
            await self._discard(pooled)
        elif self._closed:
            await pooled.engine_connection.close()
        else:
            self._idle.append(pooled)

    async def _discard(self, pooled: _DetachedConnection) -> None:
        if self._terminate is not None:
            self._terminate(pooled.driver_connection)  # at once, whatever the connection was in the middle of
        # Shielded: closed even when this task is being cancelled; quietly, as the error that got the
        # connection discarded is the one to report.
        with contextlib.suppress(Exception):
            await asyncio.shield(pooled.engine_connection.close())

    async def aclose(self) -> None:
        """Close the idle connections, and the others when their operations end."""
        self._closed = True
        idle, self._idle = self._idle, []
        for pooled in idle:
            await pooled.engine_connection.close()


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
        self.errors = (*BACKEND_ERRORS, *driver_errors, TimeoutError)
        self._pool = _DriverConnectionPool(
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
        async with self._pool.acquire() as connection:
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
        async with self._pool.acquire() as connection:
            await connection.execute("BEGIN")
            try:
                yield _PostgresTransaction(connection)
            except asyncio.CancelledError:
                raise  # the pool's settle rolls back, after the cancelled statement's answer
            except BaseException:
                try:
                    await connection.execute("ROLLBACK")
                except Exception:  # noqa: BLE001 - the error to report is the one above
                    connection.terminate()  # in an unknown state: the pool closes it
                raise
            await connection.execute("COMMIT")

    @override
    async def aclose(self) -> None:
        await self._pool.aclose()


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

    errors = (*BACKEND_ERRORS, sqlite3.Error)

    def __init__(self, engine: sqlalchemy_asyncio.AsyncEngine) -> None:
        # A cancelled operation leaves the connection sound: aiosqlite runs every call queued before the
        # cancellation, and a transaction's rollback is queued before it is awaited.
        harmless = (sqlite3.Error, RecoverableError, asyncio.CancelledError)
        self._writer = _DriverConnectionPool(engine, 1, harmless=harmless)
        self._reader = _DriverConnectionPool(engine, 1, harmless=harmless)

    @override
    async def read(self, statement: DriverStatement, params: Mapping[str, Any]) -> Sequence[Any] | None:
        # The driver begins no transaction for a SELECT: each query reads the latest commit.
        async with self._reader.acquire() as connection:
            return await _sqlite_fetch(connection, statement, params)

    @override
    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[DriverTransaction]:
        async with self._writer.acquire() as connection:
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
