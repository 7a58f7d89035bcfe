"""Crawlee empties its default store when a crawler starts: a state is never kept where that would erase it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from crawlee import ConcurrencySettings
from crawlee.crawlers import BasicCrawler, BasicCrawlingContext
from pydantic import BaseModel

from recoverable import ConfigurationError, FileSystemStorageClient, KeyValueStore, RecoverableState

if TYPE_CHECKING:
    from pathlib import Path

KEY = "CRAWL"


class Crawl(BaseModel):
    pages: int = 0


def shared_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """One storage folder for Crawlee and the library, as a Crawlee program moved over has by default."""
    folder = tmp_path / "storage"
    monkeypatch.setenv("CRAWLEE_STORAGE_DIR", str(folder))
    monkeypatch.delenv("RECOVERABLE_STORAGE_DIR", raising=False)
    return folder


async def crawl(state: RecoverableState[Crawl], pages: int, run: int) -> None:
    crawler = BasicCrawler(
        concurrency_settings=ConcurrencySettings(max_concurrency=1, desired_concurrency=1), configure_logging=False
    )

    @crawler.router.default_handler
    async def handle(context: BasicCrawlingContext) -> None:
        del context
        state.current_value.pages += 1

    await crawler.run([f"http://127.0.0.1:9/{run}/{i}" for i in range(pages)])


async def test_a_state_in_the_default_store_crawlee_empties_is_refused_before_anything_is_lost(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = shared_folder(monkeypatch, tmp_path)
    kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=folder))
    await kvs.set_value(KEY, {"pages": 20})
    state = RecoverableState(default_state=Crawl(), persist_state_key=KEY)
    with pytest.raises(ConfigurationError, match="Crawlee empties when a crawler starts") as caught:
        await state.initialize()
    assert "persist_state_kvs_name" in str(caught.value)
    assert "CRAWLEE_PURGE_ON_START=0" in str(caught.value)
    assert await kvs.get_value(KEY) == {"pages": 20}


@pytest.mark.parametrize("where", ["named store", "purge off"])
async def test_a_state_survives_crawls_in_a_named_store_or_with_the_purge_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str
) -> None:
    shared_folder(monkeypatch, tmp_path)
    kwargs: dict[str, Any] = {}
    if where == "named store":
        kwargs["persist_state_kvs_name"] = "my-crawl"
    else:
        monkeypatch.setenv("CRAWLEE_PURGE_ON_START", "0")
    for run in (1, 2):
        async with RecoverableState(default_state=Crawl(), persist_state_key=KEY, **kwargs) as state:
            assert state.current_value.pages == 3 * (run - 1)
            await crawl(state, 3, run)
        assert state.current_value.pages == 3 * run
