"""How messages name a database, without its password, and the failures of the database (see `_backend_errors`)."""

from __future__ import annotations

import functools
import sqlite3

from recoverable.errors import StoreLockedError
from recoverable.storages._backend_errors import Backend
from recoverable.storages._lock_holders import describe_holder, lock_holders
from recoverable.storages._sql._dependency import sqlalchemy_exc

__all__ = ["BACKEND_ERRORS", "database_backend"]

BACKEND_ERRORS = (sqlalchemy_exc.SQLAlchemyError, OSError)
"""What a failure of the database raises through SQLAlchemy."""


def database_backend(
    description: str,
    password: str | None,
    *,
    failures: tuple[type[BaseException], ...],
    sqlite_file: str | None = None,
    lock_timeout_secs: float = 0,
) -> Backend:
    """A database as the one error mapping of the storage clients sees it.

    Args:
        description: The database URL without the password.
        password: The password, which messages never show.
        failures: What a failure of the database raises: `BACKEND_ERRORS` and the driver's own errors.
        sqlite_file: The path of a SQLite database, whose locks are looked at when a write waited too long.
        lock_timeout_secs: How long a write of that SQLite database waits for its write lock.
    """
    special = None
    if sqlite_file is not None:
        special = functools.partial(
            _sqlite_locked_error, description=description, path=sqlite_file, lock_timeout_secs=lock_timeout_secs
        )
    return Backend(
        where=f"in {description}",
        hint="check that the database is running, reachable and accepts the client's credentials",
        failures=failures,
        secrets=[password],
        cause=_cause,
        special=special,
    )


def _driver_error(exc: BaseException) -> BaseException:
    # SQLAlchemy's own text repeats the statement; the driver's error says what went wrong.
    if isinstance(exc, sqlalchemy_exc.DBAPIError) and exc.orig is not None:
        return exc.orig
    return exc


def _cause(exc: BaseException) -> str:
    exc = _driver_error(exc)
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _sqlite_locked_error(
    exc: BaseException,
    action: str,
    what: str,
    store: str | None,
    key: str | None,
    *,
    description: str,
    path: str,
    lock_timeout_secs: float,
) -> StoreLockedError | None:
    """When SQLite's busy handler gave up: the error naming the process holding the database's write lock."""
    driver_error = _driver_error(exc)
    if not isinstance(driver_error, sqlite3.OperationalError) or "database is locked" not in str(driver_error):
        return None
    # In WAL mode the writer holds a lock on the -shm file; in the other modes, on the database file.
    holders = lock_holders([path, path + "-shm"], kind="POSIX")
    holder = min(holders) if holders else None
    who, todo = describe_holder(holder)
    return StoreLockedError(
        f"could not {action}{what} in {description}: its write lock was held by {who} for longer than "
        f"{lock_timeout_secs:g} s; nothing was written. {todo[0].upper()}{todo[1:]}; if its writes are "
        "just slow, raise lock_timeout= of SqlStorageClient",
        store=store,
        key=key,
        holder_pid=holder,
    )
