"""Graceful shutdown: writes in flight finish before the server stops, even when their request is cancelled."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
from typing_extensions import override

from recoverable.server import create_app
from recoverable.server._uvicorn import serve_in_background
from recoverable.storages import KeyValueStoreClient, MemoryStorageClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from recoverable.storages import KeyInfo, KeyValueStoreMetadata, StoredRecord


class _GatedStore(KeyValueStoreClient):
    """A memory store whose writes wait for a gate: a backend slow enough to be caught mid-write."""

    def __init__(self, inner: KeyValueStoreClient, entered: asyncio.Event, gate: asyncio.Event) -> None:
        self._inner = inner
        self._entered = entered
        self._gate = gate

    @override
    async def set_record(
        self, *, key: str, value: bytes, content_type: str, if_version: str | None = None, if_absent: bool = False
    ) -> str:
        self._entered.set()
        await self._gate.wait()
        return await self._inner.set_record(
            key=key, value=value, content_type=content_type, if_version=if_version, if_absent=if_absent
        )

    @override
    async def get_metadata(self) -> KeyValueStoreMetadata:
        return await self._inner.get_metadata()

    @override
    async def get_record(self, *, key: str) -> StoredRecord | None:
        return await self._inner.get_record(key=key)

    @override
    async def record_exists(self, *, key: str) -> bool:
        return await self._inner.record_exists(key=key)

    @override
    async def delete_record(self, *, key: str, if_version: str | None = None) -> bool:
        return await self._inner.delete_record(key=key, if_version=if_version)

    @override
    async def iterate_keys(
        self, *, exclusive_start_key: str | None = None, limit: int | None = None, prefix: str | None = None
    ) -> AsyncIterator[KeyInfo]:
        async for info in self._inner.iterate_keys(exclusive_start_key=exclusive_start_key, limit=limit, prefix=prefix):
            yield info

    @override
    async def drop(self) -> None:
        await self._inner.drop()

    @override
    async def purge(self) -> None:
        await self._inner.purge()


class _GatedBackend(MemoryStorageClient):
    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    @override
    async def open_key_value_store_client(  # type: ignore[override]
        self, *, id: str | None = None, name: str | None = None, alias: str | None = None
    ) -> KeyValueStoreClient:
        inner = await super().open_key_value_store_client(id=id, name=name, alias=alias)
        return _GatedStore(inner, self.entered, self.gate)


async def _wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), timeout=10)


async def test_shutdown_waits_for_a_write_in_flight() -> None:
    backend = _GatedBackend()
    server = serve_in_background(create_app(storage_client=backend))
    url = await server.__aenter__()
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            store_id = (await client.post("/v2/key-value-stores", params={"name": "s"})).json()["data"]["id"]
            put = asyncio.create_task(client.put(f"/v2/key-value-stores/{store_id}/records/k", content=b"saved"))
            await _wait(backend.entered)

            shutdown = asyncio.create_task(server.__aexit__(None, None, None))
            await asyncio.sleep(0.3)
            assert not shutdown.done()
            assert not put.done()

            backend.gate.set()
            response = await asyncio.wait_for(put, timeout=10)
            await asyncio.wait_for(shutdown, timeout=10)
    finally:
        backend.gate.set()

    assert response.status_code == 201
    record = await (await MemoryStorageClient.open_key_value_store_client(backend, id=store_id)).get_record(key="k")
    assert record is not None
    assert record.value == b"saved"


async def test_a_write_outlives_its_cancelled_request() -> None:
    backend = _GatedBackend()
    server = serve_in_background(create_app(storage_client=backend), timeout_graceful_shutdown=0.1)
    url = await server.__aenter__()
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            store_id = (await client.post("/v2/key-value-stores", params={"name": "s"})).json()["data"]["id"]
            put = asyncio.create_task(client.put(f"/v2/key-value-stores/{store_id}/records/k", content=b"saved"))
            await _wait(backend.entered)

            # Past the graceful timeout uvicorn cancels the request; the write itself must go on.
            shutdown = asyncio.create_task(server.__aexit__(None, None, None))
            await asyncio.sleep(0.5)
            assert not shutdown.done()
            backend.gate.set()
            await asyncio.wait_for(shutdown, timeout=10)
            await asyncio.gather(put, return_exceptions=True)
    finally:
        backend.gate.set()

    record = await (await MemoryStorageClient.open_key_value_store_client(backend, id=store_id)).get_record(key="k")
    assert record is not None
    assert record.value == b"saved"
