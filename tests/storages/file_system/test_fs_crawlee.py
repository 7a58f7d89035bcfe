"""A storage folder written by Crawlee for Python is read as it is, and moved to our layout on write."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from recoverable.storages import FileSystemStorageClient, KeyValueStore

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

PNG = b"\x89PNG\r\n\x1a\n\x00\x00binary\xff"
CRAWLEE_RECORDS = [
    # key, content type as Crawlee infers it, bytes as Crawlee writes them
    ("CRAWLEE_STATE", "application/json; charset=utf-8", json.dumps({"requestsFinished": 7}, indent=2).encode()),
    ("page.html", "text/html; charset=utf-8", "<html>é</html>".encode()),
    ("screenshot", "image/png", PNG),
    ("notes", "text/plain; charset=utf-8", b"plain text"),
    ("dir/with spaces?", "application/octet-stream", b"\x00\x01"),
    ("SDK_SESSION_POOL_STATE", "application/json", b"[1, 2, 3]"),
]


def _write_crawlee_store(storage_dir: Path, name: str = "default", store_id: str = "crawleeStoreId123") -> Path:
    folder = storage_dir / "key_value_stores" / name
    folder.mkdir(parents=True)
    metadata = {
        "id": store_id,
        "name": None if name == "default" else name,
        "created_at": "2025-01-02T03:04:05.678901Z",
        "accessed_at": "2025-01-02T03:05:00Z",
        "modified_at": "2025-01-02T03:04:59Z",
    }
    (folder / "__metadata__.json").write_text(json.dumps(metadata, indent=2))
    for key, content_type, data in CRAWLEE_RECORDS:
        file_name = quote(key, safe="")
        (folder / file_name).write_bytes(data)
        sidecar = {"key": key, "content_type": content_type, "size": len(data)}
        (folder / f"{file_name}.__metadata__.json").write_text(json.dumps(sidecar, indent=2))
    return folder


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture
def crawlee_folder(storage_dir: Path) -> Path:
    return _write_crawlee_store(storage_dir)


async def test_crawlee_store_metadata_is_read(crawlee_folder: Path, storage_dir: Path) -> None:
    client = FileSystemStorageClient(storage_dir=storage_dir)

    kvs = await KeyValueStore.open(storage_client=client)

    assert kvs.id == "crawleeStoreId123"
    assert kvs.name is None
    metadata = await kvs.get_metadata()
    assert metadata.created_at.isoformat() == "2025-01-02T03:04:05.678901+00:00"
    assert (await KeyValueStore.open(id="crawleeStoreId123", storage_client=client)) is kvs
    assert [m.id for m in await client.list_key_value_stores()] == ["crawleeStoreId123"]


async def test_crawlee_records_are_read_with_their_types(crawlee_folder: Path, storage_dir: Path) -> None:
    kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=storage_dir))

    assert await kvs.get_value("CRAWLEE_STATE") == {"requestsFinished": 7}
    assert await kvs.get_value("page.html") == "<html>é</html>"
    assert await kvs.get_value("screenshot") == PNG
    assert await kvs.get_value("notes") == "plain text"
    assert await kvs.get_value("dir/with spaces?") == b"\x00\x01"
    assert await kvs.get_value("SDK_SESSION_POOL_STATE") == [1, 2, 3]
    for key, content_type, data in CRAWLEE_RECORDS:
        record = await kvs.client.get_record(key=key)
        assert record is not None
        assert (record.value, record.content_type) == (data, content_type)
        assert await kvs.record_exists(key)


async def test_crawlee_keys_are_listed_with_sizes(crawlee_folder: Path, storage_dir: Path) -> None:
    kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=storage_dir))

    listed = [(info.key, info.size) for info in await kvs.list_keys()]

    assert listed == sorted((key, len(data)) for key, _, data in CRAWLEE_RECORDS)


@pytest.mark.parametrize(
    ("key", "value", "new_file"),
    [
        ("CRAWLEE_STATE", {"requestsFinished": 8}, "CRAWLEE_STATE.json"),
        ("page.html", "<html>new</html>", "page.html.txt"),
        ("screenshot", b"new png", "screenshot.bin"),
        ("dir/with spaces?", "now text", "dir%2Fwith%20spaces%3F.txt"),
    ],
)
async def test_writing_a_crawlee_record_replaces_its_pair(
    crawlee_folder: Path, storage_dir: Path, key: str, value: object, new_file: str
) -> None:
    kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    crawlee_name = quote(key, safe="")
    before = _names(crawlee_folder)

    await kvs.set_value(key, value)

    after = _names(crawlee_folder) - {".lock"}
    assert after == (before - {crawlee_name, f"{crawlee_name}.__metadata__.json"}) | {new_file}
    assert await kvs.get_value(key) == value
    assert [info.key for info in await kvs.list_keys()] == sorted(k for k, _, _ in CRAWLEE_RECORDS)
    for other, _, data in CRAWLEE_RECORDS:
        if other != key:
            record = await kvs.client.get_record(key=other)
            assert record is not None
            assert record.value == data


async def test_crawlee_record_survives_a_restart_after_being_rewritten(
    crawlee_folder: Path, storage_dir: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    await kvs.set_value("CRAWLEE_STATE", {"requestsFinished": 9})

    reopened = await KeyValueStore.open(storage_client=restart())

    assert await reopened.get_value("CRAWLEE_STATE") == {"requestsFinished": 9}
    assert not (crawlee_folder / "CRAWLEE_STATE").exists()


async def test_deleting_a_crawlee_record_removes_both_files(crawlee_folder: Path, storage_dir: Path) -> None:
    kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=storage_dir))

    assert await kvs.delete_value("page.html") is True

    assert not (crawlee_folder / "page.html").exists()
    assert not (crawlee_folder / "page.html.__metadata__.json").exists()
    assert await kvs.get_value("page.html") is None


async def test_crawlee_conditional_write(crawlee_folder: Path, storage_dir: Path) -> None:
    kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    record = await kvs.get_record("CRAWLEE_STATE")
    assert record is not None

    await kvs.set_value("CRAWLEE_STATE", {"requestsFinished": 8}, if_version=record.version)

    assert await kvs.get_value("CRAWLEE_STATE") == {"requestsFinished": 8}


async def test_named_crawlee_store(storage_dir: Path) -> None:
    _write_crawlee_store(storage_dir, name="my-store", store_id="namedCrawleeId01")

    kvs = await KeyValueStore.open(name="my-store", storage_client=FileSystemStorageClient(storage_dir=storage_dir))

    assert (kvs.id, kvs.name) == ("namedCrawleeId01", "my-store")
    assert await kvs.get_value("CRAWLEE_STATE") == {"requestsFinished": 7}


async def test_crawlee_file_without_sidecar_is_not_a_record(crawlee_folder: Path, storage_dir: Path) -> None:
    (crawlee_folder / "orphan").write_bytes(b"no sidecar")
    (crawlee_folder / "broken.__metadata__.json").write_text("{not json")
    (crawlee_folder / "broken").write_bytes(b"x")

    kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=storage_dir))

    keys = [info.key for info in await kvs.list_keys()]
    assert keys == sorted(k for k, _, _ in CRAWLEE_RECORDS)


@pytest.mark.parametrize(
    ("crawlee_key", "crawlee_type", "crawlee_data", "key", "value"),
    [
        ("page.html", "text/html; charset=utf-8", b"<crawlee/>", "page", "<mine>"),
        ("notes.txt", "text/plain; charset=utf-8", b"crawlee", "notes", "ours"),
        ("state.json", "application/json; charset=utf-8", b'{"c": 1}', "state", {"ours": True}),
        ("blob.bin", "application/octet-stream", b"\x00c", "blob", b"ours"),
    ],
)
async def test_a_key_whose_file_name_a_crawlee_record_holds(
    *,
    crawlee_folder: Path,
    storage_dir: Path,
    restart: Callable[[], FileSystemStorageClient],
    crawlee_key: str,
    crawlee_type: str,
    crawlee_data: bytes,
    key: str,
    value: object,
) -> None:
    # Crawlee names a record file by the bare key, we add an extension: Crawlee's `page.html` is our `page`
    # as HTML. Writing `page` must not overwrite Crawlee's record.
    (crawlee_folder / crawlee_key).write_bytes(crawlee_data)
    sidecar = {"key": crawlee_key, "content_type": crawlee_type, "size": len(crawlee_data)}
    (crawlee_folder / f"{crawlee_key}.__metadata__.json").write_text(json.dumps(sidecar))
    kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    content_type = "text/html; charset=utf-8" if key == "page" else None

    await kvs.set_value(key, value, content_type)

    expected_keys = sorted({*(k for k, _, _ in CRAWLEE_RECORDS), crawlee_key, key})
    for store in (kvs, await KeyValueStore.open(storage_client=restart())):
        assert await store.get_value(key) == value
        record = await store.client.get_record(key=crawlee_key)
        assert record is not None
        assert (record.value, record.content_type) == (crawlee_data, crawlee_type)
        assert [info.key for info in await store.list_keys()] == expected_keys
    assert not (crawlee_folder / f"{crawlee_key}.__metadata__.json").exists()
