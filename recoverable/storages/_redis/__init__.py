"""Storage client that keeps stores in Redis; needs `pip install 'recoverable[redis]'`."""

from recoverable.storages._redis._storage_client import RedisStorageClient

__all__ = ["RedisStorageClient"]
