"""Storage client that keeps stores as folders on local disk."""

from recoverable.storages._file_system._storage_client import FileSystemStorageClient

__all__ = ["FileSystemStorageClient"]
