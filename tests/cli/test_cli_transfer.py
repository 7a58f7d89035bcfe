"""`recoverable export`, `import` and `copy`: every record moved exactly, between every storage, folders and Crawlee's.

An export is opened afterwards with this library's file system client and with Crawlee's; an import never
replaces a record without --overwrite, and writes nothing at all when a key clashes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storage_clients import FileSystemStorageClient as CrawleeFileSystemStorageClient

from recoverable.storages import FileSystemStorageClient, StorageClient

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from cli._support import Backend, Cli

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe"
Records = dict[str, tuple[bytes, str]]

RECORDS: Records = {
    "STATE": (b'{"pages": 3}', JSON),
    "notes": ("é\n".encode(), TEXT),
    "shot.png": (PNG, "image/png"),
    "page": (b"<p>x</p>", "text/html; charset=utf-8"),
    "odd; type": (b"x", "application/x-thing; v=1"),
    "../x": (b"[1]", JSON),
    "a/b": (b"{}", JSON),
    "STATE.lease": (b'{"owner": "gone"}', JSON),
}
LONG_KEY = "L" * 600
"""A key whose encoded file name is too long for Crawlee: it stays in this library's layout, which Crawlee skips."""


async def _write(client: StorageClient, name: str | None, records: Records) -> None:
    async with client:
        store = await client.open_key_value_store_client(**({} if name is None else {"name": name}))
        for key, (value, content_type) in records.items():
            await store.set_record(key=key, value=value, content_type=content_type)


async def _read(client: StorageClient, name: str | None) -> Records:
    async with client:
        store = await client.open_key_value_store_client(**({} if name is None else {"name": name}))
        found: Records = {}
        async for info in store.iterate_keys():
            record = await store.get_record(key=info.key)
            assert record is not None
            found[info.key] = (record.value, record.content_type)
        return found


async def _crawlee_reads(storage_dir: Path, **store: str) -> dict[str, tuple[Any, str]]:
    configuration = CrawleeConfiguration(storage_dir=str(storage_dir), purge_on_start=False)
    crawlee = await CrawleeFileSystemStorageClient().create_kvs_client(configuration=configuration, **store)
    found: dict[str, tuple[Any, str]] = {}
    async for info in crawlee.iterate_keys():
        record = await crawlee.get_value(key=info.key)
        assert record is not None, f"Crawlee lists {info.key!r} but cannot read it"
        found[info.key] = (record.value, record.content_type)
    return found


async def test_an_export_opens_with_this_library_and_with_crawlee(cli: Cli, backend: Backend, tmp_path: Path) -> None:
    name = backend.store()
    await _write(backend.new_client(), name, {**RECORDS, LONG_KEY: (b"1", JSON)})
    folder = tmp_path / "export" / "key_value_stores" / name

    exported = cli("export", name, str(folder), *backend.args, env=backend.env)
    assert exported.code == 0, exported.err
    assert exported.text == f"exported 9 records of store {name!r} to {folder}\n"
    assert exported.err == ""  # no progress bar: stderr is not a terminal

    ours = await _read(FileSystemStorageClient(storage_dir=tmp_path / "export"), name)
    assert ours == {**RECORDS, LONG_KEY: (b"1", JSON)}
    crawlee = await _crawlee_reads(tmp_path / "export", name=name)
    assert crawlee == {
        "STATE": ({"pages": 3}, JSON),
        "notes": ("é\n", TEXT),
        "shot.png": (PNG, "image/png"),
        "page": ("<p>x</p>", "text/html; charset=utf-8"),
        "odd; type": (b"x", "application/x-thing; v=1"),
        "../x": ([1], JSON),
        "a/b": ({}, JSON),
        "STATE.lease": ({"owner": "gone"}, JSON),
    }
    # Crawlee opened it (and rewrote its metadata): this library still reads every record.
    assert await _read(FileSystemStorageClient(storage_dir=tmp_path / "export"), name) == ours

    again = cli("export", name, str(folder), *backend.args, env=backend.env)
    assert again.code == 1
    assert (
        again.error_line()
        == f"recoverable export: error: {folder} exists and is not an empty folder: export into a new folder"
    )


async def test_the_default_store_exports_to_a_default_folder_and_any_folder_imports(cli: Cli, tmp_path: Path) -> None:
    await _write(FileSystemStorageClient(storage_dir=tmp_path / "storage"), None, RECORDS)
    folder = tmp_path / "backup" / "key_value_stores" / "default"
    assert cli("export", "default", str(folder)).code == 0
    assert await _read(FileSystemStorageClient(storage_dir=tmp_path / "backup"), None) == RECORDS
    assert set(await _crawlee_reads(tmp_path / "backup")) == set(RECORDS)

    # A folder anywhere, named after the store it holds: exported there, then imported back under another name.
    anywhere = tmp_path / "somewhere" / "crawl-1"
    assert cli("export", "default", str(anywhere)).code == 0
    imported = cli("import", str(anywhere), "restored")
    assert imported.code == 0, imported.err
    assert imported.text == f"imported 8 records of {anywhere} into store 'restored'\n"
    assert await _read(FileSystemStorageClient(storage_dir=tmp_path / "storage"), "restored") == RECORDS

    badly_named = cli("export", "default", str(tmp_path / "my_backup"))
    assert badly_named.code == 1
    assert "the name of the folder 'my_backup' is invalid" in badly_named.error_line()
    assert not (tmp_path / "my_backup").exists()


async def test_import_never_overwrites_without_overwrite_and_then_writes_nothing(
    cli: Cli, backend: Backend, tmp_path: Path
) -> None:
    incoming = {f"key-{i:02}": (f'{{"i": {i}}}'.encode(), JSON) for i in range(30)}
    await _write(FileSystemStorageClient(storage_dir=tmp_path / "src"), "incoming", incoming)
    folder = tmp_path / "src" / "key_value_stores" / "incoming"
    name = backend.store()
    before = {f"key-{i:02}": (b'"theirs"', JSON) for i in range(5, 17)} | {"other": (b"1", JSON)}
    await _write(backend.new_client(), name, before)

    refused = cli("import", str(folder), name, *backend.args, env=backend.env)
    assert refused.code == 1
    shown = ", ".join(repr(f"key-{i:02}") for i in range(5, 15))
    assert refused.error_line() == (
        f"recoverable import: error: store {name!r} already has 12 of the keys: {shown} and 2 more; nothing was "
        "written (pass --overwrite to replace them)"
    )
    assert await _read(backend.new_client(), name) == before

    overwritten = cli("import", str(folder), name, "--overwrite", *backend.args, env=backend.env)
    assert overwritten.code == 0, overwritten.err
    assert await _read(backend.new_client(), name) == incoming | {"other": (b"1", JSON)}

    fresh = backend.store("fresh")  # created by the import
    assert cli("import", str(folder), fresh, *backend.args, env=backend.env).code == 0
    assert await _read(backend.new_client(), fresh) == incoming


async def test_copy_a_folder_store_into_postgresql(cli: Cli, make: Callable[[str], Backend]) -> None:
    folder, postgres = make("file_system"), make("postgres")
    source, target = folder.store(), postgres.store()
    await _write(folder.new_client(), source, RECORDS)
    to = ["--to-storage-client", "sql", "--to-sql-url", postgres.spec["url"]]

    copied = cli("copy", source, target, *folder.args, *to)
    assert copied.code == 0, copied.err
    assert copied.text == f"copied 8 records of store {source!r} into store {target!r}\n"
    assert await _read(postgres.new_client(), target) == RECORDS

    again = cli(*folder.args, "copy", source, target, *to)
    assert again.code == 1
    assert "already has 8 of the keys" in again.error_line()
    # STATE has a lease record beside it: a state, replaced only with --yes when nobody can be asked.
    unconfirmed = cli("copy", source, target, "--overwrite", *folder.args, *to)
    assert unconfirmed.code == 1
    assert f"this would overwrite the state record 'STATE' of store {target!r}" in unconfirmed.error_line()
    assert cli("copy", source, target, "--overwrite", "--yes", *folder.args, *to).code == 0
    assert await _read(postgres.new_client(), target) == RECORDS

    onto_itself = cli("copy", source, source, *folder.args)
    assert onto_itself.code == 1
    assert onto_itself.error_line() == (
        f"recoverable copy: error: {source!r} and {source!r} are the same store: nothing to copy"
    )


@pytest.mark.parametrize("store", [{}, {"name": "crawlee-crawl"}], ids=["default", "named"])
async def test_copy_a_crawlee_folder_into_redis(
    cli: Cli, make: Callable[[str], Backend], tmp_path: Path, store: dict[str, str]
) -> None:
    configuration = CrawleeConfiguration(storage_dir=str(tmp_path / "crawlee"), purge_on_start=False)
    crawlee = await CrawleeFileSystemStorageClient().create_kvs_client(configuration=configuration, **store)
    await crawlee.set_value(key="CRAWLEE_STATE", value={"requestsFinished": 7})
    await crawlee.set_value(key="notes", value="plain text")
    await crawlee.set_value(key="screenshot", value=PNG)
    await crawlee.set_value(key="page.html", value="<p>é</p>", content_type="text/html; charset=utf-8")
    redis = make("redis")
    target = redis.store()
    source = store.get("name", "default")

    copied = cli(
        "--storage-dir", str(tmp_path / "crawlee"), "copy", source, target, "--to-storage-client", "redis",
        "--to-redis-url", redis.spec["url"],
    )  # fmt: skip
    assert copied.code == 0, copied.err
    expected = await _read(FileSystemStorageClient(storage_dir=tmp_path / "crawlee"), store.get("name"))
    assert set(expected) == {"CRAWLEE_STATE", "notes", "screenshot", "page.html"}
    assert expected["screenshot"] == (PNG, "application/octet-stream")
    assert await _read(redis.new_client(), target) == expected
