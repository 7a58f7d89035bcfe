"""Fixtures of the facade tests: a `KeyValueStore` on each built-in storage client."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from recoverable.storages import FileSystemStorageClient, KeyValueStore, MemoryStorageClient, StorageClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture(params=["memory", "file_system"])
async def storage_client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorageClient]:
    """A memory or file system storage client on `tmp_path`."""
    client: StorageClient = (
        MemoryStorageClient()
        if request.param == "memory"
        else FileSystemStorageClient(storage_dir=tmp_path / "storage")
    )
    async with client:
        yield client


@pytest.fixture
async def kvs(storage_client: StorageClient) -> KeyValueStore:
    """A named store opened through the facade."""
    return await KeyValueStore.open(name="facade", storage_client=storage_client)
