"""A state's history in a store of Crawlee (`persist_state_kvs_factory`): what a Crawlee user gets by default."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from crawlee.storage_clients import FileSystemStorageClient as CrawleeFileSystemStorageClient
from crawlee.storage_clients import MemoryStorageClient as CrawleeMemoryStorageClient
from crawlee.storages import KeyValueStore as CrawleeKeyValueStore
from pydantic import BaseModel

from recoverable import RecoverableState
from recoverable.events import EventManager

if TYPE_CHECKING:
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
    if request.param == "memory":
        return CrawleeMemoryStorageClient()
    return CrawleeFileSystemStorageClient()


def make_state(storage: CrawleeStorageClient, configuration: CrawleeConfiguration, key: str = KEY) -> Any:
    async def factory() -> CrawleeKeyValueStore:
        return await CrawleeKeyValueStore.open(name=STORE, storage_client=storage, configuration=configuration)

    return RecoverableState(
        default_state=Crawl(),
        persist_state_key=key,
        persist_state_kvs_factory=factory,
        lease_ttl=None,
        event_manager=EventManager(persist_state_interval=timedelta(hours=1)),
    )


async def test_the_current_record_is_listed_as_the_save_that_wrote_it(
    crawlee_storage: CrawleeStorageClient, crawlee_configuration: CrawleeConfiguration
) -> None:
    """The newest copy holds the bytes of the record (same checksum), yet `history()` lists the record as an
    unknown version 0 beside it: Crawlee lists the size of its own file, not of the bytes the library reads.
    """
    async with make_state(crawlee_storage, crawlee_configuration) as state:
        for pages in (1, 2, 3):
            state.current_value.pages = pages
            state.current_value.seen.append(f"https://example.com/{pages}")
            await state.persist_state()
        versions = await state.history()
    assert [(v.version, v.current) for v in versions] == [(3, True), (2, False), (1, False)]


async def test_a_key_crawlee_stores_still_saves_with_the_default_history(
    crawlee_configuration: CrawleeConfiguration,
) -> None:
    """A key of 200 characters, which Crawlee's file system store keeps (a file name of 200 bytes).

    Its copies' keys are 60 characters longer than a file name may be: with the default history=3 every save
    writes the record, then raises StorageBackendError on the copy, and teardown() never completes (each
    retry writes the record again and fails again). A Crawlee user switching the import gets a state that
    can no longer be saved.
    """
    state = make_state(CrawleeFileSystemStorageClient(), crawlee_configuration, key="c" * 200)
    await state.initialize()
    state.current_value.pages = 1
    await state.persist_state()
    state.current_value.pages = 2
    await state.teardown()
    assert not state.is_initialized
