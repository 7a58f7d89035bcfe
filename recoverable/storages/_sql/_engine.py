"""The SQLAlchemy engine of a SQL storage client: its URL checked, SQLite's file and pragmas, PostgreSQL's settings.

SQLite connections are set up as each one is made (the engine's connect event): WAL mode, `synchronous=FULL`,
`busy_timeout` from `lock_timeout`. PostgreSQL connections carry `idle_in_transaction_session_timeout`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
from typing import TYPE_CHECKING, Any, cast

from recoverable._backoff import backoff_delay
from recoverable.errors import ConfigurationError, MissingDependencyError
from recoverable.storages._sql._dependency import INSTALL_HINT, sqlalchemy, sqlalchemy_asyncio, sqlalchemy_exc

if TYPE_CHECKING:
    from datetime import timedelta

    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["ASYNC_DRIVERS", "check_engine", "create_engine"]

ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
"""The databases the SQL storage client supports, and the asyncio driver it runs each one with."""


def check_engine(engine: sqlalchemy_asyncio.AsyncEngine) -> None:
    """Refuse an engine given by the caller that runs another database or driver, or an in-memory SQLite."""
    if engine.dialect.name not in ASYNC_DRIVERS:
        raise ConfigurationError(
            f"SqlStorageClient supports SQLite and PostgreSQL, not {engine.dialect.name} (the given engine)"
        )
    if engine.dialect.driver != ASYNC_DRIVERS[engine.dialect.name]:
        raise ConfigurationError(
            f"SqlStorageClient runs {engine.dialect.name} with the {ASYNC_DRIVERS[engine.dialect.name]} "
            f"driver, not {engine.dialect.driver} (the given engine)"
        )
    if engine.dialect.name == "sqlite":
        # The client's own connections would each open another, empty, in-memory database.
        _reject_memory_sqlite(engine.url, "the given engine")


def create_engine(url: str, lock_timeout: timedelta) -> sqlalchemy_asyncio.AsyncEngine:
    """An engine for `url` (SQLite or PostgreSQL, with its asyncio driver), set up for `lock_timeout`."""
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
    if backend not in ASYNC_DRIVERS:
        raise ConfigurationError(f"SqlStorageClient supports SQLite and PostgreSQL, not {backend!r} ({shown})")
    if driver and driver != ASYNC_DRIVERS[backend]:
        raise ConfigurationError(
            f"SqlStorageClient runs {backend} with the {ASYNC_DRIVERS[backend]} driver, not {driver} ({shown}): "
            f"use {backend}+{ASYNC_DRIVERS[backend]}:// or {backend}://"
        )
    parsed = parsed.set(drivername=f"{backend}+{ASYNC_DRIVERS[backend]}")
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
