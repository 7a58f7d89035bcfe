"""The one place where errors of a backend (OSError, redis, SQLAlchemy, a driver) become the library's own.

Every storage client describes its backend once (`Backend`: where it is, the secrets its messages must never
show, which exceptions are its failures) and wraps each operation in `backend.mapped(action, store=, key=)`.
A failure leaves as `StorageBackendError` (or a more precise error the backend picks: `StoreLockedError`,
or `StoreNotFoundError` when the store itself is gone) saying what was being done, to which store and
record, where, why, and what to check; the library's own errors pass through untouched.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from recoverable.errors import RecoverableError, StorageBackendError, StorageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = ["Backend", "shown_key"]

MAX_CAUSE_CHARS = 500
"""The longest cause a message quotes: a driver's error can repeat a whole statement or value."""

MAX_KEY_CHARS = 80
"""The longest record key a message quotes in full (keys may be 1024 characters)."""


def shown_key(key: str) -> str:
    """A record key as messages quote it: in full, or its first `MAX_KEY_CHARS` characters and `...`."""
    return key if len(key) <= MAX_KEY_CHARS else key[:MAX_KEY_CHARS] + "..."


def _record_of_store(store: str | None, key: str | None) -> str:
    what = ""
    if key is not None:
        what += f" record {shown_key(key)!r} of"
    if store is not None:
        what += f" key-value store {store!r}"
    return what


class Backend:
    """How one storage client's backend is named in messages, and which of its exceptions are failures.

    Args:
        where: Where the backend is, as messages say it after the action: "in /data/storage",
            "on Redis at redis://localhost:6379/0", "in postgresql+asyncpg://user@db/state".
        hint: What to check when an operation failed, e.g. "check that the server is running"; or a function
            giving it for the failure (a full disk asks for space, not for permissions).
        failures: The exception types that are failures of the backend; others propagate unchanged.
        secrets: Texts never shown in a message (passwords): replaced by `***`.
        cause: How an exception is quoted (default: its type and text); a driver's error wrapped in
            another library's may be better quoted from inside.
        special: A more precise error for some failures (a lock held too long, a store that is gone), or None
            to use `StorageBackendError`. Called with the failure, the action and the store and key text.
    """

    def __init__(
        self,
        *,
        where: str,
        hint: str | Callable[[BaseException], str],
        failures: tuple[type[BaseException], ...],
        secrets: Sequence[str | None] = (),
        cause: Callable[[BaseException], str] | None = None,
        special: Callable[[BaseException, str, str, str | None, str | None], StorageError | None] | None = None,
    ) -> None:
        self.where = where
        self.hint = hint
        self.failures = failures
        self._secrets = [s for s in secrets if s]
        self._cause = cause or (lambda exc: f"{type(exc).__name__}: {str(exc).strip() or type(exc).__name__}")
        self._special = special

    def scrub(self, text: str) -> str:
        """`text` with every secret of the backend replaced by `***`."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def error(
        self, action: str, exc: BaseException, *, store: str | None = None, key: str | None = None
    ) -> StorageError:
        """The library's error for a failure of the backend: what was being done, to what, where, why."""
        what = _record_of_store(store, key)
        special = self._special(exc, action, what, store, key) if self._special is not None else None
        if special is not None:
            return special
        cause = self.scrub(self._cause(exc))[:MAX_CAUSE_CHARS]
        hint = self.hint if isinstance(self.hint, str) else self.hint(exc)
        return StorageBackendError(
            f"could not {action}{what} {self.where}: {cause} ({hint})",
            store=store,
            key=key,
        )

    @contextlib.contextmanager
    def mapped(self, action: str, *, store: str | None = None, key: str | None = None) -> Iterator[None]:
        """Raise the backend's failures inside the block as the library's error (see `error`).

        The library's own errors (a version conflict, a refused key) pass through untouched, as does any
        exception that is not one of `failures`.
        """
        try:
            yield
        except RecoverableError:
            raise
        except self.failures as exc:
            raise self.error(action, exc, store=store, key=key) from exc
