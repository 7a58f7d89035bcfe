"""Reading, writing and deleting records: bytes and content types come back exactly as written."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from recoverable.storages import KeyValueStore, KeyValueStoreClient

JSON = "application/json"

CONTENT_TYPES = [
    "application/json",
    "text/plain; charset=utf-8",
    "application/octet-stream",
    "text/html; charset=utf-8",
    "image/png",
    "application/vnd.api+json",
    "application/x-custom.type_1",
    "text/plain",
    "text/plain;charset=UTF-8",
    "Application/JSON",
    "text/csv; charset=iso-8859-1; header=present",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
]


async def test_get_missing_record(store: KeyValueStoreClient) -> None:
    assert await store.get_record(key="missing") is None
    assert not await store.record_exists(key="missing")


async def test_set_then_get(store: KeyValueStoreClient) -> None:
    version = await store.set_record(key="k", value=b'{"a": 1}', content_type=JSON)

    record = await store.get_record(key="k")

    assert record is not None
    assert (record.key, record.value, record.content_type, record.version) == ("k", b'{"a": 1}', JSON, version)
    assert record.size == 8
    assert isinstance(record.value, bytes)
    assert await store.record_exists(key="k")


async def test_overwrite_replaces_value_and_content_type(store: KeyValueStoreClient) -> None:
    await store.set_record(key="k", value=b'{"a": 1}', content_type=JSON)
    await store.set_record(key="k", value=b"plain", content_type="text/plain; charset=utf-8")

    record = await store.get_record(key="k")

    assert record is not None
    assert (record.value, record.content_type) == (b"plain", "text/plain; charset=utf-8")
    assert [(info.key, info.size) async for info in store.iterate_keys()] == [("k", 5)]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
async def test_content_type_is_kept_exactly(store: KeyValueStoreClient, content_type: str) -> None:
    await store.set_record(key="typed", value=b"\x00\x01payload\xff", content_type=content_type)

    record = await store.get_record(key="typed")

    assert record is not None
    assert record.content_type == content_type
    assert record.value == b"\x00\x01payload\xff"


async def test_every_content_type_in_one_store(store: KeyValueStoreClient) -> None:
    for i, content_type in enumerate(CONTENT_TYPES):
        await store.set_record(key=f"k{i:02}", value=str(i).encode(), content_type=content_type)

    for i, content_type in enumerate(CONTENT_TYPES):
        record = await store.get_record(key=f"k{i:02}")
        assert record is not None
        assert (record.value, record.content_type) == (str(i).encode(), content_type)
    assert [info.key async for info in store.iterate_keys()] == [f"k{i:02}" for i in range(len(CONTENT_TYPES))]


@pytest.mark.parametrize("content_type", [JSON, "text/plain; charset=utf-8", "application/octet-stream"])
async def test_empty_value(store: KeyValueStoreClient, content_type: str) -> None:
    await store.set_record(key="empty", value=b"", content_type=content_type)

    record = await store.get_record(key="empty")

    assert record is not None
    assert (record.value, record.content_type, record.size) == (b"", content_type, 0)
    assert await store.record_exists(key="empty")
    assert [(info.key, info.size) async for info in store.iterate_keys()] == [("empty", 0)]


async def test_ten_megabyte_value(store: KeyValueStoreClient) -> None:
    value = bytes(range(256)) * (10 * 1024 * 1024 // 256)

    await store.set_record(key="big", value=value, content_type="application/octet-stream")

    record = await store.get_record(key="big")
    assert record is not None
    assert record.value == value
    assert [(info.key, info.size) async for info in store.iterate_keys()] == [("big", len(value))]


async def test_value_is_copied_when_written(store: KeyValueStoreClient) -> None:
    buffer = bytearray(b"before")
    await store.set_record(key="k", value=bytes(buffer), content_type="application/octet-stream")
    buffer[:] = b"after!"

    record = await store.get_record(key="k")
    assert record is not None
    assert record.value == b"before"


async def test_delete(store: KeyValueStoreClient) -> None:
    await store.set_record(key="k", value=b"1", content_type=JSON)
    await store.set_record(key="other", value=b"2", content_type=JSON)

    assert await store.delete_record(key="k") is True

    assert await store.get_record(key="k") is None
    assert not await store.record_exists(key="k")
    assert [info.key async for info in store.iterate_keys()] == ["other"]
    assert await store.delete_record(key="k") is False


async def test_delete_missing_record(store: KeyValueStoreClient) -> None:
    assert await store.delete_record(key="never") is False


async def test_set_after_delete(store: KeyValueStoreClient) -> None:
    await store.set_record(key="k", value=b"1", content_type=JSON)
    await store.delete_record(key="k")
    await store.set_record(key="k", value=b"again", content_type="text/plain; charset=utf-8")

    record = await store.get_record(key="k")
    assert record is not None
    assert (record.value, record.content_type) == (b"again", "text/plain; charset=utf-8")


async def test_stores_do_not_share_records(store: KeyValueStoreClient, kvs: KeyValueStore) -> None:
    await store.set_record(key="k", value=b"1", content_type=JSON)

    assert await kvs.get_value("k") is None
    assert await kvs.client.get_record(key="k") is None


# --- through the facade -------------------------------------------------------------------------------


async def test_facade_set_get_delete(kvs: KeyValueStore) -> None:
    version = await kvs.set_value("k", {"a": [1, 2]})

    record = await kvs.get_record("k")
    assert record is not None
    assert (record.key, record.value, record.content_type, record.version) == ("k", {"a": [1, 2]}, JSON, version)
    stored = await kvs.client.get_record(key="k")
    assert stored is not None
    assert record.size == len(stored.value) == stored.size
    assert await kvs.get_value("k") == {"a": [1, 2]}
    assert await kvs.record_exists("k")

    assert await kvs.delete_value("k") is True
    assert await kvs.get_value("k") is None
    assert await kvs.get_record("k") is None
    assert not await kvs.record_exists("k")
    assert await kvs.delete_value("k") is False


async def test_facade_get_value_default(kvs: KeyValueStore) -> None:
    assert await kvs.get_value("missing", default_value={"x": 1}) == {"x": 1}
    await kvs.set_value("present", None)
    assert await kvs.get_value("present", default_value={"x": 1}) is None


async def test_facade_empty_values(kvs: KeyValueStore) -> None:
    await kvs.set_value("bytes", b"")
    await kvs.set_value("text", "")
    await kvs.set_value("dict", {})
    await kvs.set_value("list", [])

    assert await kvs.get_value("bytes") == b""
    assert await kvs.get_value("text") == ""
    assert await kvs.get_value("dict") == {}
    assert await kvs.get_value("list") == []


async def test_facade_ten_megabyte_value(kvs: KeyValueStore) -> None:
    text = "0123456789abcdé\n" * (10 * 1024 * 1024 // 17)

    await kvs.set_value("big", text)

    assert await kvs.get_value("big") == text


async def test_facade_sees_records_written_through_the_client(kvs: KeyValueStore) -> None:
    await kvs.client.set_record(key="raw", value="héllo".encode(), content_type="text/plain; charset=utf-8")

    assert await kvs.get_value("raw") == "héllo"
