"""The small async interface every storage client implements."""

from recoverable.storages._base._key_value_store_client import KeyValueStoreClient
from recoverable.storages._base._storage_client import StorageClient

__all__ = ["KeyValueStoreClient", "StorageClient"]
