"""Key-value stores: the `KeyValueStore` facade and the storage clients it runs on.

`KeyValueStore` turns Python values into bytes and back (see `recoverable.storages._serialization` for
the table of types); a storage client keeps bytes, content types and versions:

- `FileSystemStorageClient`: folders on local disk, the default.
- `MemoryStorageClient`: a dict of this process, for tests and runs that need no recovery.
- `RedisStorageClient`: a Redis server or cluster, shared by processes and machines (`recoverable[redis]`).
- `SqlStorageClient`: SQLite (embedded) or PostgreSQL (shared) through SQLAlchemy (`recoverable[sql]`).
- `HttpStorageClient`: stores on a key-value store API v2 server, `recoverable serve` or the Apify platform.

Every client implements the small async ABC `StorageClient` / `KeyValueStoreClient`.
"""

from typing import TYPE_CHECKING

from recoverable.storages._base import KeyValueStoreClient, StorageClient
from recoverable.storages._file_system import FileSystemStorageClient
from recoverable.storages._http import HttpStorageClient
from recoverable.storages._key_value_store import KeyValueStore, default_storage_client
from recoverable.storages._memory import MemoryStorageClient
from recoverable.storages._models import KeyInfo, KeyValueStoreMetadata, Record, StoredRecord
from recoverable.storages._registry import optional_clients as _optional_clients
from recoverable.storages._validation import MAX_KEY_LENGTH, MAX_NAME_LENGTH

if TYPE_CHECKING:
    # Imported on first use by __getattr__ below, so that `recoverable` never needs redis or SQLAlchemy.
    from recoverable.storages._redis import RedisStorageClient
    from recoverable.storages._sql import SqlStorageClient

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_NAME_LENGTH",
    "FileSystemStorageClient",
    "HttpStorageClient",
    "KeyInfo",
    "KeyValueStore",
    "KeyValueStoreClient",
    "KeyValueStoreMetadata",
    "MemoryStorageClient",
    "Record",
    "RedisStorageClient",
    "SqlStorageClient",
    "StorageClient",
    "StoredRecord",
    "default_storage_client",
]

_OPTIONAL_CLIENTS = {name: backend.package for name, backend in _optional_clients().items()}
"""The storage clients that need an extra, and the package each needs (from the one registry of backends)."""


def _without_missing_clients(names: list[str]) -> None:
    """Leave out of a star import the optional clients whose package is missing (found without importing it).

    `from ... import *` fetches every name in `__all__`, and one such client would fail the whole import.
    """
    for name, backend in _optional_clients().items():
        if name in names and not backend.installed():
            names.remove(name)


_without_missing_clients(__all__)


def __getattr__(name: str) -> object:
    """Import the optional storage clients on first use; a missing package raises MissingDependencyError."""
    backend = _optional_clients().get(name)
    if backend is not None:
        return backend.client_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
