"""Where the file system client keeps the store of an alias: a folder name made from the alias, never the alias."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from recoverable.errors import InvalidStoreNameError
from recoverable.storages import FileSystemStorageClient, KeyValueStore
from recoverable.storages._file_system._layout import alias_dir_name, alias_from_dir_name, key_hash

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


@pytest.mark.parametrize(
    ("alias", "folder"),
    [
        ("run", "_alias_run"),
        ("Run-2", "_alias_Run-2"),
        ("..x", "_alias_..x"),
        ("%2e%2e", "_alias_%252e%252e"),
        ("a:b", "_alias_a%3Ab"),
        ("a b", "_alias_a%20b"),
        ("日本", "_alias_%E6%97%A5%E6%9C%AC"),
        (".~tmp.x", "_alias_.%7Etmp.x"),
        ("default", "default"),
    ],
)
def test_alias_folder_names(alias: str, folder: str) -> None:
    assert alias_dir_name(alias) == folder
    assert alias_from_dir_name(folder) == alias


def test_a_long_alias_is_a_prefix_and_a_hash() -> None:
    alias = "x" * 300
    folder = alias_dir_name(alias)

    assert folder.startswith("_alias_xxx")
    assert folder.endswith(f"~{key_hash(alias)}")
    assert len(folder.encode()) < 255
    assert alias_from_dir_name(folder) is None  # the metadata file holds it


async def test_the_metadata_of_an_alias_store_records_the_alias(
    stores_dir: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    alias = "é" * 300
    kvs = await KeyValueStore.open(alias=alias, storage_client=restart())
    await kvs.set_value("k", 1)

    metadata = json.loads((stores_dir / alias_dir_name(alias) / "__metadata__.json").read_text(encoding="utf-8"))

    assert metadata["alias"] == alias
    assert metadata["name"] is None
    again = await KeyValueStore.open(alias=alias, storage_client=restart())
    assert again.id == kvs.id
    assert await again.get_value("k") == 1


async def test_a_folder_holding_the_store_of_another_alias_is_refused(
    stores_dir: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    # What a file system ignoring case gives `Run` when `run` has a store (or a hash collision would).
    kvs = await KeyValueStore.open(alias="run", storage_client=restart())
    folder = stores_dir / "_alias_run"
    metadata = json.loads((folder / "__metadata__.json").read_text())
    metadata["alias"] = "RUN"
    (folder / "__metadata__.json").write_text(json.dumps(metadata))

    with pytest.raises(InvalidStoreNameError, match="clashes with the existing store of alias 'RUN'"):
        await KeyValueStore.open(alias="run", storage_client=restart())
    assert kvs.id == metadata["id"]


async def test_an_alias_folder_of_an_earlier_version_is_opened(
    stores_dir: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    folder = stores_dir / "_alias_my-run"
    folder.mkdir(parents=True)
    stamp = "2025-01-01T00:00:00Z"
    metadata = {"id": "earlierStoreId123", "name": None, "createdAt": stamp, "modifiedAt": stamp, "accessedAt": stamp}
    (folder / "__metadata__.json").write_text(json.dumps(metadata))
    (folder / "STATE.json").write_text('{"pages": 3}')

    kvs = await KeyValueStore.open(alias="my-run", storage_client=restart())

    assert kvs.id == "earlierStoreId123"
    assert await kvs.get_value("STATE") == {"pages": 3}
