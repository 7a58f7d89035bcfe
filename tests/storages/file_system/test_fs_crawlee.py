"""A storage folder written by Crawlee for Python is read as it is, and written in Crawlee's layout.

A store whose `__metadata__.json` is in Crawlee's spelling (Crawlee made or opened it) keeps Crawlee's
layout: a record is its file and a sidecar. A Crawlee record found in one of this library's stores is moved
to this library's layout when it is written. The folders here are written by hand, in Crawlee's format; the
tests of `test_fs_crawlee_interop.py` run the real Crawlee.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from recoverable.errors import StorageBackendError, VersionConflictError
from recoverable.storages import FileSystemStorageClient, KeyValueStore
from recoverable.storages._file_system._layout import key_hash
from recoverable.storages._file_system._store_folder import version_of

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

JSON = "application/json"
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
    ("key", "value", "content_type"),
    [
        ("CRAWLEE_STATE", {"requestsFinished": 8}, "application/json"),
        ("page.html", "<html>new</html>", "text/plain; charset=utf-8"),
        ("screenshot", b"new png", "application/octet-stream"),
        ("dir/with spaces?", "now text", "text/plain; charset=utf-8"),
        ("a new key", [1, 2], "application/json"),
    ],
)
async def test_writing_into_a_crawlee_store_keeps_crawlee_s_layout(
    crawlee_folder: Path, storage_dir: Path, key: str, value: object, content_type: str
) -> None:
    kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    crawlee_name = quote(key, safe="")
    before = _names(crawlee_folder)

    await kvs.set_value(key, value)

    after = _names(crawlee_folder) - {".lock"}
    assert after == before | {crawlee_name, f"{crawlee_name}.__metadata__.json"}
    record = await kvs.client.get_record(key=key)
    assert record is not None
    assert (crawlee_folder / crawlee_name).read_bytes() == record.value
    sidecar = json.loads((crawlee_folder / f"{crawlee_name}.__metadata__.json").read_text())
    assert sidecar == {"key": key, "content_type": content_type, "size": len(record.value)}
    metadata = json.loads((crawlee_folder / "__metadata__.json").read_text())
    assert metadata["id"] == "crawleeStoreId123"
    assert metadata["created_at"] == "2025-01-02T03:04:05.678901Z"
    assert metadata["modified_at"] > "2025-01-02T03:04:59Z"
    assert "createdAt" not in metadata
    assert await kvs.get_value(key) == value
    assert [info.key for info in await kvs.list_keys()] == sorted({key, *(k for k, _, _ in CRAWLEE_RECORDS)})
    for other, _, data in CRAWLEE_RECORDS:
        if other != key:
            kept = await kvs.client.get_record(key=other)
            assert kept is not None
            assert kept.value == data


async def test_crawlee_record_survives_a_restart_after_being_rewritten(
    crawlee_folder: Path, storage_dir: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    await kvs.set_value("CRAWLEE_STATE", {"requestsFinished": 9})
    await kvs.set_value("notes", {"now": "json"})

    reopened = await KeyValueStore.open(storage_client=restart())

    assert await reopened.get_value("CRAWLEE_STATE") == {"requestsFinished": 9}
    assert await reopened.get_value("notes") == {"now": "json"}
    assert json.loads((crawlee_folder / "CRAWLEE_STATE").read_bytes()) == {"requestsFinished": 9}
    assert not [name for name in _names(crawlee_folder) if name.startswith(".~")]


@pytest.mark.parametrize(
    "key",
    [".lock", ".keys", "__metadata__.json", "x.__metadata__.json", ".~tmp.x", "k" * 300, "é" * 100],
)
async def test_keys_crawlee_cannot_name_stay_in_this_library_s_layout(
    crawlee_folder: Path, storage_dir: Path, restart: Callable[[], FileSystemStorageClient], key: str
) -> None:
    kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    metadata = (crawlee_folder / "__metadata__.json").read_bytes()

    await kvs.set_value(key, {"kept": key})

    assert not (crawlee_folder / ".keys").exists()  # Crawlee's purge fails on a folder
    assert json.loads((crawlee_folder / "__metadata__.json").read_bytes())["id"] == json.loads(metadata)["id"]
    assert (crawlee_folder / ".lock").stat().st_size <= 16
    for store in (kvs, await KeyValueStore.open(storage_client=restart())):
        assert await store.get_value(key) == {"kept": key}
        assert key in [info.key for info in await store.list_keys()]
    await kvs.delete_value(key)
    assert await kvs.get_value(key) is None


async def test_a_conditional_write_over_a_crawlee_record_that_changed_fails(
    crawlee_folder: Path, storage_dir: Path
) -> None:
    kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    record = await kvs.get_record("CRAWLEE_STATE")
    assert record is not None
    # Crawlee rewrites the record as it does: a new file renamed over the old one.
    (crawlee_folder / "new").write_bytes(b'{"requestsFinished": 100}')
    (crawlee_folder / "new").replace(crawlee_folder / "CRAWLEE_STATE")

    with pytest.raises(VersionConflictError):
        await kvs.set_value("CRAWLEE_STATE", {"requestsFinished": 8}, if_version=record.version)
    assert await kvs.get_value("CRAWLEE_STATE") == {"requestsFinished": 100}


async def test_a_change_of_content_type_cut_short_is_completed(
    crawlee_folder: Path, storage_dir: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    # The state a crash leaves between the rename of the record file and the rewrite of its sidecar.
    kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    await kvs.set_value("notes", "text")
    (crawlee_folder / "notes").write_bytes(b'{"now": "json"}')
    version = version_of((crawlee_folder / "notes").stat())
    announcement = {"record": "notes", "version": version, "key": "notes", "content_type": JSON, "size": 15}
    (crawlee_folder / f".~pending.{key_hash('notes')}").write_text(json.dumps(announcement))

    reopened = await KeyValueStore.open(storage_client=restart())
    assert await reopened.get_value("notes") == {"now": "json"}
    await reopened.set_value("other", 1)

    sidecar = json.loads((crawlee_folder / "notes.__metadata__.json").read_text())
    assert sidecar == {"key": "notes", "content_type": JSON, "size": 15}
    assert not [name for name in _names(crawlee_folder) if name.startswith(".~")]


async def test_an_announcement_whose_file_never_landed_is_dropped(
    crawlee_folder: Path, storage_dir: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    # A crash before the rename: the record is the old one, and stays so.
    announcement = {"record": "notes", "version": "1-2-3", "key": "notes", "content_type": JSON, "size": 15}
    (crawlee_folder / f".~pending.{key_hash('notes')}").write_text(json.dumps(announcement))

    kvs = await KeyValueStore.open(storage_client=restart())
    assert await kvs.get_value("notes") == "plain text"
    await kvs.set_value("other", 1)

    assert await kvs.get_value("notes") == "plain text"
    assert json.loads((crawlee_folder / "notes.__metadata__.json").read_text())["content_type"].startswith("text/")
    assert not [name for name in _names(crawlee_folder) if name.startswith(".~")]


async def test_a_sidecar_without_its_record_is_no_record_and_is_removed(
    crawlee_folder: Path, storage_dir: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    # What a crash leaves in the middle of a first write (sidecar first) or of a delete (record file first).
    (crawlee_folder / "half.__metadata__.json").write_text(json.dumps({"key": "half", "content_type": JSON}))

    kvs = await KeyValueStore.open(storage_client=restart())
    assert await kvs.get_value("half") is None
    assert "half" not in [info.key for info in await kvs.list_keys()]
    await kvs.set_value("other", 1)

    assert not (crawlee_folder / "half.__metadata__.json").exists()


async def test_this_library_s_store_with_a_crawlee_record_moves_it_on_write(storage_dir: Path) -> None:
    # A Crawlee record copied into a store of this library (its metadata in this library's spelling).
    kvs = await KeyValueStore.open(name="ours", storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    folder = storage_dir / "key_value_stores" / "ours"
    (folder / "CRAWLEE_STATE").write_bytes(b'{"requestsFinished": 7}')
    (folder / "CRAWLEE_STATE.__metadata__.json").write_text(
        json.dumps({"key": "CRAWLEE_STATE", "content_type": JSON, "size": 23})
    )
    assert await kvs.get_value("CRAWLEE_STATE") == {"requestsFinished": 7}

    await kvs.set_value("CRAWLEE_STATE", {"requestsFinished": 8})

    assert _names(folder) - {".lock"} == {"__metadata__.json", "CRAWLEE_STATE.json"}
    assert await kvs.get_value("CRAWLEE_STATE") == {"requestsFinished": 8}


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

    version = await kvs.set_value("CRAWLEE_STATE", {"requestsFinished": 8}, if_version=record.version)

    assert version != record.version
    assert await kvs.get_value("CRAWLEE_STATE") == {"requestsFinished": 8}
    with pytest.raises(VersionConflictError):
        await kvs.set_value("CRAWLEE_STATE", {"requestsFinished": 9}, if_version=record.version)
    with pytest.raises(VersionConflictError):
        await kvs.set_value("notes", "again", if_absent=True)
    # A change of content type gives a new version too, and the old one no longer matches.
    changed = await kvs.set_value("CRAWLEE_STATE", "text now", if_version=version)
    assert changed != version
    assert await kvs.delete_value("CRAWLEE_STATE", if_version=changed) is True


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
    # Crawlee names a record file by the bare key, this library's layout adds an extension: Crawlee's
    # `page.html` is this library's `page` as HTML. Writing `page` must not overwrite Crawlee's record (in a
    # Crawlee store, `page` is written as Crawlee writes it, in the file `page`).
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
    assert (crawlee_folder / f"{crawlee_key}.__metadata__.json").exists()
    assert (crawlee_folder / f"{key}.__metadata__.json").exists()


# --- links swapped into a Crawlee store ----------------------------------------------------------------

SECRET = b'{"secret": "outside the store"}'


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "secret.json"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def _untouched(outside: Path) -> bool:
    return outside.read_bytes() == SECRET


def _link(path: Path, target: Path) -> None:
    temp = path.with_name(path.name + ".swap")
    temp.symlink_to(target)
    temp.replace(path)


@pytest.mark.parametrize("place", ["record", "sidecar"])
@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
async def test_a_link_where_a_new_crawlee_record_goes_is_refused(
    *,
    crawlee_folder: Path,
    storage_dir: Path,
    outside: Path,
    restart: Callable[[], FileSystemStorageClient],
    place: str,
    cold: bool,
) -> None:
    kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    assert await kvs.get_value("notes") == "plain text"
    path = crawlee_folder / ("fresh" if place == "record" else "fresh.__metadata__.json")
    _link(path, outside)
    if cold:
        kvs = await KeyValueStore.open(storage_client=restart())

    with pytest.raises(StorageBackendError, match="symbolic link"):
        await kvs.set_value("fresh", {"written": "through a link"})

    assert path.is_symlink()
    assert _untouched(outside)
    assert await kvs.get_value("notes") == "plain text"


@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
async def test_a_link_for_the_metadata_of_a_crawlee_store_is_never_written_through(
    crawlee_folder: Path,
    storage_dir: Path,
    outside: Path,
    restart: Callable[[], FileSystemStorageClient],
    *,
    cold: bool,
) -> None:
    kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    await kvs.set_value("notes", "before")
    _link(crawlee_folder / "__metadata__.json", outside)

    if cold:
        with pytest.raises(StorageBackendError, match="symbolic link"):
            await KeyValueStore.open(storage_client=restart())
    with pytest.raises(StorageBackendError, match="symbolic link"):
        await kvs.set_value("notes", "after")

    assert _untouched(outside)
    assert (crawlee_folder / "notes").read_bytes() == b"before"


async def test_links_in_place_of_an_announcement_or_an_orphan_sidecar_are_not_followed(
    crawlee_folder: Path, storage_dir: Path, tmp_path: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    # An announcement outside the store that would give `notes` another type, and an outside "sidecar".
    fake = tmp_path / "fake.json"
    version = version_of((crawlee_folder / "notes").stat())
    fake.write_text(json.dumps({"record": "notes", "version": version, "key": "notes", "content_type": JSON}))
    _link(crawlee_folder / f".~pending.{key_hash('notes')}", fake)
    _link(crawlee_folder / "ghost.__metadata__.json", fake)

    kvs = await KeyValueStore.open(storage_client=restart())
    assert await kvs.get_value("notes") == "plain text"
    await kvs.set_value("other", 1)

    assert await kvs.get_value("notes") == "plain text"
    assert json.loads(fake.read_text())["content_type"] == JSON
    assert (crawlee_folder / "ghost.__metadata__.json").is_symlink()
    assert not (crawlee_folder / f".~pending.{key_hash('notes')}").exists()


async def test_a_link_to_a_crawlee_alias_store_outside_is_not_opened(storage_dir: Path, tmp_path: Path) -> None:
    elsewhere = _write_crawlee_store(tmp_path / "elsewhere", name="default", store_id="outsideStoreId123")
    stores = storage_dir / "key_value_stores"
    stores.mkdir(parents=True)
    (stores / "run").symlink_to(elsewhere)

    kvs = await KeyValueStore.open(alias="run", storage_client=FileSystemStorageClient(storage_dir=storage_dir))

    assert kvs.id != "outsideStoreId123"
    assert await kvs.get_value("CRAWLEE_STATE") is None
    assert (stores / "_alias_run" / "__metadata__.json").exists()


async def test_a_warm_reader_sees_the_new_type_of_a_record_another_process_rewrote(
    crawlee_folder: Path, storage_dir: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    reader = await KeyValueStore.open(storage_client=restart())
    assert await reader.get_value("notes") == "plain text"
    writer = await KeyValueStore.open(storage_client=restart())  # another process: an index of its own

    await writer.set_value("notes", {"now": "json"})
    assert await reader.get_value("notes") == {"now": "json"}

    # Crawlee rewrites it too: the file first, then the sidecar.
    (crawlee_folder / "tmp").write_bytes(b"text again")
    (crawlee_folder / "tmp").replace(crawlee_folder / "notes")
    sidecar = {"key": "notes", "content_type": "text/plain; charset=utf-8", "size": 10}
    (crawlee_folder / "tmp").write_text(json.dumps(sidecar))
    (crawlee_folder / "tmp").replace(crawlee_folder / "notes.__metadata__.json")
    assert await reader.get_value("notes") == "text again"
    assert await writer.get_value("notes") == "text again"


async def test_this_library_s_record_in_the_file_a_crawlee_key_needs_moves_to_crawlee_s_layout(
    storage_dir: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    # The store was this library's (the key `page` as HTML is the file `page.html`), then Crawlee opened it.
    kvs = await KeyValueStore.open(name="mixed", storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    await kvs.set_value("page", "<p>ours</p>", "text/html; charset=utf-8")
    folder = storage_dir / "key_value_stores" / "mixed"
    metadata = json.loads((folder / "__metadata__.json").read_text())
    crawlee_spelling = {"id": metadata["id"], "name": "mixed", "created_at": metadata["createdAt"]}
    (folder / "__metadata__.json").write_text(json.dumps(crawlee_spelling))

    await kvs.set_value("page.html", "<p>the key page.html</p>", "text/html; charset=utf-8")

    assert json.loads((folder / "page.__metadata__.json").read_text())["key"] == "page"
    assert json.loads((folder / "page.html.__metadata__.json").read_text())["key"] == "page.html"
    for store in (kvs, await KeyValueStore.open(name="mixed", storage_client=restart())):
        assert await store.get_value("page") == "<p>ours</p>"
        assert await store.get_value("page.html") == "<p>the key page.html</p>"
        assert [info.key for info in await store.list_keys()] == ["page", "page.html"]
