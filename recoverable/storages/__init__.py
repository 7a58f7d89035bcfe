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

import importlib.util
from typing import TYPE_CHECKING

from recoverable.storages._base import KeyValueStoreClient, StorageClient
from recoverable.storages._file_system import FileSystemStorageClient
from recoverable.storages._http import HttpStorageClient
from recoverable.storages._key_value_store import KeyValueStore, default_storage_client
from recoverable.storages._memory import MemoryStorageClient
from recoverable.storages._models import KeyInfo, KeyValueStoreMetadata, Record, StoredRecord
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

_OPTIONAL_CLIENTS = {"RedisStorageClient": "redis", "SqlStorageClient": "sqlalchemy"}
"""The storage clients that need an extra, and the package each needs."""


def _without_missing_clients(names: list[str]) -> None:
    """Leave out of a star import the optional clients whose package is missing (found without importing it).

    `from ... import *` fetches every name in `__all__`, and one such client would fail the whole import.
    """
    for name, package in _OPTIONAL_CLIENTS.items():
        if name in names and importlib.util.find_spec(package) is None:
            names.remove(name)


_without_missing_clients(__all__)


def __getattr__(name: str) -> object:
    """Import the optional storage clients on first use; a missing package raises MissingDependencyError."""
    if name == "RedisStorageClient":
        from recoverable.storages._redis import RedisStorageClient  # noqa: PLC0415

        return RedisStorageClient
    if name == "SqlStorageClient":
        from recoverable.storages._sql import SqlStorageClient  # noqa: PLC0415

        return SqlStorageClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
