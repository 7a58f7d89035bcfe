"""`recoverable stores`, `keys`, `get`, `set` and `delete`, run as the installed command against every storage.

Seed data goes in with the library's storage client; the command runs as a child process; what it printed
and what it left in the store are checked with the library again.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from cli._support import Backend, Cli
    from recoverable.storages import KeyValueStoreClient

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"
EVERY_BYTE = bytes(range(256)) * 3
LONG_KEY = "k" * 1000


async def _seed(backend: Backend, name: str, records: dict[str, tuple[bytes, str]]) -> str:
    """Write `records` into the store `name` with the library; return the store's id."""
    async with backend.new_client() as client:
        store = await client.open_key_value_store_client(name=name)
        for key, (value, content_type) in records.items():
            await store.set_record(key=key, value=value, content_type=content_type)
        return (await store.get_metadata()).id


async def _read(backend: Backend, name: str) -> dict[str, tuple[bytes, str]]:
    """Every record of the store `name`, read with the library."""
    async with backend.new_client() as client:
        store: KeyValueStoreClient = await client.open_key_value_store_client(name=name)
        found: dict[str, tuple[bytes, str]] = {}
        async for info in store.iterate_keys():
            record = await store.get_record(key=info.key)
            assert record is not None
            found[info.key] = (record.value, record.content_type)
        return found


SEED = {
    "STATE": (b'{"pages": 3, "seen": ["a", "\\u00e9"]}', JSON),
    "notes": ("plain text, é\n".encode(), TEXT),
    "blob": (EVERY_BYTE, BINARY),
    "../x": (b'"up"', JSON),
    "a/b\\c": (b"[1]", JSON),
    "\x1b[31mred": (b"1", JSON),
    LONG_KEY: (b"2", JSON),
}


async def test_stores_and_keys_list_what_the_library_wrote(cli: Cli, backend: Backend) -> None:
    name = backend.store()
    store_id = await _seed(backend, name, SEED)
    env = backend.env

    listed = cli("stores", "--json", *backend.args, env=env)
    assert listed.code == 0, listed.err
    ours = [store for store in listed.json() if store["name"] == name]
    assert [store["id"] for store in ours] == [store_id]
    assert set(ours[0]) == {"id", "name", "created_at", "modified_at"}
    table = cli("stores", *backend.args, env=env)
    assert table.code == 0, table.err
    assert name in table.text
    assert store_id in table.text

    keys = cli("keys", name, "--json", *backend.args, env=env)
    assert keys.code == 0, keys.err
    assert keys.json() == [{"key": key, "size": len(value)} for key, (value, _) in sorted(SEED.items())]
    # By id as well as by name; with a prefix; the storage options before the command mean the same.
    by_id = cli(*backend.args, "keys", store_id, "--prefix", "a/", "--json", env=env)
    assert by_id.json() == [{"key": "a/b\\c", "size": 3}]
    table = cli("keys", name, *backend.args, env=env)
    assert table.code == 0, table.err
    assert "../x" in table.text
    assert f"{len(EVERY_BYTE):,}" in table.text
    assert "\\x1b[31mred" in table.text  # a key is data: its escape sequence is shown, never sent
    assert "\x1b" not in table.text
    assert "7 keys" in table.text


async def test_get_gives_json_text_and_the_exact_bytes(cli: Cli, backend: Backend) -> None:
    name = backend.store()
    await _seed(backend, name, SEED)
    async with backend.new_client() as client:
        record = await (await client.open_key_value_store_client(name=name)).get_record(key="STATE")
    assert record is not None

    state = cli("get", name, "STATE", "--json", *backend.args, env=backend.env)
    assert state.code == 0, state.err
    assert state.json() == {
        "key": "STATE",
        "content_type": JSON,
        "size": len(SEED["STATE"][0]),
        "version": record.version,
        "encoding": "json",
        "value": {"pages": 3, "seen": ["a", "é"]},
    }
    notes = cli("get", name, "notes", "--json", *backend.args, env=backend.env).json()
    assert notes["encoding"] == "text"
    assert notes["value"] == "plain text, é\n"
    blob = cli("get", name, "blob", "--json", *backend.args, env=backend.env).json()
    assert blob["encoding"] == "base64"
    assert base64.b64decode(blob["value"]) == EVERY_BYTE

    # Piped: the bytes exactly as stored, whatever they are.
    for key, (value, _) in SEED.items():
        piped = cli("get", name, key, *backend.args, env=backend.env)
        assert piped.code == 0, piped.err
        assert piped.out == value, key

    missing = cli("get", name, "nothing-here", *backend.args, env=backend.env)
    assert missing.code == 1
    assert missing.error_line() == (
        f"recoverable get: error: store {name!r} has no record 'nothing-here'; `recoverable keys {name}` lists its keys"
    )


async def test_set_stores_the_bytes_given_and_delete_removes_them(cli: Cli, backend: Backend, tmp_path: Path) -> None:
    name = backend.store()  # created by the first set
    args, env = backend.args, backend.env
    assert cli("set", name, "STATE", '{"pages": 1}', *args, env=env).code == 0
    assert cli("set", name, "word", "hello", *args, env=env).code == 0
    assert cli("set", name, "number", "42", *args, env=env).code == 0
    assert cli("set", name, "blob", "-", *args, stdin=EVERY_BYTE, env=env).code == 0
    page = tmp_path / "page.html"
    page.write_bytes("<p>é</p>".encode())
    ran = cli("set", name, "page", "--file", str(page), "--content-type", "text/HTML; Charset=UTF-8", *args, env=env)
    assert ran.code == 0, ran.err
    assert ran.text.startswith("stored 'page' in store")
    assert cli("set", name, "../x", "--file", "-", *args, stdin=b"up\n", env=env).code == 0

    assert await _read(backend, name) == {
        "STATE": (b'{"pages": 1}', JSON),
        "word": (b"hello", TEXT),
        "number": (b"42", JSON),
        "blob": (EVERY_BYTE, BINARY),
        "page": ("<p>é</p>".encode(), "text/html; charset=utf-8"),
        "../x": (b"up\n", TEXT),
    }

    # A value that is not JSON under a JSON content type is refused, and nothing is written.
    refused = cli("set", name, "word", "not json", "--content-type", JSON, *args, env=env)
    assert refused.code == 1
    assert "is not JSON" in refused.error_line()
    both = cli("set", name, "word", "v", "--file", str(page), *args, env=env)
    assert both.code == 2
    assert "give the value once" in both.error_line()
    assert (await _read(backend, name))["word"] == (b"hello", TEXT)

    assert cli("delete", name, "word", *args, env=env).code == 0
    assert cli("delete", name, "../x", *args, env=env).code == 0
    again = cli("delete", name, "word", *args, env=env)
    assert again.code == 1
    assert again.error_line() == f"recoverable delete: error: store {name!r} has no record 'word': nothing was deleted"
    assert set(await _read(backend, name)) == {"STATE", "number", "blob", "page"}


@pytest.mark.parametrize("backend", ["file_system"], indirect=True)
async def test_the_options_come_from_the_environment_and_a_command_s_own_win(
    cli: Cli, backend: Backend, tmp_path: Path
) -> None:
    name = backend.store()
    await _seed(backend, name, {"STATE": (b"1", JSON)})
    storage = str(tmp_path / "storage")
    from_env = cli("keys", name, "--json", env={"RECOVERABLE_STORAGE_DIR": storage})
    assert from_env.json() == [{"key": "STATE", "size": 1}]
    # The command's own option wins over the group's, which wins over the environment.
    elsewhere = str(tmp_path / "elsewhere")
    assert cli("--storage-dir", elsewhere, "keys", name, "--storage-dir", storage).code == 0
    assert cli("--storage-dir", storage, "keys", name, "--storage-dir", elsewhere).code == 1
    assert cli("--storage-dir", storage, "keys", name, env={"RECOVERABLE_STORAGE_DIR": elsewhere}).code == 0


async def test_a_purge_on_start_setting_never_empties_the_default_store(cli: Cli, tmp_path: Path) -> None:
    from recoverable.storages import FileSystemStorageClient  # noqa: PLC0415

    async with FileSystemStorageClient(storage_dir=tmp_path / "storage") as client:
        await (await client.open_key_value_store_client()).set_record(key="kept", value=b"1", content_type=JSON)
    env = {"RECOVERABLE_STORAGE_DIR": str(tmp_path / "storage"), "RECOVERABLE_PURGE_ON_START": "true"}
    assert cli("keys", "default", "--json", env=env).json() == [{"key": "kept", "size": 1}]
    assert cli("get", "default", "kept", env=env).out == b"1"


def test_python_m_recoverable_runs_the_same_command(cli: Cli) -> None:
    version = cli.python_m()("--version")
    assert version.code == 0
    assert version.text == cli("--version").text
    assert version.text.startswith("recoverable ")
    ran = cli.python_m()("set", "default", "k", "[1, 2]")
    assert ran.code == 0, ran.err
    assert json.loads(cli.python_m()("get", "default", "k").out) == [1, 2]
