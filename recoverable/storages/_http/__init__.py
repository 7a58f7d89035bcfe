"""Storage client that keeps stores on a key-value store API v2 server: `recoverable serve` or the Apify platform."""

from recoverable.storages._http._storage_client import HttpStorageClient

__all__ = ["HttpStorageClient"]
