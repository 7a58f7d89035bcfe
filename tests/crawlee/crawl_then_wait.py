"""A program that runs a Crawlee crawler with a state given no event manager, then waits to be stopped.

Run by tests/crawlee/test_signals_after_a_crawl.py: argv[1] is the storage folder. It prints `CRAWLED` once the
crawler's run returned and the library had time to see it stop, then waits; a SIGINT then must save the state
and release its lease, as it does before any crawler ran.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from crawlee import ConcurrencySettings
from crawlee.crawlers import BasicCrawler, BasicCrawlingContext
from crawlee.storage_clients import MemoryStorageClient as CrawleeMemoryStorageClient
from pydantic import BaseModel

from recoverable import FileSystemStorageClient, KeyValueStore, RecoverableState


class Crawl(BaseModel):
    pages: int = 0


async def main(storage_dir: str) -> None:
    kvs = await KeyValueStore.open(name="crawl", storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    async with RecoverableState(default_state=Crawl(), persist_state_key="CRAWL", key_value_store=kvs) as state:
        crawler = BasicCrawler(
            storage_client=CrawleeMemoryStorageClient(),
            concurrency_settings=ConcurrencySettings(max_concurrency=1, desired_concurrency=1),
            configure_logging=False,
        )

        @crawler.router.default_handler
        async def handle(context: BasicCrawlingContext) -> None:
            del context
            state.current_value.pages += 1

        await crawler.run([f"http://127.0.0.1:9/{i}" for i in range(3)])
        await asyncio.sleep(2.5)  # more than the library's look at running crawlers (every second)
        state.current_value.pages += 100  # saved only by the stop
        print("CRAWLED", flush=True)  # noqa: T201 - the line the test waits for
        await asyncio.Event().wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    asyncio.run(main(sys.argv[1]))
