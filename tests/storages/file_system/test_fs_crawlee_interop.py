"""The real Crawlee for Python and this library share store folders: each reads every record the other wrote.

Crawlee's own file system storage client (crawlee is a dev dependency) writes into a folder, this library
writes into the same folder (set, overwrite with the same and another content type, delete, a
`RecoverableState` saving), and both read every record afterwards; and the other way round.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storage_clients import FileSystemStorageClient as CrawleeFileSystemStorageClient
from pydantic import BaseModel

from recoverable import RecoverableState
from recoverable.events import EventManager
from recoverable.storages import FileSystemStorageClient, KeyValueStore

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from crawlee.storage_clients._file_system import FileSystemKeyValueStoreClient as CrawleeStore

PNG = b"\x89PNG\r\n\x1a\n\x00\x00binary\xff"


class Progress(BaseModel):
    pages_done: int = 0
    seen: list[str] = []


async def _crawlee(storage_dir: Path, **store: str) -> CrawleeStore:
    """A store of Crawlee's own file system client: a new client each time, as a new Crawlee process has."""
    configuration = CrawleeConfiguration(storage_dir=str(storage_dir), purge_on_start=False)
    return await CrawleeFileSystemStorageClient().create_kvs_client(configuration=configuration, **store)


async def _crawlee_sees(store: CrawleeStore) -> dict[str, Any]:
    keys = [info.key async for info in store.iterate_keys()]
    values: dict[str, Any] = {}
    for key in keys:
        record = await store.get_value(key=key)
        assert record is not None, f"Crawlee lists {key!r} but cannot read it"
        values[key] = record.value
    return values


async def _we_see(store: KeyValueStore) -> dict[str, Any]:
    return {info.key: await store.get_value(info.key) for info in await store.list_keys()}


STORES = [
    pytest.param({}, {}, id="default"),
    pytest.param({"name": "crawl-data"}, {"name": "crawl-data"}, id="named"),
    pytest.param({"alias": "my run: 1"}, {"alias": "my run: 1"}, id="alias"),
]


@pytest.mark.parametrize(("crawlee_store", "our_store"), STORES)
async def test_a_store_crawlee_made_and_this_library_wrote_is_read_by_both(
    storage_dir: Path,
    restart: Callable[[], FileSystemStorageClient],
    crawlee_store: dict[str, str],
    our_store: dict[str, str],
) -> None:
    crawlee = await _crawlee(storage_dir, **crawlee_store)
    await crawlee.set_value(key="CRAWLEE_STATE", value={"requestsFinished": 7})
    await crawlee.set_value(key="notes", value="plain text")
    await crawlee.set_value(key="screenshot", value=PNG)
    await crawlee.set_value(key="nothing", value=None)
    await crawlee.set_value(key="page.html", value="<p>é</p>", content_type="text/html; charset=utf-8")
    await crawlee.set_value(key="dir/with spaces?", value=[1, 2, 3])
    crawlee_id = (await crawlee.get_metadata()).id

    kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=storage_dir), **our_store)
    assert kvs.id == crawlee_id
    assert await kvs.get_value("CRAWLEE_STATE") == {"requestsFinished": 7}
    await kvs.set_value("CRAWLEE_STATE", {"requestsFinished": 8})  # the same content type
    await kvs.set_value("notes", {"now": "json"})  # another content type
    await kvs.set_value("page.html", "<p>ours</p>", "text/html; charset=utf-8")
    await kvs.delete_value("screenshot")
    await kvs.set_value("ours.txt", "text of ours")
    await kvs.set_value("bytes of ours", b"\x00\x01")
    await kvs.set_value("a/b", {"deep": True})
    state = RecoverableState(
        default_state=Progress(), persist_state_key="STATE", key_value_store=kvs, event_manager=EventManager()
    )
    async with state:
        state.current_value.pages_done = 3
        state.current_value.seen.append("https://example.com/")
        await state.persist_state()
        kept = (await state.history())[0].key  # the copy its history keeps: a record Crawlee reads too

    expected = {
        "CRAWLEE_STATE": {"requestsFinished": 8},
        "notes": {"now": "json"},
        "nothing": None,
        "page.html": "<p>ours</p>",
        "dir/with spaces?": [1, 2, 3],
        "ours.txt": "text of ours",
        "bytes of ours": b"\x00\x01",
        "a/b": {"deep": True},
        "STATE": {"pages_done": 3, "seen": ["https://example.com/"]},
        kept: {"pages_done": 3, "seen": ["https://example.com/"]},
    }
    assert await _crawlee_sees(await _crawlee(storage_dir, **crawlee_store)) == expected
    reopened = await KeyValueStore.open(storage_client=restart(), **our_store)
    assert reopened.id == crawlee_id
    assert await _we_see(reopened) == expected

    # Crawlee goes on writing, and this library reads it; Crawlee's purge (on by default) works on the folder.
    crawlee = await _crawlee(storage_dir, **crawlee_store)
    await crawlee.set_value(key="CRAWLEE_STATE", value={"requestsFinished": 9})
    await crawlee.delete_value(key="a/b")
    assert await reopened.get_value("CRAWLEE_STATE") == {"requestsFinished": 9}
    assert await reopened.get_value("a/b") is None
    await crawlee.purge()
    assert await _we_see(reopened) == {}


async def test_a_state_crawlee_saved_is_resumed_and_crawlee_resumes_ours(storage_dir: Path) -> None:
    crawlee = await _crawlee(storage_dir)
    await crawlee.set_value(key="STATE", value={"pages_done": 5, "seen": ["a"]})

    kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    state = RecoverableState(
        default_state=Progress(), persist_state_key="STATE", key_value_store=kvs, event_manager=EventManager()
    )
    async with state:
        assert state.current_value.pages_done == 5
        state.current_value.pages_done = 6

    record = await (await _crawlee(storage_dir)).get_value(key="STATE")
    assert record is not None
    assert record.value == {"pages_done": 6, "seen": ["a"]}
    assert "STATE.lease" not in [info.key async for info in (await _crawlee(storage_dir)).iterate_keys()]


async def test_a_store_this_library_made_and_crawlee_wrote_is_read_by_both(
    storage_dir: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    kvs = await KeyValueStore.open(name="ours", storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    await kvs.set_value("before", {"written": "before Crawlee came"})
    await kvs.set_value("kept", "text")

    crawlee = await _crawlee(storage_dir, name="ours")
    assert (await crawlee.get_metadata()).id == kvs.id
    await crawlee.set_value(key="theirs", value={"by": "crawlee"})
    await crawlee.set_value(key="bin", value=PNG)

    assert await _we_see(kvs) == {
        "before": {"written": "before Crawlee came"},
        "kept": "text",
        "theirs": {"by": "crawlee"},
        "bin": PNG,
    }
    # Crawlee opened the store: from now on, what this library writes there is in Crawlee's layout.
    await kvs.set_value("before", {"written": "again"})
    await kvs.set_value("after", [1])

    crawlee_sees = await _crawlee_sees(await _crawlee(storage_dir, name="ours"))
    assert crawlee_sees == {"before": {"written": "again"}, "after": [1], "theirs": {"by": "crawlee"}, "bin": PNG}
    reopened = await KeyValueStore.open(name="ours", storage_client=restart())
    assert await _we_see(reopened) == {**crawlee_sees, "kept": "text"}


@pytest.mark.parametrize("store", [{}, {"name": "made-for-crawlee"}], ids=["default", "named"])
async def test_a_store_made_in_crawlee_s_layout_is_read_whole_by_crawlee(
    storage_dir: Path, restart: Callable[[], FileSystemStorageClient], store: dict[str, str]
) -> None:
    made = FileSystemStorageClient(storage_dir=storage_dir, crawlee_layout=True)
    kvs = await KeyValueStore.open(storage_client=made, **store)
    values: dict[str, Any] = {"STATE": {"pages": 3}, "notes": "text", "png": PNG, "a/b": [1], "../x": "up"}
    for key, value in values.items():
        await kvs.set_value(key, value)
    await kvs.set_value("page.html", "<p>é</p>", "text/html; charset=utf-8")
    values["page.html"] = "<p>é</p>"

    assert await _crawlee_sees(await _crawlee(storage_dir, **store)) == values
    assert await _we_see(await KeyValueStore.open(storage_client=restart(), **store)) == values
    # A store that exists keeps its layout: one of this library's own stays so.
    ours = await KeyValueStore.open(name="ours", storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    await ours.set_value("kept", "text")
    again = await KeyValueStore.open(
        name="ours", storage_client=FileSystemStorageClient(storage_dir=storage_dir, crawlee_layout=True)
    )
    await again.set_value("more", "text")
    assert await _crawlee_sees(await _crawlee(storage_dir, name="ours")) == {}


async def test_an_alias_store_crawlee_made_is_found_and_a_name_never_is(storage_dir: Path) -> None:
    alias_store = await _crawlee(storage_dir, alias="run..1")
    await alias_store.set_value(key="k", value="alias")
    named = await _crawlee(storage_dir, name="run-2")
    await named.set_value(key="k", value="named")
    client = FileSystemStorageClient(storage_dir=storage_dir)

    by_alias = await KeyValueStore.open(alias="run..1", storage_client=client)
    other = await KeyValueStore.open(alias="run-2", storage_client=client)

    assert by_alias.id == (await alias_store.get_metadata()).id
    assert await by_alias.get_value("k") == "alias"
    # The folder `run-2` holds the store of a name: the alias gets a store of its own.
    assert other.id != (await named.get_metadata()).id
    assert await other.get_value("k") is None
    folders = {path.name for path in (storage_dir / "key_value_stores").iterdir()}
    assert folders == {"run..1", "run-2", "_alias_run-2"}
    metadata = json.loads((storage_dir / "key_value_stores" / "_alias_run-2" / "__metadata__.json").read_text())
    assert metadata["alias"] == "run-2"
