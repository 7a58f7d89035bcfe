"""The storage clients every conformance test runs against.

Adding a backend means adding one entry to `STORAGE_CLIENTS` (a name and an async factory).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from recoverable.storages import FileSystemStorageClient, MemoryStorageClient, StorageClient

Factory = Callable[[Path], Awaitable[StorageClient]]


async def _memory(tmp_path: Path) -> StorageClient:
    return MemoryStorageClient()


async def _file_system(tmp_path: Path) -> StorageClient:
    return FileSystemStorageClient(storage_dir=tmp_path / "storage")


STORAGE_CLIENTS: dict[str, Factory] = {
    "memory": _memory,
    "file_system": _file_system,
}


@pytest.fixture(params=list(STORAGE_CLIENTS))
async def storage_client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorageClient]:
    """A fresh storage client of each kind; closed after the test."""
    client = await STORAGE_CLIENTS[request.param](tmp_path)
    async with client:
        yield client
