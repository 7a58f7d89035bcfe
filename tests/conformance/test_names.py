"""Every storage client checks ids, names, aliases and keys itself, whoever calls it: the facade is not the only guard.

Each hostile value is given to the storage client (and the store client) directly, as a program using the
client API or a server in front of it would, and must be refused with the error of the rule it breaks, the
value and the rule in the message, before anything is created, read or written. Aliases follow Crawlee's rule
(anything but empty, `.`, `..`, or holding `/`, `\\` or NUL): a hostile-looking alias that keeps it is data,
its own store on every client, and never a path.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from recoverable.errors import ConfigurationError, InvalidKeyError, InvalidStoreNameError
from recoverable.storages import MAX_KEY_LENGTH, MAX_NAME_LENGTH, KeyValueStore, KeyValueStoreClient, StorageClient
from recoverable.storages._validation import MAX_ALIAS_LENGTH, MAX_ID_LENGTH

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
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

INVALID_ALIASES: list[object] = [
    "",
    ".",
    "..",
    "../x",
    "../../../../tmp/outside",
    "a/b",
    "/abs",
    "a\\b",
    "a\x00b",
    "\x00",
    "x" * (MAX_ALIAS_LENGTH + 1),
    "\ud800",
    17,
    b"bytes",
]

# Valid by Crawlee's rule, each hostile to some backend if it were used as a path, a key or a column as is.
HOSTILE_LOOKING_ALIASES = [
    "..x",
    "...",
    ".hidden",
    "%2e%2e",
    "%2F",
    "a:b",
    "a b",
    " ",
    "é",
    "日本語",
    "🔑",
    "a\nb",
    "{tag}",
    "a}b",
    "a~b",
    "*",
    "__metadata__",
    "__metadata__.json",
    "_alias_x",
    "_alias_%2e",
    ".~tmp.dropped.0",
    ".lock",
    ".keys",
    "recoverable-aliases",
    "x" * 63,
    "x" * 64,
    "x" * 300,
    "é" * 300,
    "x" * MAX_ALIAS_LENGTH,
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


def _escaping(root: Path) -> list[Path]:
    """The paths under `root` that are links or resolve outside it: none may be, whatever an alias holds."""
    top = root.resolve()
    return [path for path in root.rglob("*") if path.is_symlink() or not path.resolve().is_relative_to(top)]


async def _stores(client: StorageClient) -> list[str]:
    return sorted(m.id for m in await client.list_key_value_stores())


@pytest.mark.parametrize("value", HOSTILE_NAMES, ids=repr)
async def test_clients_refuse_hostile_names(storage_client: StorageClient, tmp_path: Path, value: object) -> None:
    before_stores = await _stores(storage_client)
    before_tree = _tree(tmp_path)

    with pytest.raises(InvalidStoreNameError) as info:
        await storage_client.open_key_value_store_client(name=value)  # type: ignore[arg-type]

    message = str(info.value)
    assert repr(value) in message or type(value).__name__ in message, message
    assert "store name" in message
    if isinstance(value, str):
        assert f"1 to {MAX_NAME_LENGTH} letters, digits and hyphens" in message
    assert isinstance(info.value, ValueError)
    assert _tree(tmp_path) == before_tree
    assert await _stores(storage_client) == before_stores


@pytest.mark.parametrize("value", INVALID_ALIASES, ids=lambda v: repr(v)[:24])
async def test_clients_refuse_invalid_aliases(storage_client: StorageClient, tmp_path: Path, value: object) -> None:
    before_stores = await _stores(storage_client)
    before_tree = _tree(tmp_path)

    with pytest.raises(InvalidStoreNameError) as info:
        await storage_client.open_key_value_store_client(alias=value)  # type: ignore[arg-type]

    message = str(info.value)
    assert repr(value)[:40] in message or type(value).__name__ in message, message
    assert "store alias" in message
    assert isinstance(info.value, ValueError)
    assert _tree(tmp_path) == before_tree
    assert await _stores(storage_client) == before_stores


async def test_hostile_looking_aliases_are_stores_of_their_own(
    storage_client: StorageClient, reopen_storage_client: Callable[[], Awaitable[StorageClient]], tmp_path: Path
) -> None:
    named = await storage_client.open_key_value_store_client(name="x" * 63)
    await named.set_record(key="who", value=b'"named"', content_type=JSON)
    ids: dict[str, str] = {}
    for alias in HOSTILE_LOOKING_ALIASES:
        store = await storage_client.open_key_value_store_client(alias=alias)
        metadata = await store.get_metadata()
        assert metadata.name is None, alias
        await store.set_record(key="who", value=json.dumps(alias).encode(), content_type=JSON)
        ids[alias] = metadata.id
    default = await storage_client.open_key_value_store_client()

    assert len({*ids.values(), (await named.get_metadata()).id, (await default.get_metadata()).id}) == len(ids) + 2
    assert _escaping(tmp_path) == []
    reopened = await reopen_storage_client()
    for alias, store_id in ids.items():
        again = await reopened.open_key_value_store_client(alias=alias)
        assert (await again.get_metadata()).id == store_id, alias
        record = await again.get_record(key="who")
        assert record is not None
        assert json.loads(record.value) == alias
    record = await (await reopened.open_key_value_store_client(name="x" * 63)).get_record(key="who")
    assert record is not None
    assert record.value == b'"named"'
    assert await (await reopened.open_key_value_store_client()).get_record(key="who") is None


async def test_an_alias_equal_to_a_name_is_another_store(storage_client: StorageClient) -> None:
    named = await storage_client.open_key_value_store_client(name="shared-text")
    await named.set_record(key="k", value=b'"named"', content_type=JSON)

    aliased = await storage_client.open_key_value_store_client(alias="shared-text")
    await aliased.set_record(key="k", value=b'"aliased"', content_type=JSON)

    assert (await aliased.get_metadata()).id != (await named.get_metadata()).id
    assert (await aliased.get_metadata()).name is None
    record = await named.get_record(key="k")
    assert record is not None
    assert record.value == b'"named"'
    assert await storage_client.find_key_value_store(name="shared-text") == (await named.get_metadata()).id


@pytest.mark.parametrize("alias", ["default", "__default__"])
async def test_the_default_aliases_are_the_default_store(storage_client: StorageClient, alias: str) -> None:
    default = await storage_client.open_key_value_store_client()

    aliased = await storage_client.open_key_value_store_client(alias=alias)

    assert (await aliased.get_metadata()).id == (await default.get_metadata()).id


async def test_the_name_default_is_refused_by_every_client(storage_client: StorageClient, tmp_path: Path) -> None:
    before_tree = _tree(tmp_path)

    with pytest.raises(InvalidStoreNameError, match="reserved for the default store") as info:
        await storage_client.open_key_value_store_client(name="default")
    with pytest.raises(InvalidStoreNameError, match="reserved for the default store"):
        await KeyValueStore.open(name="default", storage_client=storage_client)

    assert isinstance(info.value, ValueError)
    assert _tree(tmp_path) == before_tree
    assert await storage_client.list_key_value_stores() == []
    assert await storage_client.find_key_value_store(name="default") is None


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
    assert isinstance(info.value, ValueError)  # as Crawlee's
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
