"""Every storage client checks ids, names, aliases and keys itself, whoever calls it: the facade is not the only guard.

Each hostile value is given to the storage client (and the store client) directly, as a program using the
client API or a server in front of it would, and must be refused with the error of the rule it breaks, the
value and the rule in the message, before anything is created, read or written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from recoverable.errors import ConfigurationError, InvalidKeyError, InvalidStoreNameError
from recoverable.storages import MAX_KEY_LENGTH, MAX_NAME_LENGTH, KeyValueStore, KeyValueStoreClient, StorageClient
from recoverable.storages._validation import MAX_ID_LENGTH

if TYPE_CHECKING:
    from pathlib import Path

JSON = "application/json"

HOSTILE_NAMES: list[object] = [
    "..",
    "../x",
    "../outside",
    "../../../../tmp/outside",
    "a/b",
    "/abs",
    "a\\b",
    "%2e%2e",
    "%2F",
    ".",
    ".hidden",
    "a\x00b",
    "\x00",
    "",
    " ",
    "a b",
    "x" * (MAX_NAME_LENGTH + 1),
    "x" * 10_000,
    "__metadata__",
    "__x",
    "_alias_x",
    "-a",
    "a-",
    "é",
    "a\nb",
    "{tag}",
    "a~b",
    17,
    b"bytes",
]

HOSTILE_IDS: list[object] = [
    "..",
    "../x",
    "a/b",
    "/abs",
    "a\\b",
    "%2e%2e",
    ".",
    "a\x00b",
    "",
    " ",
    "a b",
    "x" * (MAX_ID_LENGTH + 1),
    "__x",
    "-a",
    "{tag}",
    "a}b",
    "é",
    17,
]

INVALID_KEYS: list[object] = ["", "a\x00b", "x" * (MAX_KEY_LENGTH + 1), "\ud800", 17, None, b"key"]


def _tree(tmp_path: Path) -> set[Path]:
    return set(tmp_path.rglob("*"))


async def _stores(client: StorageClient) -> list[str]:
    return sorted(m.id for m in await client.list_key_value_stores())


@pytest.mark.parametrize("what", ["name", "alias"])
@pytest.mark.parametrize("value", HOSTILE_NAMES, ids=repr)
async def test_clients_refuse_hostile_names_and_aliases(
    storage_client: StorageClient, tmp_path: Path, what: str, value: object
) -> None:
    before_stores = await _stores(storage_client)
    before_tree = _tree(tmp_path)

    with pytest.raises(InvalidStoreNameError) as info:
        await storage_client.open_key_value_store_client(**{what: value})  # type: ignore[arg-type]

    message = str(info.value)
    assert repr(value) in message or type(value).__name__ in message, message
    assert f"store {what}" in message
    if isinstance(value, str):
        assert f"1 to {MAX_NAME_LENGTH} letters, digits and hyphens" in message
    assert isinstance(info.value, ValueError)
    assert _tree(tmp_path) == before_tree
    assert await _stores(storage_client) == before_stores


@pytest.mark.parametrize("value", HOSTILE_IDS, ids=repr)
async def test_clients_refuse_hostile_ids(storage_client: StorageClient, tmp_path: Path, value: object) -> None:
    await storage_client.open_key_value_store_client(name="existing")
    before_stores = await _stores(storage_client)
    before_tree = _tree(tmp_path)

    with pytest.raises(InvalidStoreNameError) as info:
        await storage_client.open_key_value_store_client(id=value)  # type: ignore[arg-type]

    message = str(info.value)
    assert "store id" in message
    assert repr(value) in message or type(value).__name__ in message, message
    assert _tree(tmp_path) == before_tree
    assert await _stores(storage_client) == before_stores


@pytest.mark.parametrize(
    "kwargs",
    [{"id": "abc", "name": "n"}, {"id": "abc", "alias": "a"}, {"name": "n", "alias": "a"}],
)
async def test_clients_refuse_more_than_one_of_id_name_alias(
    storage_client: StorageClient, kwargs: dict[str, str]
) -> None:
    with pytest.raises(ConfigurationError) as info:
        await storage_client.open_key_value_store_client(**kwargs)

    for given in kwargs:
        assert given in str(info.value)
    assert await storage_client.list_key_value_stores() == []


@pytest.mark.parametrize("value", ["a", "my-crawl-1", "x" * MAX_NAME_LENGTH, "0", "A-b-C"])
async def test_clients_accept_every_valid_name(storage_client: StorageClient, value: str) -> None:
    named = await storage_client.open_key_value_store_client(name=value)
    aliased = await storage_client.open_key_value_store_client(alias=value)
    by_id = await storage_client.open_key_value_store_client(id=(await named.get_metadata()).id)

    assert (await named.get_metadata()).name == value
    assert (await by_id.get_metadata()).id == (await named.get_metadata()).id
    assert (await aliased.get_metadata()).id != (await named.get_metadata()).id


@pytest.mark.parametrize("value", HOSTILE_NAMES[:12], ids=repr)
async def test_the_facade_refuses_what_the_clients_refuse(storage_client: StorageClient, value: object) -> None:
    with pytest.raises(InvalidStoreNameError):
        await KeyValueStore.open(name=value, storage_client=storage_client)  # type: ignore[arg-type]
    with pytest.raises(InvalidStoreNameError):
        await KeyValueStore.open(id=value, storage_client=storage_client)  # type: ignore[arg-type]
    assert await storage_client.list_key_value_stores() == []


@pytest.mark.parametrize("key", INVALID_KEYS, ids=repr)
async def test_store_clients_refuse_invalid_keys(store: KeyValueStoreClient, key: object) -> None:
    await store.set_record(key="kept", value=b"1", content_type=JSON)
    for method in ("get_record", "record_exists", "set_record", "delete_record"):
        extra: dict[str, object] = {"value": b"2", "content_type": JSON} if method == "set_record" else {}
        with pytest.raises(InvalidKeyError) as info:
            await getattr(store, method)(key=key, **extra)
        assert isinstance(info.value, ValueError), method
        assert "record key" in str(info.value), method

    assert [k.key async for k in store.iterate_keys()] == ["kept"]
