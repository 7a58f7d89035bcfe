"""Database errors turned into `StorageBackendError`, with the database named and no password shown."""

from __future__ import annotations

import sqlite3

from recoverable.errors import StorageBackendError, StoreLockedError
from recoverable.storages._lock_holders import describe_holder, lock_holders
from recoverable.storages._sql._dependency import sqlalchemy_exc

__all__ = ["BACKEND_ERRORS", "DatabaseInfo", "backend_error"]

BACKEND_ERRORS = (sqlalchemy_exc.SQLAlchemyError, OSError)
"""What a failure of the database raises through SQLAlchemy."""

_MAX_CAUSE_CHARS = 500
_MAX_KEY_CHARS = 80


class DatabaseInfo:
    """How messages name a database (its URL without the password), and the password they must never show.

    Args:
        description: The URL without the password.
        password: The password, if any.
        sqlite_file: The path of a SQLite database, whose locks are looked at when a write waited too long.
        lock_timeout_secs: How long a write of a SQLite database waits for its write lock.
    """

    def __init__(
        self, description: str, password: str | None, *, sqlite_file: str | None = None, lock_timeout_secs: float = 0
    ) -> None:
        self.description = description
        self._password = password or None
        self.sqlite_file = sqlite_file
        self.lock_timeout_secs = lock_timeout_secs

    def scrub(self, text: str) -> str:
        """`text` with the password replaced by `***`."""
        return text.replace(self._password, "***") if self._password else text


def _cause(exc: BaseException) -> str:
    # SQLAlchemy's own text repeats the statement; the driver's error says what went wrong.
    if isinstance(exc, sqlalchemy_exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def backend_error(
    database: DatabaseInfo, action: str, exc: BaseException, *, store: str | None = None, key: str | None = None
) -> StorageBackendError:
    """Wrap a failure of the database: what was being done, to which store and key, where, and why."""
    what = ""
    if key is not None:
        shown = key if len(key) <= _MAX_KEY_CHARS else key[:_MAX_KEY_CHARS] + "..."
        what += f" record {shown!r} of"
    if store is not None:
        what += f" key-value store {store!r}"
    cause = database.scrub(_cause(exc))[:_MAX_CAUSE_CHARS]
    if database.sqlite_file is not None and _sqlite_locked(exc):
        return _locked_error(database, database.sqlite_file, action, what, store=store, key=key)
    return StorageBackendError(
        f"could not {action}{what} in {database.description}: {cause} "
        "(check that the database is running, reachable and accepts the client's credentials)",
        store=store,
        key=key,
    )


def _sqlite_locked(exc: BaseException) -> bool:
    if isinstance(exc, sqlalchemy_exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    return isinstance(exc, sqlite3.OperationalError) and "database is locked" in str(exc)


def _locked_error(
    database: DatabaseInfo, path: str, action: str, what: str, *, store: str | None, key: str | None
) -> StoreLockedError:
    """SQLite's busy handler gave up: name the process holding the database's write lock."""
    # In WAL mode the writer holds a lock on the -shm file; in the other modes, on the database file.
    holders = lock_holders([path, path + "-shm"], kind="POSIX")
    holder = min(holders) if holders else None
    who, todo = describe_holder(holder)
    return StoreLockedError(
        f"could not {action}{what} in {database.description}: its write lock was held by {who} for longer than "
        f"{database.lock_timeout_secs:g} s; nothing was written. {todo[0].upper()}{todo[1:]}; if its writes are "
        "just slow, raise lock_timeout= of SqlStorageClient",
        store=store,
        key=key,
        holder_pid=holder,
    )
