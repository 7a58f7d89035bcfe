"""The folder layout on disk is the documented one, readable with any editor."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from recoverable.errors import StorageBackendError
from recoverable.storages import MAX_KEY_LENGTH, KeyValueStore, StorageClient
from recoverable.storages._file_system._layout import TEMP_PREFIX


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def _files(folder: Path) -> set[str]:
    """Names of the files in a store folder, without the writers' lock."""
    return {p.name for p in folder.iterdir() if p.is_file()} - {".lock"}


async def test_records_are_files_named_by_key_and_type(storage_client: StorageClient, stores_dir: Path) -> None:
    kvs = await KeyValueStore.open(name="my-crawl", storage_client=storage_client)

    await kvs.set_value("state", {"page": 3, "urls": ["a", "b"]})
    await kvs.set_value("notes", "hello\nworld")
    await kvs.set_value("blob", b"\x00\x01\x02")
    await kvs.set_value("page", "<p>hi</p>", "text/html; charset=utf-8")
    await kvs.set_value("shot", b"\x89PNG", "image/png")
    await kvs.set_value("odd", b"x", "application/x-thing+zip; v=2")

    folder = stores_dir / "my-crawl"
    assert json.loads((folder / "state.json").read_text()) == {"page": 3, "urls": ["a", "b"]}
    assert (folder / "notes.txt").read_text() == "hello\nworld"
    assert (folder / "blob.bin").read_bytes() == b"\x00\x01\x02"
    assert (folder / "page.html").read_text() == "<p>hi</p>"
    assert (folder / "shot.png").read_bytes() == b"\x89PNG"
    assert (folder / "odd.ct~application%2Fx-thing%2Bzip%3B%20v%3D2").read_bytes() == b"x"
    assert _files(folder) == {
        "__metadata__.json",
        "state.json",
        "notes.txt",
        "blob.bin",
        "page.html",
        "shot.png",
        "odd.ct~application%2Fx-thing%2Bzip%3B%20v%3D2",
    }


async def test_json_records_are_indented_and_readable(storage_client: StorageClient, stores_dir: Path) -> None:
    kvs = await KeyValueStore.open(storage_client=storage_client)
    await kvs.set_value("k", {"a": [1, 2], "ü": "é"})

    text = (stores_dir / "default" / "k.json").read_text(encoding="utf-8")
    assert "\n  " in text
    assert json.loads(text) == {"a": [1, 2], "ü": "é"}


async def test_store_folders(storage_client: StorageClient, stores_dir: Path) -> None:
    named = await KeyValueStore.open(name="named-1", storage_client=storage_client)
    aliased = await KeyValueStore.open(alias="x", storage_client=storage_client)
    default = await KeyValueStore.open(storage_client=storage_client)

    assert sorted(_names(stores_dir)) == ["_alias_x", "default", "named-1"]
    for folder, store in (("named-1", named), ("_alias_x", aliased), ("default", default)):
        metadata = json.loads((stores_dir / folder / "__metadata__.json").read_text())
        assert metadata["id"] == store.id
        assert metadata["name"] == store.name
        assert "createdAt" in metadata


async def test_metadata_file_is_written_once(storage_client: StorageClient, stores_dir: Path) -> None:
    kvs = await KeyValueStore.open(name="once", storage_client=storage_client)
    metadata_file = stores_dir / "once" / "__metadata__.json"
    before = (metadata_file.read_bytes(), metadata_file.stat().st_ino)

    for i in range(3):
        await kvs.set_value(f"k{i}", i)
    await kvs.delete_value("k0")
    await kvs.purge()

    assert (metadata_file.read_bytes(), metadata_file.stat().st_ino) == before


async def test_keys_are_percent_encoded(storage_client: StorageClient, stores_dir: Path) -> None:
    kvs = await KeyValueStore.open(name="enc", storage_client=storage_client)
    expected = {
        "a/b": "a%2Fb.json",
        "../up": "..%2Fup.json",
        "a b": "a%20b.json",
        "100%": "100%25.json",
        "é": "%C3%A9.json",
        "Keep-_.!'()": "Keep-_.!'().json",
        "__metadata__": "%5F_metadata__.json",
        ".lock": ".lock.json",
        "~": "%7E.json",
    }
    for key in expected:
        await kvs.set_value(key, 1)

    assert _files(stores_dir / "enc") == {*expected.values(), "__metadata__.json"}


async def test_long_keys_keep_their_text_in_dot_keys(storage_client: StorageClient, stores_dir: Path) -> None:
    kvs = await KeyValueStore.open(name="long", storage_client=storage_client)
    key = "é" * MAX_KEY_LENGTH

    await kvs.set_value(key, {"long": True})

    folder = stores_dir / "long"
    (record,) = (p for p in folder.iterdir() if p.name.endswith(".json") and p.name != "__metadata__.json")
    assert len(record.name.encode()) <= 240
    assert record.name.startswith("%C3%A9")
    assert "~" in record.name
    hashed = record.name.removesuffix(".json").rsplit("~", 1)[1]
    assert (folder / ".keys" / hashed).read_text(encoding="utf-8") == key
    assert json.loads(record.read_text()) == {"long": True}


async def test_changing_the_content_type_leaves_one_file(storage_client: StorageClient, stores_dir: Path) -> None:
    kvs = await KeyValueStore.open(name="retyped", storage_client=storage_client)
    folder = stores_dir / "retyped"

    await kvs.set_value("k", {"a": 1})
    assert _files(folder) == {"__metadata__.json", "k.json"}
    await kvs.set_value("k", "text now")
    assert _files(folder) == {"__metadata__.json", "k.txt"}
    await kvs.set_value("k", b"bytes now")
    assert _files(folder) == {"__metadata__.json", "k.bin"}
    await kvs.set_value("k", b"odd", "application/x-odd")
    assert _files(folder) == {"__metadata__.json", "k.ct~application%2Fx-odd"}

    assert await kvs.get_value("k") == b"odd"
    assert [info.key for info in await kvs.list_keys()] == ["k"]


async def test_delete_and_purge_remove_the_files(storage_client: StorageClient, stores_dir: Path) -> None:
    kvs = await KeyValueStore.open(name="removed", storage_client=storage_client)
    folder = stores_dir / "removed"
    await kvs.set_value("a", 1)
    await kvs.set_value("b", "x")
    await kvs.set_value("l" * 500, b"long")

    await kvs.delete_value("a")
    assert "a.json" not in _files(folder)
    await kvs.purge()

    assert _files(folder) == {"__metadata__.json"}
    assert not (folder / ".keys").exists()


async def test_drop_removes_the_folder(storage_client: StorageClient, stores_dir: Path) -> None:
    kvs = await KeyValueStore.open(name="gone", storage_client=storage_client)
    await kvs.set_value("a", 1)

    await kvs.drop()

    assert _names(stores_dir) == set()


HOSTILE_KEYS = [
    "../../../../escaped",
    "../sibling/file",
    "/absolute",
    "/",
    "..",
    ".",
    "a/../../b",
    "..\\..\\win",
    "\\\\server\\share",
    "C:\\x",
    "~/home",
    "$HOME",
    "`x`",
    "key\nwith\nnewlines",
    ".keys",
    ".keys/abc",
    ".lock",
    "__metadata__.json",
    "x.__metadata__.json",
    TEMP_PREFIX + "1234",
    "../" * 300,
    "/" * MAX_KEY_LENGTH,
]


async def test_no_key_creates_a_file_outside_its_store(storage_client: StorageClient, tmp_path: Path) -> None:
    kvs = await KeyValueStore.open(name="hostile", storage_client=storage_client)
    for key in HOSTILE_KEYS:
        for value in ({"k": key}, key, key.encode()):
            await kvs.set_value(key, value)

    store_folder = (tmp_path / "storage" / "key_value_stores" / "hostile").resolve()
    outside = []
    for root, dirs, files in os.walk(tmp_path):
        for name in [*dirs, *files]:
            path = (Path(root) / name).resolve()
            if path != store_folder and store_folder not in path.parents and path not in store_folder.parents:
                outside.append(path)
    assert outside == []
    assert all(p.parent in (store_folder, store_folder / ".keys") for p in store_folder.rglob("*") if p.is_file())
    assert sorted(info.key for info in await kvs.list_keys()) == sorted(HOSTILE_KEYS)
    for key in HOSTILE_KEYS:
        assert await kvs.get_value(key) == key.encode()


async def test_files_that_are_not_records_are_ignored(storage_client: StorageClient, stores_dir: Path) -> None:
    kvs = await KeyValueStore.open(name="foreign", storage_client=storage_client)
    await kvs.set_value("real", 1)
    folder = stores_dir / "foreign"
    for name in ["README", "notes.unknown-ext", "bad%FF.json", "x%2.json", "50%.txt", "y%zz.bin", ".hidden"]:
        (folder / name).write_text("not a record")
    (folder / f"{TEMP_PREFIX}leftover").write_text("{}")

    assert [info.key for info in await kvs.list_keys()] == ["real"]
    assert await kvs.get_value("real") == 1
    await kvs.set_value("second", 2)
    assert [info.key for info in await kvs.list_keys()] == ["real", "second"]


async def test_a_folder_named_like_a_record_is_listed_and_refused(
    storage_client: StorageClient, stores_dir: Path
) -> None:
    kvs = await KeyValueStore.open(name="foreign", storage_client=storage_client)
    await kvs.set_value("real", 1)
    (stores_dir / "foreign" / "subfolder.json").mkdir()

    # Listed (with size 0), so that whoever goes through the keys meets it; reading it names the folder.
    assert [(info.key, info.size) for info in await kvs.list_keys()] == [("real", 1), ("subfolder", 0)]
    with pytest.raises(StorageBackendError, match=r"subfolder\.json is a directory"):
        await kvs.get_value("subfolder")
    assert await kvs.get_value("real") == 1
