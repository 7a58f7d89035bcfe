"""States and auto-saved values given no event manager save on the PERSIST_STATE events of a running Crawlee crawler.

Each test runs a real `crawlee.crawlers.BasicCrawler` in this process; its request handler needs no network (a
BasicCrawler fetches nothing, and the URLs name a closed port on 127.0.0.1). Crawlee emits PERSIST_STATE every
50 ms (its configuration); the library's own manager keeps its default of 60 s, so whatever saves during a run
was asked for by Crawlee.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from crawlee import ConcurrencySettings, service_locator
from crawlee.crawlers import BasicCrawler, BasicCrawlingContext
from crawlee.events import LocalEventManager as CrawleeLocalEventManager
from crawlee.storage_clients import MemoryStorageClient as CrawleeMemoryStorageClient
from pydantic import BaseModel

from recoverable import ConfigurationError, KeyValueStore, MemoryStorageClient, RecoverableState
from recoverable._ownership import LEASE_SUFFIX
from recoverable.events import Event, EventPersistStateData
from recoverable.events._default import DefaultEvents

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from crawlee.configuration import Configuration as CrawleeConfiguration

KEY = "CRAWL"
PAGES = 20
PAGE_SECS = 0.05


class Crawl(BaseModel):
    pages: int = 0


class CountingState(RecoverableState[Crawl]):
    """Records the page count at every save an event asked for."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.event_saves: list[int] = []

    async def persist_state(self, event_data: EventPersistStateData | None = None) -> None:
        if event_data is not None and self.is_initialized:
            self.event_saves.append(self.current_value.pages)
        await super().persist_state(event_data)


def make_crawler(handler: Callable[[BasicCrawlingContext], Awaitable[None]]) -> BasicCrawler:
    """A crawler handling one request at a time, with its queue in memory."""
    crawler = BasicCrawler(
        storage_client=CrawleeMemoryStorageClient(),
        concurrency_settings=ConcurrencySettings(max_concurrency=1, desired_concurrency=1),
        configure_logging=False,
    )
    crawler.router.default_handler(handler)
    return crawler


def urls(run: str) -> list[str]:
    return [f"http://127.0.0.1:9/{run}/{i}" for i in range(PAGES)]


async def open_store() -> KeyValueStore:
    return await KeyValueStore.open(name="crawl", storage_client=MemoryStorageClient())


async def test_a_state_created_in_a_running_crawler_saves_on_its_events(
    crawlee_configuration: CrawleeConfiguration,
) -> None:
    kvs = await open_store()
    state = CountingState(default_state=Crawl(), persist_state_key=KEY, key_value_store=kvs)
    read_mid_run: list[Any] = []

    async def handler(context: BasicCrawlingContext) -> None:
        if not state.is_initialized:
            await state.initialize()  # no event_manager: the defaults decide
        state.current_value.pages += 1
        await asyncio.sleep(PAGE_SECS)
        if state.current_value.pages == PAGES - 5:
            read_mid_run.append(await kvs.get_value(KEY))

    await make_crawler(handler).run(urls("one"))

    mid_run = [pages for pages in state.event_saves if pages < PAGES]
    assert len(mid_run) >= 5, state.event_saves  # about one every 50 ms of a run of a second
    assert read_mid_run[0] is not None
    assert read_mid_run[0]["pages"] > 0
    # Crawlee's last PERSIST_STATE, when the crawler stopped, saved everything before run() returned.
    assert state.is_initialized
    assert await kvs.get_value(KEY) == {"pages": PAGES}
    await state.teardown()


async def test_a_state_initialized_before_the_crawler_follows_it_and_leaves_crawlee_free(
    crawlee_configuration: CrawleeConfiguration,
) -> None:
    # As at the top of a program: the state starts before any crawler, and before Crawlee has an event manager.
    kvs = await open_store()
    state = CountingState(default_state=Crawl(), persist_state_key=KEY, key_value_store=kvs)
    await state.initialize()
    await asyncio.sleep(0.2)  # the library looks for a crawler several times meanwhile

    # Looking created no event manager in Crawlee: the program can still set its own.
    assert service_locator._event_manager is None
    manager = CrawleeLocalEventManager(persist_state_interval=timedelta(milliseconds=50))
    service_locator.set_event_manager(manager)
    assert service_locator.get_event_manager() is manager

    async def handler(context: BasicCrawlingContext) -> None:
        state.current_value.pages += 1
        await asyncio.sleep(PAGE_SECS)

    await make_crawler(handler).run(urls("one"))

    assert len([pages for pages in state.event_saves if 0 < pages < PAGES]) >= 5, state.event_saves
    assert await kvs.get_value(KEY) == {"pages": PAGES}
    await state.teardown()


async def test_a_state_outliving_its_crawler_follows_the_next_one_and_its_own_manager_in_between(
    crawlee_configuration: CrawleeConfiguration,
) -> None:
    kvs = await open_store()
    state = CountingState(default_state=Crawl(), persist_state_key=KEY, key_value_store=kvs)

    async def handler(context: BasicCrawlingContext) -> None:
        if not state.is_initialized:
            await state.initialize()
        state.current_value.pages += 1
        await asyncio.sleep(PAGE_SECS)

    await make_crawler(handler).run(urls("one"))
    assert await kvs.get_value(KEY) == {"pages": PAGES}
    default = state._default_events
    assert default is not None
    assert not default.following_crawlee  # Crawlee stopped, and dropped its listeners

    # In between, the library's own manager is what saves the state.
    own = default.manager
    state.event_saves.clear()
    state.current_value.pages += 1
    own.emit(event=Event.PERSIST_STATE, event_data=EventPersistStateData())
    await own.wait_for_all_listeners_to_complete()
    assert state.event_saves == [PAGES + 1]

    state.event_saves.clear()
    await make_crawler(handler).run(urls("two"))
    assert len([pages for pages in state.event_saves if PAGES + 1 < pages < 2 * PAGES + 1]) >= 5, state.event_saves
    assert await kvs.get_value(KEY) == {"pages": 2 * PAGES + 1}
    await state.teardown()
    assert DefaultEvents._by_loop.get(asyncio.get_running_loop()) is None


async def test_auto_saved_values_save_on_the_running_crawler_s_events_without_closing(
    crawlee_configuration: CrawleeConfiguration,
) -> None:
    kvs = await open_store()
    read_mid_run: list[Any] = []

    async def handler(context: BasicCrawlingContext) -> None:
        value = await kvs.get_auto_saved_value("AUTO", {"pages": 0})  # no event_manager: the defaults decide
        value["pages"] += 1
        await asyncio.sleep(PAGE_SECS)
        if value["pages"] == PAGES - 5:
            read_mid_run.append(await kvs.get_value("AUTO"))

    await make_crawler(handler).run(urls("one"))

    assert read_mid_run[0] is not None
    assert read_mid_run[0]["pages"] > 0
    assert await kvs.get_value("AUTO") == {"pages": PAGES}  # saved by Crawlee's last event, not by close()
    await kvs.close()


def test_crawlee_s_event_manager_given_explicitly_says_it_is_followed_without() -> None:
    with pytest.raises(ConfigurationError, match="leave event_manager out"):
        RecoverableState(
            default_state=Crawl(),
            persist_state_key=KEY,
            event_manager=CrawleeLocalEventManager(),  # type: ignore[arg-type]
        )


async def test_crawlee_s_migrating_persist_state_reaches_the_state_as_migrating(
    crawlee_configuration: CrawleeConfiguration,
) -> None:
    from crawlee.events import Event as CrawleeEvent  # noqa: PLC0415
    from crawlee.events import EventPersistStateData as CrawleePersistStateData  # noqa: PLC0415

    manager = CrawleeLocalEventManager(persist_state_interval=timedelta(hours=1))
    service_locator.set_event_manager(manager)
    state = CountingState(default_state=Crawl(), persist_state_key=KEY, key_value_store=await open_store())
    received: list[EventPersistStateData | None] = []

    async with manager:  # entered, as a crawler does while it runs
        await asyncio.sleep(0.05)  # Crawlee emits one PERSIST_STATE as it starts: let it pass
        async with state:
            default = state._default_events
            assert default is not None
            default.relay.on(event=Event.PERSIST_STATE, listener=received.append)
            state.current_value.pages = 1
            manager.emit(event=CrawleeEvent.PERSIST_STATE, event_data=CrawleePersistStateData(is_migrating=True))
            await manager.wait_for_all_listeners_to_complete()
            assert [data.is_migrating if data else None for data in received] == [True]
            # A migration is a stop: the state made its final save and let go of its lease for the next owner.
            store = state.key_value_store
            assert store is not None
            assert await store.get_value(KEY) == {"pages": 1}
            assert not await store.record_exists(f"{KEY}{LEASE_SUFFIX}")
