"""Storage client that keeps stores in SQLite or PostgreSQL; needs `pip install 'recoverable[sql]'`."""

from recoverable.storages._sql._storage_client import SqlStorageClient

__all__ = ["SqlStorageClient"]
