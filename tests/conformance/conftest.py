"""The storage clients every conformance test runs against.

Adding a backend means adding one entry to `STORAGE_CLIENTS` (a name and an async factory). The HTTP
client has one entry per httpx transport in `recoverable.storages._http._transports.TRANSPORTS`
(`http-http11`, `http-httpcore`): each runs against a real `recoverable serve` over plain http. A factory
called again with the same `tmp_path` must reach the same storage, so that `reopen_storage_client` can
check what survives a new client: a new instance for backends that keep data outside the process, the
same instance for the memory backend (its data lives in that object).
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import services

from conformance._http_server import http_storage_client
from recoverable.storages import (
    FileSystemStorageClient,
    KeyValueStore,
    KeyValueStoreClient,
    MemoryStorageClient,
    StorageClient,
)
from recoverable.storages._http._transports import TRANSPORTS

Factory = Callable[[Path], Awaitable[StorageClient]]
Reopen = Callable[[], Awaitable[StorageClient]]

_memory_clients: weakref.WeakValueDictionary[Path, MemoryStorageClient] = weakref.WeakValueDictionary()


async def _memory(tmp_path: Path) -> StorageClient:
    client = _memory_clients.get(tmp_path)
    if client is None:
        client = _memory_clients[tmp_path] = MemoryStorageClient()
    return client


async def _file_system(tmp_path: Path) -> StorageClient:
    return FileSystemStorageClient(storage_dir=tmp_path / "storage")


def _http(transport: str) -> Factory:
    """`HttpStorageClient` against `recoverable serve`, sending through the httpx transport `transport`."""

    async def factory(tmp_path: Path) -> StorageClient:
        client = http_storage_client(tmp_path)
        await client._session.use_transport(TRANSPORTS[transport])
        return client

    return factory


# Redis and PostgreSQL: one real server for the session (tests/services.py), a key or table prefix per test.
async def _redis(tmp_path: Path) -> StorageClient:
    from recoverable.storages import RedisStorageClient  # noqa: PLC0415 - an optional extra

    return RedisStorageClient(services.redis_url(), key_prefix=services.redis_key_prefix(tmp_path))


async def _sqlite(tmp_path: Path) -> StorageClient:
    from recoverable.storages import SqlStorageClient  # noqa: PLC0415 - an optional extra

    return SqlStorageClient(f"sqlite+aiosqlite:///{tmp_path / 'recoverable.db'}")


async def _postgres(tmp_path: Path) -> StorageClient:
    from recoverable.storages import SqlStorageClient  # noqa: PLC0415 - an optional extra

    return SqlStorageClient(services.postgres_url(), table_prefix=services.sql_table_prefix(tmp_path))


STORAGE_CLIENTS: dict[str, Factory] = {
    "memory": _memory,
    "file_system": _file_system,
    # One entry per httpx transport the HTTP client can send through, whatever the URL scheme picks.
    **{f"http-{transport}": _http(transport) for transport in TRANSPORTS},
    "redis": _redis,
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture(params=list(STORAGE_CLIENTS))
def storage_client_kind(request: pytest.FixtureRequest) -> str:
    """The name of the storage client under test, a key of `STORAGE_CLIENTS`."""
    kind: str = request.param
    return kind


@pytest.fixture
async def storage_client(storage_client_kind: str, tmp_path: Path) -> AsyncIterator[StorageClient]:
    """A fresh storage client of each kind; closed after the test."""
    client = await STORAGE_CLIENTS[storage_client_kind](tmp_path)
    async with client:
        yield client


@pytest.fixture
async def reopen_storage_client(
    storage_client: StorageClient, storage_client_kind: str, tmp_path: Path
) -> AsyncIterator[Reopen]:
    """A function returning another client on the storage of `storage_client`, as after a restart."""
    opened: list[StorageClient] = []

    async def reopen() -> StorageClient:
        client = await STORAGE_CLIENTS[storage_client_kind](tmp_path)
        if client is not storage_client and all(client is not other for other in opened):
            opened.append(client)
        return client

    yield reopen
    for client in opened:
        await client.aclose()


@pytest.fixture
async def store(storage_client: StorageClient) -> KeyValueStoreClient:
    """A named store of `storage_client`, opened through the storage client ABC."""
    return await storage_client.open_key_value_store_client(name="conformance")


@pytest.fixture
async def kvs(storage_client: StorageClient) -> KeyValueStore:
    """A named store of `storage_client`, opened through the `KeyValueStore` facade."""
    return await KeyValueStore.open(name="conformance-facade", storage_client=storage_client)
