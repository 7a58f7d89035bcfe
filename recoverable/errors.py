"""The exceptions of `recoverable`: one root, one tree.

Every error the library raises derives from `RecoverableError`, so `except RecoverableError` catches
all of them. Errors of a backend (OSError, httpx, redis, SQLAlchemy) never leak raw: they are wrapped
in `StorageBackendError` with the store, the key and the cause in the message, the original error
kept as `__cause__`.

```
RecoverableError
├── ConfigurationError              a setting or an argument combination is wrong (also a ValueError)
├── MissingDependencyError          an optional backend's package is not installed
├── StorageError                    anything a key-value store refused or failed to do
│   ├── InvalidStoreNameError       a store id, name or alias breaks its rules (also a ValueError)
│   ├── InvalidKeyError             a record key is empty, too long or not a str (also a ValueError)
│   ├── StoreNotFoundError          no store has the id that was asked for
│   ├── VersionConflictError        a conditional write lost: someone else wrote in between
│   ├── SerializationError          a value cannot be turned into bytes (also a TypeError)
│   ├── DeserializationError        stored bytes cannot be read back as their content type
│   └── StorageBackendError         the backend failed (disk, network, database); cause attached
│       └── StoreLockedError        another process kept the store's writers' lock past the timeout
└── StateError                      RecoverableState was misused or its record is unusable
    ├── StateNotInitializedError    persist/read before initialize()
    ├── StateValidationError        the saved record does not fit the model, or is not JSON
    ├── StateTimeoutError           a load or a save took longer than its timeout
    ├── StateOwnershipError         another process owns the state (its lease is alive)
    └── StateHistoryError           a saved version asked for is not kept in the state's history
```
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DeserializationError",
    "InvalidKeyError",
    "InvalidStoreNameError",
    "MissingDependencyError",
    "RecoverableError",
    "SerializationError",
    "StateError",
    "StateHistoryError",
    "StateNotInitializedError",
    "StateOwnershipError",
    "StateTimeoutError",
    "StateValidationError",
    "StorageBackendError",
    "StorageError",
    "StoreLockedError",
    "StoreNotFoundError",
    "VersionConflictError",
]


class RecoverableError(Exception):
    """The root of every exception raised by `recoverable`."""


class ConfigurationError(RecoverableError, ValueError):
    """A setting (argument or RECOVERABLE_* environment variable) is invalid or contradicts another.

    Also a `ValueError`, as Crawlee raises for the same mistakes (more than one of id, name and alias).
    """


class MissingDependencyError(RecoverableError, ImportError):
    """An optional dependency is not installed; the message gives the `pip install` command to run."""


class StorageError(RecoverableError):
    """A key-value store refused or failed an operation.

    Attributes:
        store: The id or name of the store involved, when known.
        key: The record key involved, when there is one.
    """

    def __init__(self, message: str, *, store: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.store = store
        self.key = key


class InvalidStoreNameError(StorageError, ValueError):
    """A store id, name or alias breaks its rules; nothing was opened or created."""


class InvalidKeyError(StorageError, ValueError):
    """A record key is not a non-empty str within the length limit."""


class StoreNotFoundError(StorageError):
    """No key-value store has the requested id."""


class VersionConflictError(StorageError):
    """A conditional write or delete lost: the record's version is not the one the caller expected.

    Attributes:
        expected: The version the caller passed (`None` when the caller required the record to be absent).
        actual: The version found in the store (`None` when the record does not exist).
    """

    def __init__(
        self,
        message: str,
        *,
        store: str | None = None,
        key: str | None = None,
        expected: str | None = None,
        actual: str | None = None,
    ) -> None:
        super().__init__(message, store=store, key=key)
        self.expected = expected
        self.actual = actual

    @classmethod
    def for_record(cls, *, store: str, key: str, expected: str | None, actual: str | None) -> VersionConflictError:
        """The error of a write whose condition failed, worded the same by every storage client.

        Args:
            store: The name or id of the store.
            key: The record key.
            expected: The version the write required; None when it required the record to be absent.
            actual: The version found; None when there is no record.
        """
        if expected is None:
            reason = f"already exists (version {actual}); it was required to be absent"
        else:
            reason = f"has version {actual}, not {expected}: someone else wrote it in between; read it again and retry"
        return cls(
            f"record {key!r} of key-value store {store!r} {reason}",
            store=store,
            key=key,
            expected=expected,
            actual=actual,
        )


class SerializationError(StorageError, TypeError):
    """A value cannot be serialised to bytes for its content type; nothing was written."""


class DeserializationError(StorageError):
    """The bytes of a stored record cannot be decoded as its content type says they should."""


class StorageBackendError(StorageError):
    """The storage backend failed (file system, network, database). The cause is `__cause__`."""


class StoreLockedError(StorageBackendError):
    """Another process held the store's writers' lock for longer than the client waits for it.

    Only the file system storage client has such a lock. Nothing was written.

    Attributes:
        holder_pid: The process holding the lock, when it could be found out.
    """

    def __init__(
        self, message: str, *, store: str | None = None, key: str | None = None, holder_pid: int | None = None
    ) -> None:
        super().__init__(message, store=store, key=key)
        self.holder_pid = holder_pid


class StateError(RecoverableError):
    """RecoverableState was used wrongly or cannot use its saved record."""


class StateNotInitializedError(StateError, RuntimeError):
    """The state was used before `initialize()`; a RuntimeError too, as Crawlee raises."""


class StateValidationError(StateError):
    """The saved record exists but cannot become the model: invalid JSON or failed validation.

    The record is left untouched in the store. Attributes name where it is and what is wrong.

    Attributes:
        store: The id or name of the store holding the record.
        key: The key of the record.
        errors: Pydantic's error list (`loc`, `msg`, `type` for each failing field), empty for invalid JSON.
    """

    def __init__(
        self,
        message: str,
        *,
        store: str,
        key: str,
        errors: list[dict[str, object]] | None = None,
    ) -> None:
        super().__init__(message)
        self.store = store
        self.key = key
        self.errors = errors or []


class StateTimeoutError(StateError, TimeoutError):
    """Loading or saving the state took longer than its timeout."""


class StateOwnershipError(StateError):
    """Another process holds the lease on this state.

    Attributes:
        owner: A description of the current owner (process id, host, lease expiry), when known.
    """

    def __init__(self, message: str, *, owner: str | None = None) -> None:
        super().__init__(message)
        self.owner = owner


class StateHistoryError(StateError):
    """A saved version that was asked for is not kept in the state's history (or the state keeps none).

    Attributes:
        key: The key of the state.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
