"""The storage a state test runs on: each of `STORAGE_KINDS`, in the test's own folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from recoverable.storages import KeyValueStore, StorageClient
from state.support import STORAGE_KINDS, STORE_NAME, make_storage_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture(params=STORAGE_KINDS)
def storage_kind(request: pytest.FixtureRequest) -> str:
    """The name of the storage client under test."""
    kind: str = request.param
    return kind


@pytest.fixture
async def storage_client(storage_kind: str, tmp_path: Path) -> AsyncIterator[StorageClient]:
    """A storage client of that kind, closed after the test."""
    async with make_storage_client(storage_kind, tmp_path) as client:
        yield client


@pytest.fixture
async def kvs(storage_client: StorageClient) -> KeyValueStore:
    """The tests' store on that client."""
    return await KeyValueStore.open(name=STORE_NAME, storage_client=storage_client)
