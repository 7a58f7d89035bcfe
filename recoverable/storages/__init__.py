"""Key-value stores: the `KeyValueStore` facade and the storage clients it runs on.

`KeyValueStore` turns Python values into bytes and back (see `recoverable.storages._serialization` for
the table of types); a storage client keeps bytes, content types and versions:

- `FileSystemStorageClient`: folders on local disk, the default.
- `MemoryStorageClient`: a dict of this process, for tests and runs that need no recovery.

Every client implements the small async ABC `StorageClient` / `KeyValueStoreClient`.
"""

from recoverable.storages._base import KeyValueStoreClient, StorageClient
from recoverable.storages._file_system import FileSystemStorageClient
from recoverable.storages._key_value_store import KeyValueStore, default_storage_client
from recoverable.storages._memory import MemoryStorageClient
from recoverable.storages._models import KeyInfo, KeyValueStoreMetadata, Record, StoredRecord
from recoverable.storages._validation import MAX_KEY_LENGTH, MAX_NAME_LENGTH

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_NAME_LENGTH",
    "FileSystemStorageClient",
    "KeyInfo",
    "KeyValueStore",
    "KeyValueStoreClient",
    "KeyValueStoreMetadata",
    "MemoryStorageClient",
    "Record",
    "StorageClient",
    "StoredRecord",
    "default_storage_client",
]
