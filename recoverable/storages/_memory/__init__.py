"""Storage client that keeps stores in this process's memory."""

from recoverable.storages._memory._storage_client import MemoryStorageClient

__all__ = ["MemoryStorageClient"]
