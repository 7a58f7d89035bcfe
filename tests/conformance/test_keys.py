"""Keys are data: any characters round-trip, keys never collide, and none is refused but by the rules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from recoverable.errors import InvalidKeyError
from recoverable.storages import MAX_KEY_LENGTH, KeyValueStore, KeyValueStoreClient, StorageClient

Reopen = Callable[[], Awaitable[StorageClient]]
JSON = "application/json"
LONG_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

HOSTILE_KEYS = [
    "/",
    "a/b",
    "/etc/passwd",
    "../escape",
    "../../../../../../tmp/escape",
    ".",
    "..",
    "...",
    "\\",
    "a\\b",
    "..\\..\\escape",
    "C:\\Windows",
    "ключ",
    "鍵",
    "🔑",
    "🏳️‍🌈",
    "é",
    "e\u0301",
    " ",
    " leading",
    "trailing ",
    "two  spaces",
    "\t\n\r",
    "\x01\x7f",
    "%",
    "%2F",
    "%25",
    "100%",
    "%zz",
    "__metadata__",
    "__metadata__.json",
    "x.__metadata__.json",
    ".lock",
    ".keys",
    ".~tmp.abc",
    "a.json",
    "a.json.json",
    "a.txt",
    "a.ct~text%2Fplain",
    "~",
    "key~0123456789abcdef0123456789abcdef",
    "State",
    "state",
    "STATE",
    "CON",
    "nul",
    "a:b",
    '*?<>|"',
    "k" * MAX_KEY_LENGTH,
    "k" * (MAX_KEY_LENGTH - 1),
    "🔑" * MAX_KEY_LENGTH,
    "%" * MAX_KEY_LENGTH,
    "/" * MAX_KEY_LENGTH,
    "p" * 200 + "a",
    "p" * 200 + "b",
]


def _ident(key: str) -> str:
    return repr(key[:20]) + (f"...[{len(key)}]" if len(key) > 20 else "")


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=_ident)
async def test_key_round_trips(store: KeyValueStoreClient, key: str) -> None:
    await store.set_record(key=key, value=b"v", content_type=JSON)

    record = await store.get_record(key=key)

    assert record is not None
    assert (record.key, record.value) == (key, b"v")
    assert await store.record_exists(key=key)
    assert [info.key async for info in store.iterate_keys()] == [key]
    assert await store.delete_record(key=key) is True
    assert await store.get_record(key=key) is None
    assert [info.key async for info in store.iterate_keys()] == []


async def test_keys_never_collide(store: KeyValueStoreClient) -> None:
    assert len(set(HOSTILE_KEYS)) == len(HOSTILE_KEYS)
    for i, key in enumerate(HOSTILE_KEYS):
        await store.set_record(key=key, value=str(i).encode(), content_type=JSON)

    for i, key in enumerate(HOSTILE_KEYS):
        record = await store.get_record(key=key)
        assert record is not None, key
        assert record.value == str(i).encode(), key
    assert [info.key async for info in store.iterate_keys()] == sorted(HOSTILE_KEYS)


async def test_hostile_keys_do_not_harm_the_store(store: KeyValueStoreClient, storage_client: StorageClient) -> None:
    metadata = await store.get_metadata()
    for key in HOSTILE_KEYS:
        await store.set_record(key=key, value=b"{}", content_type=JSON)

    after = await store.get_metadata()
    assert (after.id, after.name, after.created_at) == (metadata.id, metadata.name, metadata.created_at)
    reopened = await storage_client.open_key_value_store_client(id=metadata.id)
    assert (await reopened.get_metadata()).name == metadata.name
    assert {m.id for m in await storage_client.list_key_value_stores()} == {metadata.id}
    for key in HOSTILE_KEYS:
        assert await store.delete_record(key=key) is True
    assert [info async for info in store.iterate_keys()] == []


async def test_keys_survive_a_new_client(
    store: KeyValueStoreClient, storage_client: StorageClient, reopen_storage_client: Reopen
) -> None:
    for i, key in enumerate(HOSTILE_KEYS):
        await store.set_record(key=key, value=str(i).encode(), content_type=JSON)

    client = await reopen_storage_client()
    reopened = await client.open_key_value_store_client(name="conformance")

    assert [info.key async for info in reopened.iterate_keys()] == sorted(HOSTILE_KEYS)
    for i, key in enumerate(HOSTILE_KEYS):
        record = await reopened.get_record(key=key)
        assert record is not None
        assert record.value == str(i).encode()


@pytest.mark.parametrize("content_type", [JSON, "text/plain; charset=utf-8", LONG_CONTENT_TYPE, "x/y;a=" + "b" * 60])
async def test_keys_of_every_length_with_any_content_type(store: KeyValueStoreClient, content_type: str) -> None:
    lengths = [*range(1, 300), *range(300, MAX_KEY_LENGTH + 1, 37), MAX_KEY_LENGTH]
    keys = [("/" if n % 2 else "k") * n for n in lengths]
    for key in keys:
        await store.set_record(key=key, value=str(len(key)).encode(), content_type=content_type)

    for key in keys:
        record = await store.get_record(key=key)
        assert record is not None, len(key)
        assert (record.value, record.content_type) == (str(len(key)).encode(), content_type)
    assert [info.key async for info in store.iterate_keys()] == sorted(set(keys))


async def test_long_keys_sharing_a_prefix_do_not_collide(store: KeyValueStoreClient) -> None:
    prefix = "shared-prefix/" * 70
    keys = [prefix + suffix for suffix in ("a", "b", "", "🔑", "a" * 10)]
    for i, key in enumerate(keys):
        await store.set_record(key=key, value=str(i).encode(), content_type=JSON)

    for i, key in enumerate(keys):
        record = await store.get_record(key=key)
        assert record is not None
        assert record.value == str(i).encode()
    await store.delete_record(key=keys[0])
    assert await store.get_record(key=keys[1]) is not None
    assert [info.key async for info in store.iterate_keys()] == sorted(keys[1:])


async def test_keys_differing_only_by_case(store: KeyValueStoreClient) -> None:
    keys = ["state", "State", "STATE", "sTaTe"]
    for key in keys:
        await store.set_record(key=key, value=key.encode(), content_type="text/plain; charset=utf-8")

    for key in keys:
        record = await store.get_record(key=key)
        assert record is not None
        assert record.value == key.encode()
    await store.delete_record(key="State")
    assert [info.key async for info in store.iterate_keys()] == sorted(["state", "STATE", "sTaTe"])


# --- through the facade -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=_ident)
async def test_facade_key_round_trips(kvs: KeyValueStore, key: str) -> None:
    await kvs.set_value(key, {"key": key})

    assert await kvs.get_value(key) == {"key": key}
    assert [info.key for info in await kvs.list_keys()] == [key]


BAD_KEYS: list[object] = [
    "",
    "\x00",
    "a\x00b",
    "k" * (MAX_KEY_LENGTH + 1),
    "🔑" * (MAX_KEY_LENGTH + 1),
    "\ud800",
    "a\udfffb",
    None,
    1,
    b"bytes",
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=lambda k: _ident(k) if isinstance(k, str) else repr(k))
async def test_facade_refuses_invalid_keys(kvs: KeyValueStore, key: object) -> None:
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: kvs.set_value(key, "v"),  # type: ignore[arg-type]
        lambda: kvs.get_value(key),  # type: ignore[arg-type]
        lambda: kvs.get_record(key),  # type: ignore[arg-type]
        lambda: kvs.record_exists(key),  # type: ignore[arg-type]
        lambda: kvs.delete_value(key),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(InvalidKeyError) as info:
            await call()
        assert isinstance(info.value, ValueError)
        assert info.value.store == "conformance-facade"
    assert await kvs.list_keys() == []


async def test_invalid_key_messages_name_the_rule(kvs: KeyValueStore) -> None:
    with pytest.raises(InvalidKeyError, match="NUL"):
        await kvs.set_value("a\x00b", 1)
    with pytest.raises(InvalidKeyError, match="empty"):
        await kvs.set_value("", 1)
    with pytest.raises(InvalidKeyError, match=f"at most {MAX_KEY_LENGTH}"):
        await kvs.set_value("k" * (MAX_KEY_LENGTH + 1), 1)
    with pytest.raises(InvalidKeyError, match="must be a str"):
        await kvs.set_value(42, 1)  # type: ignore[arg-type]
