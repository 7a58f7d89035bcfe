"""Errors of the file system client: clear messages, the library's own exceptions, never a raw OSError."""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

import pytest

from recoverable.errors import InvalidStoreNameError, StorageBackendError, StorageError
from recoverable.storages import FileSystemStorageClient, KeyValueStore, StorageClient
from recoverable.storages._backend_errors import shown_key

if TYPE_CHECKING:
    from pathlib import Path


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


async def test_damaged_store_metadata(storage_client: StorageClient, stores_dir: Path) -> None:
    kvs = await KeyValueStore.open(name="damaged", storage_client=storage_client)
    await kvs.set_value("k", 1)
    metadata_file = stores_dir / "damaged" / "__metadata__.json"
    metadata_file.write_text("{this is not json")

    with pytest.raises(StorageBackendError) as info:
        await FileSystemStorageClient(storage_dir=stores_dir.parent).open_key_value_store_client(name="damaged")

    message = str(info.value)
    assert str(metadata_file) in message
    assert "damaged" in message
    assert "restore it from a backup or move it away" in message
    assert info.value.store == "damaged"
    assert metadata_file.read_text() == "{this is not json"


async def test_metadata_of_the_wrong_shape(storage_client: StorageClient, stores_dir: Path) -> None:
    _write(stores_dir / "shape" / "__metadata__.json", '{"name": "shape"}')

    with pytest.raises(StorageBackendError, match="is damaged"):
        await KeyValueStore.open(name="shape", storage_client=storage_client)


async def test_a_damaged_store_does_not_hide_the_others(storage_client: StorageClient, stores_dir: Path) -> None:
    good = await KeyValueStore.open(name="good", storage_client=storage_client)
    await KeyValueStore.open(name="bad", storage_client=storage_client)
    (stores_dir / "bad" / "__metadata__.json").write_text("[]")
    client = FileSystemStorageClient(storage_dir=stores_dir.parent)

    assert [m.id for m in await client.list_key_value_stores()] == [good.id]
    assert (await KeyValueStore.open(id=good.id, storage_client=client)).name == "good"


async def test_folder_without_metadata_becomes_a_store(storage_client: StorageClient, stores_dir: Path) -> None:
    _write(stores_dir / "by-hand" / "k.txt", "made by hand")

    kvs = await KeyValueStore.open(name="by-hand", storage_client=storage_client)

    assert await kvs.get_value("k") == "made by hand"
    assert (stores_dir / "by-hand" / "__metadata__.json").is_file()


async def test_the_name_default_is_reserved(storage_client: StorageClient) -> None:
    with pytest.raises(InvalidStoreNameError) as info:
        await KeyValueStore.open(name="default", storage_client=storage_client)

    assert "'default' is reserved" in str(info.value)
    assert await storage_client.list_key_value_stores() == []


async def test_storage_folder_that_is_a_file(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "storage"
    not_a_folder.write_text("I am a file")

    with pytest.raises(StorageBackendError) as info:
        await KeyValueStore.open(name="s", storage_client=FileSystemStorageClient(storage_dir=not_a_folder))

    assert isinstance(info.value.__cause__, OSError)
    assert str(not_a_folder) in str(info.value)
    assert "'s'" in str(info.value)


async def test_store_folder_that_is_a_file(storage_client: StorageClient, stores_dir: Path) -> None:
    _write(stores_dir / "blocked", "I am a file")

    with pytest.raises(StorageError) as info:
        await KeyValueStore.open(name="blocked", storage_client=storage_client)

    assert isinstance(info.value, StorageBackendError)
    assert isinstance(info.value.__cause__, OSError)


async def test_record_path_taken_by_a_folder(storage_client: StorageClient, stores_dir: Path) -> None:
    kvs = await KeyValueStore.open(name="taken", storage_client=storage_client)
    (stores_dir / "taken" / "k.json").mkdir()

    with pytest.raises(StorageBackendError) as info:
        await kvs.set_value("k", {"a": 1})

    assert isinstance(info.value.__cause__, OSError)
    assert info.value.key == "k"
    assert "'taken'" in str(info.value)
    assert "is a directory" in str(info.value)
    # Never "no record": a state would start from its default and its next save would replace the folder.
    with pytest.raises(StorageBackendError, match="is a directory"):
        await kvs.get_value("k")
    assert (stores_dir / "taken" / "k.json").is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not deny root; the tests above use files instead")
async def test_read_only_store_folder(storage_client: StorageClient, stores_dir: Path) -> None:
    kvs = await KeyValueStore.open(name="read-only", storage_client=storage_client)
    await kvs.set_value("k", "old")
    folder = stores_dir / "read-only"
    folder.chmod(0o500)
    try:
        with pytest.raises(StorageBackendError) as info:
            await kvs.set_value("k", "new")
        assert isinstance(info.value.__cause__, PermissionError)
        assert "check that the folder exists and is writable" in str(info.value)
        assert await kvs.get_value("k") == "old"
    finally:
        folder.chmod(0o700)


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not deny root; the tests above use files instead")
async def test_read_only_storage_folder(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    root.mkdir()
    root.chmod(0o500)
    try:
        with pytest.raises(StorageBackendError) as info:
            await KeyValueStore.open(name="s", storage_client=FileSystemStorageClient(storage_dir=root))
        assert isinstance(info.value.__cause__, PermissionError)
    finally:
        root.chmod(0o700)


async def test_a_failure_of_the_disk_is_told_by_the_one_mapping_of_backend_errors(
    storage_client: StorageClient, stores_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kvs = await KeyValueStore.open(name="mapped", storage_client=storage_client)
    key = "k" * 200

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StorageBackendError) as info:
        await kvs.set_value(key, 1)
    monkeypatch.undo()

    assert str(info.value) == (
        f"could not write record {shown_key(key)!r} of key-value store 'mapped' in {stores_dir / 'mapped'}: "
        "Input/output error (check that the folder exists and is writable)"
    )
    assert (info.value.store, info.value.key) == ("mapped", key)
    assert isinstance(info.value.__cause__, OSError)
