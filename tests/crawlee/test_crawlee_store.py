"""A `RecoverableState` kept in a store of Crawlee, returned by `persist_state_kvs_factory` (Crawlee's pattern)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest
from crawlee.storage_clients import FileSystemStorageClient as CrawleeFileSystemStorageClient
from crawlee.storage_clients import MemoryStorageClient as CrawleeMemoryStorageClient
from crawlee.storages import KeyValueStore as CrawleeKeyValueStore
from pydantic import BaseModel

from recoverable import (
    ConfigurationError,
    DeserializationError,
    FileSystemStorageClient,
    InvalidKeyError,
    KeyValueStore,
    RecoverableState,
    StateValidationError,
    StorageError,
)
from recoverable.events._default import DefaultEvents

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from pathlib import Path

    from crawlee.configuration import Configuration as CrawleeConfiguration
    from crawlee.storage_clients import StorageClient as CrawleeStorageClient

KEY = "CRAWL"
STORE = "crawl"


class Crawl(BaseModel):
    pages: int = 0
    seen: list[str] = []
    note: str = ""


@pytest.fixture(params=["memory", "file_system"])
def crawlee_storage(request: pytest.FixtureRequest) -> CrawleeStorageClient:
    """A storage client of Crawlee: in memory, or files under the test's folder (Crawlee's configuration)."""
    if request.param == "memory":
        return CrawleeMemoryStorageClient()
    return CrawleeFileSystemStorageClient()


def factory_of(
    storage: CrawleeStorageClient, configuration: CrawleeConfiguration
) -> Callable[[], Coroutine[Any, Any, CrawleeKeyValueStore]]:
    return lambda: CrawleeKeyValueStore.open(name=STORE, storage_client=storage, configuration=configuration)


async def test_a_state_round_trips_through_crawlee_s_store(
    crawlee_storage: CrawleeStorageClient, crawlee_configuration: CrawleeConfiguration
) -> None:
    factory = factory_of(crawlee_storage, crawlee_configuration)
    state = RecoverableState(
        default_state=Crawl(), persist_state_key=KEY, persist_state_kvs_factory=factory, lease_ttl=None
    )
    async with state:
        assert not await state.has_persisted_state()
        state.current_value.pages = 2
        state.current_value.seen.append("https://example.com/ü")
        state.current_value.note = 'quotes " and \\ and\nnew lines'
        await state.persist_state()
        # Crawlee reads what the state saved, as JSON.
        crawlee_store = await factory()
        assert await crawlee_store.get_value(KEY) == {
            "pages": 2,
            "seen": ["https://example.com/ü"],
            "note": 'quotes " and \\ and\nnew lines',
        }
        state.current_value.pages = 3

    again = RecoverableState(
        default_state=Crawl(), persist_state_key=KEY, persist_state_kvs_factory=factory, lease_ttl=None
    )
    async with again:
        assert again.current_value.pages == 3  # saved at teardown
        assert again.current_value.seen == ["https://example.com/ü"]
        assert again.current_value.note == 'quotes " and \\ and\nnew lines'
        assert await again.has_persisted_state()
        await again.reset()
        assert not await again.has_persisted_state()


async def test_what_crawlee_saved_loads_and_its_files_are_crawlee_s(
    crawlee_configuration: CrawleeConfiguration, tmp_path: Path
) -> None:
    storage = CrawleeFileSystemStorageClient()
    factory = factory_of(storage, crawlee_configuration)
    await (await factory()).set_value(KEY, {"pages": 7, "seen": ["a"], "note": ""})

    state = RecoverableState(
        default_state=Crawl(), persist_state_key=KEY, persist_state_kvs_factory=factory, lease_ttl=None
    )
    async with state:
        assert state.current_value.pages == 7
        state.current_value.pages = 8

    folder = tmp_path / "crawlee-storage" / "key_value_stores" / STORE
    assert json.loads((folder / KEY).read_bytes()) == {"pages": 8, "seen": ["a"], "note": ""}
    sidecar = json.loads((folder / f"{KEY}.__metadata__.json").read_bytes())
    assert sidecar["key"] == KEY
    assert sidecar["content_type"].startswith("application/json")
    # The library's own file system client reads the same folder as it is.
    ours = await KeyValueStore.open(
        name=STORE, storage_client=FileSystemStorageClient(storage_dir=folder.parent.parent)
    )
    assert await ours.get_value(KEY) == {"pages": 8, "seen": ["a"], "note": ""}


async def test_crawlee_s_store_with_the_default_lease_is_refused_naming_the_option(
    crawlee_storage: CrawleeStorageClient, crawlee_configuration: CrawleeConfiguration
) -> None:
    factory = factory_of(crawlee_storage, crawlee_configuration)
    state = RecoverableState(default_state=Crawl(), persist_state_key=KEY, persist_state_kvs_factory=factory)

    with pytest.raises(ConfigurationError, match=r"cannot hold its one-owner lease.*Pass lease_ttl=None"):
        await state.initialize()

    # Nothing was taken or written: no lease record, no event manager started.
    assert not state.is_initialized
    assert [info.key async for info in (await factory()).iterate_keys()] == []
    assert DefaultEvents._by_loop.get(asyncio.get_running_loop()) is None


async def test_conditional_writes_and_path_like_keys_are_refused_by_crawlee_s_store(
    crawlee_storage: CrawleeStorageClient, crawlee_configuration: CrawleeConfiguration
) -> None:
    factory = factory_of(crawlee_storage, crawlee_configuration)
    state = RecoverableState(
        default_state=Crawl(), persist_state_key=KEY, persist_state_kvs_factory=factory, lease_ttl=None
    )
    async with state:
        store = state.key_value_store
        assert store is not None
        assert not store.client.conditional_writes
        version = await store.set_value("k", {"v": 1})
        record = await store.get_record("k")
        assert record is not None
        assert record.version == version
        with pytest.raises(StorageError, match="conditionally"):
            await store.set_value("k", {"v": 2}, if_version=version)
        with pytest.raises(StorageError, match="conditionally"):
            await store.delete_value("k", if_version=version)
        assert await store.get_value("k") == {"v": 1}
        for key in ("..", ".", "__metadata__.json", "k.__metadata__.json"):
            with pytest.raises(InvalidKeyError, match="Crawlee"):
                await store.set_value(key, {"v": 1})
        assert [info.key for info in await store.list_keys()] == ["k"]


async def test_copies_in_crawlee_s_store_are_unconditional(
    crawlee_storage: CrawleeStorageClient, crawlee_configuration: CrawleeConfiguration
) -> None:
    factory = factory_of(crawlee_storage, crawlee_configuration)
    state = RecoverableState(
        default_state=Crawl(), persist_state_key=KEY, persist_state_kvs_factory=factory, lease_ttl=None
    )
    async with state:
        store = state.key_value_store
        assert store is not None
        version = await store.set_value("k", {"v": 1})

        copied = await store.client.copy_record(key="k", to_key="k.backup")

        assert await store.get_value("k.backup") == {"v": 1}
        record = await store.get_record("k.backup")
        assert record is not None
        assert record.version == copied
        assert await store.client.copy_record(key="missing", to_key="k.backup") is None
        with pytest.raises(StorageError, match="conditionally"):
            await store.client.copy_record(key="k", to_key="k.other", if_version=version)
        with pytest.raises(InvalidKeyError, match="Crawlee"):
            await store.client.copy_record(key="k", to_key="k.__metadata__.json")
        assert sorted(info.key for info in await store.list_keys()) == ["k", "k.backup"]


async def test_a_record_crawlee_cannot_read_is_not_taken_for_no_state(
    crawlee_configuration: CrawleeConfiguration, tmp_path: Path
) -> None:
    factory = factory_of(CrawleeFileSystemStorageClient(), crawlee_configuration)
    await (await factory()).set_value(KEY, {"pages": 7})
    (tmp_path / "crawlee-storage" / "key_value_stores" / STORE / KEY).write_bytes(b'{"pages": 7,')  # truncated

    state = RecoverableState(
        default_state=Crawl(), persist_state_key=KEY, persist_state_kvs_factory=factory, lease_ttl=None
    )
    with pytest.raises(DeserializationError, match="gives no value for it"):
        await state.initialize()
    assert not state.is_initialized


async def test_a_factory_returning_something_else_is_refused(crawlee_configuration: CrawleeConfiguration) -> None:
    async def factory() -> object:
        return {"not": "a store"}

    state = RecoverableState(default_state=Crawl(), persist_state_key=KEY, persist_state_kvs_factory=factory)
    with pytest.raises(ConfigurationError, match=r"must return a KeyValueStore .* not dict"):
        await state.initialize()


async def test_crawlee_s_store_given_as_key_value_store_says_to_use_the_factory(
    crawlee_configuration: CrawleeConfiguration,
) -> None:
    crawlee_store = await factory_of(CrawleeMemoryStorageClient(), crawlee_configuration)()
    with pytest.raises(ConfigurationError, match="persist_state_kvs_factory"):
        RecoverableState(default_state=Crawl(), persist_state_key=KEY, key_value_store=crawlee_store)  # type: ignore[arg-type]


class CrawlV2(BaseModel):
    pages: int = 0
    seen_urls: list[str] = []
    note: str = ""


def rename_seen(record: dict[str, Any]) -> dict[str, Any]:
    record["seen_urls"] = record.pop("seen")
    return record


async def test_schema_versions_and_migrations_work_in_crawlee_s_store(
    crawlee_storage: CrawleeStorageClient, crawlee_configuration: CrawleeConfiguration
) -> None:
    factory = factory_of(crawlee_storage, crawlee_configuration)
    crawlee_store = await factory()
    await crawlee_store.set_value(KEY, {"pages": 4, "seen": ["https://a"], "note": ""})  # written by Crawlee
    state = RecoverableState(
        default_state=CrawlV2(),
        persist_state_key=KEY,
        persist_state_kvs_factory=factory,
        lease_ttl=None,
        schema_version=2,
        migrations={1: rename_seen},
    )
    async with state:
        assert state.current_value == CrawlV2(pages=4, seen_urls=["https://a"])
        state.current_value.pages = 5
    # Crawlee still reads both the upgraded record and the backup, as JSON.
    assert await crawlee_store.get_value(KEY) == {"pages": 5, "seen_urls": ["https://a"], "note": ""}
    assert await crawlee_store.get_value(f"{KEY}.schema-v1-backup") == {"pages": 4, "seen": ["https://a"], "note": ""}
    # The version was kept: the release before refuses the record instead of loading it as its own.
    with pytest.raises(StateValidationError, match="newer than this program's 1"):
        await RecoverableState(
            default_state=Crawl(), persist_state_key=KEY, persist_state_kvs_factory=factory, lease_ttl=None
        ).initialize()
