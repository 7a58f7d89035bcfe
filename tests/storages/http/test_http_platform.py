"""Against a server without ETags (the Apify platform): content-hash versions, conditional writes refused.

The Apify platform cannot be reached from the tests; `PlatformLike` makes a real `recoverable serve` answer as
the platform does (no ETag, no `X-Recoverable-Server`, If-Match ignored, short key pages).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from pydantic import BaseModel

from recoverable import EventManager, RecoverableState
from recoverable.errors import StorageError, VersionConflictError
from recoverable.storages import HttpStorageClient, KeyValueStore

from ._support import PlatformLike, Recorder

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager

    from recoverable.storages import FileSystemStorageClient

JSON = "application/json"


@pytest.fixture
async def recorder(serve: Callable[..., AbstractAsyncContextManager[str]]) -> AsyncIterator[tuple[str, Recorder]]:
    recorders: list[Recorder] = []

    def wrap(app: object) -> Recorder:
        recorders.append(Recorder(PlatformLike(app)))  # type: ignore[arg-type]
        return recorders[-1]

    async with serve(wrap=wrap) as url:
        yield url, recorders[0]


@pytest.fixture
async def client(recorder: tuple[str, Recorder]) -> AsyncIterator[HttpStorageClient]:
    async with HttpStorageClient(base_url=recorder[0]) as client:
        yield client


async def test_versions_are_content_hashes(client: HttpStorageClient) -> None:
    store = await client.open_key_value_store_client(name="platform")

    first = await store.set_record(key="k", value=b"1", content_type=JSON)
    same = await store.set_record(key="k", value=b"1", content_type=JSON)
    other_type = await store.set_record(key="k", value=b"1", content_type="text/plain")
    other_value = await store.set_record(key="k", value=b"2", content_type="text/plain")
    record = await store.get_record(key="k")

    assert first == same
    assert first.startswith("sha256:")
    assert len({first, other_type, other_value}) == 3
    assert record is not None
    assert record.version == other_value


async def test_conditional_writes_are_refused_before_sending(
    client: HttpStorageClient, recorder: tuple[str, Recorder], backend: FileSystemStorageClient
) -> None:
    store = await client.open_key_value_store_client(name="platform")
    version = await store.set_record(key="k", value=b"1", content_type=JSON)
    puts_before = len(recorder[1].paths("PUT"))

    with pytest.raises(StorageError, match="does not honour If-Match") as info:
        await store.set_record(key="k", value=b"2", content_type=JSON, if_version=version)
    with pytest.raises(StorageError, match="nothing was written"):
        await store.set_record(key="new", value=b"2", content_type=JSON, if_absent=True)
    with pytest.raises(StorageError):
        await store.delete_record(key="k", if_version=version)

    assert not isinstance(info.value, VersionConflictError)
    assert (info.value.store, info.value.key) == ("platform", "k")
    assert len(recorder[1].paths("PUT")) == puts_before
    assert recorder[1].paths("DELETE") == []
    stored = await (await backend.open_key_value_store_client(name="platform")).get_record(key="k")
    assert stored is not None
    assert stored.value == b"1"


async def test_keys_are_paged_through_whatever_the_page_size(
    client: HttpStorageClient, recorder: tuple[str, Recorder]
) -> None:
    store = await client.open_key_value_store_client(name="platform")
    keys = [f"k{i}" for i in range(7)]
    for key in keys:
        await store.set_record(key=key, value=b"1", content_type=JSON)

    assert [info.key async for info in store.iterate_keys()] == keys
    assert [info.key async for info in store.iterate_keys(exclusive_start_key="k1", limit=3)] == ["k2", "k3", "k4"]
    assert len(recorder[1].paths("GET")) >= 4 + 2
    await store.purge()
    assert [info async for info in store.iterate_keys()] == []


async def test_aliases_and_the_facade_work_without_etags(client: HttpStorageClient) -> None:
    kvs = await KeyValueStore.open(alias="scratch", storage_client=client)
    await kvs.set_value("state", {"n": 1})
    again = await KeyValueStore.open(alias="scratch", storage_client=client)
    assert again is kvs
    async with HttpStorageClient(base_url=client.base_url) as other:
        reopened = await KeyValueStore.open(alias="scratch", storage_client=other)
        assert reopened.id == kvs.id
        assert await reopened.get_value("state") == {"n": 1}
    assert [m.id for m in await client.list_key_value_stores()] == [kvs.id]


class _Progress(BaseModel):
    pages: int = 0


async def test_recoverable_state_needs_lease_ttl_none_without_etags(client: HttpStorageClient) -> None:
    kvs = await KeyValueStore.open(name="platform-state", storage_client=client)
    async with EventManager(persist_state_interval=timedelta(hours=1)) as events:
        leased = RecoverableState(
            default_state=_Progress(), persist_state_key="CRAWL", key_value_store=kvs, event_manager=events
        )
        with pytest.raises(StorageError, match="lease_ttl=None"):
            await leased.initialize()

        state = RecoverableState(
            default_state=_Progress(),
            persist_state_key="CRAWL",
            key_value_store=kvs,
            event_manager=events,
            lease_ttl=None,
        )
        async with state:
            state.current_value.pages = 3
    assert await kvs.get_value("CRAWL") == {"pages": 3}
