"""Database errors turned into `StorageBackendError`, with the database named and no password shown."""

from __future__ import annotations

from recoverable.errors import StorageBackendError
from recoverable.storages._sql._dependency import sqlalchemy_exc

__all__ = ["DatabaseInfo", "backend_error"]

_MAX_CAUSE_CHARS = 500
_MAX_KEY_CHARS = 80


class DatabaseInfo:
    """How messages name a database (its URL without the password), and the password they must never show."""

    def __init__(self, description: str, password: str | None) -> None:
        self.description = description
        self._password = password or None

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
    return StorageBackendError(
        f"could not {action}{what} in {database.description}: {cause} "
        "(check that the database is running, reachable and accepts the client's credentials)",
        store=store,
        key=key,
    )
