"""Fixtures of the file-system-specific tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from recoverable.storages import FileSystemStorageClient, StorageClient
from recoverable.storages._file_system import _store_dir

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path


@pytest.fixture
def storage_dir(tmp_path: Path) -> Path:
    """The root folder of the storage client under test."""
    return tmp_path / "storage"


@pytest.fixture
def stores_dir(storage_dir: Path) -> Path:
    """Where the store folders are."""
    return storage_dir / "key_value_stores"


@pytest.fixture
async def storage_client(storage_dir: Path) -> AsyncIterator[StorageClient]:
    """A file system storage client on `storage_dir` (replaces the parametrised one of the parent folder)."""
    async with FileSystemStorageClient(storage_dir=storage_dir) as client:
        yield client


@pytest.fixture
def restart(storage_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], FileSystemStorageClient]:
    """Return a new client on `storage_dir` that shares nothing with the earlier ones, as after a restart."""

    def new_client() -> FileSystemStorageClient:
        # Clients of one process share one index per folder; a new process starts without any.
        monkeypatch.setattr(_store_dir, "_registry", {})
        return FileSystemStorageClient(storage_dir=storage_dir)

    return new_client
