"""Versions change on every write; conditional writes and deletes lose cleanly with VersionConflictError."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from recoverable.errors import StorageError, VersionConflictError

if TYPE_CHECKING:
    from recoverable.storages import KeyValueStore, KeyValueStoreClient

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


async def _value(store: KeyValueStoreClient, key: str) -> tuple[bytes, str, str] | None:
    record = await store.get_record(key=key)
    return None if record is None else (record.value, record.content_type, record.version)


async def test_versions_change_on_every_write(store: KeyValueStoreClient) -> None:
    # The same bytes every time: the version must change even when the value does not.
    versions = [await store.set_record(key="k", value=b"same", content_type=JSON) for _ in range(50)]

    assert len(set(versions)) == len(versions)
    assert all(isinstance(v, str) and v for v in versions)
    record = await store.get_record(key="k")
    assert record is not None
    assert record.version == versions[-1]


async def test_versions_change_when_the_content_type_changes(store: KeyValueStoreClient) -> None:
    first = await store.set_record(key="k", value=b"1", content_type=JSON)
    second = await store.set_record(key="k", value=b"1", content_type=TEXT)
    assert first != second


async def test_a_read_does_not_change_the_version(store: KeyValueStoreClient) -> None:
    version = await store.set_record(key="k", value=b"1", content_type=JSON)
    await store.get_record(key="k")
    await store.record_exists(key="k")
    _ = [info async for info in store.iterate_keys()]

    assert await _value(store, "k") == (b"1", JSON, version)


async def test_writing_another_key_does_not_change_the_version(store: KeyValueStoreClient) -> None:
    version = await store.set_record(key="k", value=b"1", content_type=JSON)
    await store.set_record(key="other", value=b"2", content_type=JSON)
    await store.delete_record(key="other")

    assert await _value(store, "k") == (b"1", JSON, version)


async def test_if_version_match_writes(store: KeyValueStoreClient) -> None:
    version = await store.set_record(key="k", value=b"1", content_type=JSON)

    new_version = await store.set_record(key="k", value=b"2", content_type=TEXT, if_version=version)

    assert new_version != version
    assert await _value(store, "k") == (b"2", TEXT, new_version)


async def test_if_version_mismatch_raises_and_keeps_the_record(store: KeyValueStoreClient) -> None:
    old = await store.set_record(key="k", value=b"1", content_type=JSON)
    current = await store.set_record(key="k", value=b"2", content_type=JSON)

    with pytest.raises(VersionConflictError) as info:
        await store.set_record(key="k", value=b"3", content_type=TEXT, if_version=old)

    assert (info.value.expected, info.value.actual, info.value.key) == (old, current, "k")
    assert info.value.store
    assert isinstance(info.value, StorageError)
    assert await _value(store, "k") == (b"2", JSON, current)
    assert [(i.key, i.size) async for i in store.iterate_keys()] == [("k", 1)]


async def test_if_version_on_a_missing_record_raises(store: KeyValueStoreClient) -> None:
    with pytest.raises(VersionConflictError) as info:
        await store.set_record(key="k", value=b"1", content_type=JSON, if_version="some-version")

    assert (info.value.expected, info.value.actual) == ("some-version", None)
    assert await store.get_record(key="k") is None
    assert [i async for i in store.iterate_keys()] == []


async def test_if_version_of_a_deleted_record_raises(store: KeyValueStoreClient) -> None:
    version = await store.set_record(key="k", value=b"1", content_type=JSON)
    await store.delete_record(key="k")

    with pytest.raises(VersionConflictError) as info:
        await store.set_record(key="k", value=b"2", content_type=JSON, if_version=version)

    assert (info.value.expected, info.value.actual) == (version, None)
    assert await store.get_record(key="k") is None


async def test_if_absent_writes_a_new_record(store: KeyValueStoreClient) -> None:
    version = await store.set_record(key="k", value=b"1", content_type=JSON, if_absent=True)
    assert await _value(store, "k") == (b"1", JSON, version)


async def test_if_absent_on_an_existing_record_raises_and_keeps_it(store: KeyValueStoreClient) -> None:
    version = await store.set_record(key="k", value=b"1", content_type=JSON)

    with pytest.raises(VersionConflictError) as info:
        await store.set_record(key="k", value=b"2", content_type=TEXT, if_absent=True)

    assert (info.value.expected, info.value.actual, info.value.key) == (None, version, "k")
    assert await _value(store, "k") == (b"1", JSON, version)


async def test_if_absent_after_delete_writes(store: KeyValueStoreClient) -> None:
    await store.set_record(key="k", value=b"1", content_type=JSON)
    await store.delete_record(key="k")

    version = await store.set_record(key="k", value=b"2", content_type=JSON, if_absent=True)

    assert await _value(store, "k") == (b"2", JSON, version)


async def test_conditional_delete_match(store: KeyValueStoreClient) -> None:
    version = await store.set_record(key="k", value=b"1", content_type=JSON)

    assert await store.delete_record(key="k", if_version=version) is True
    assert await store.get_record(key="k") is None


async def test_conditional_delete_mismatch_raises_and_keeps_the_record(store: KeyValueStoreClient) -> None:
    old = await store.set_record(key="k", value=b"1", content_type=JSON)
    current = await store.set_record(key="k", value=b"2", content_type=JSON)

    with pytest.raises(VersionConflictError) as info:
        await store.delete_record(key="k", if_version=old)

    assert (info.value.expected, info.value.actual) == (old, current)
    assert await _value(store, "k") == (b"2", JSON, current)


async def test_conditional_delete_of_a_missing_record_raises(store: KeyValueStoreClient) -> None:
    with pytest.raises(VersionConflictError) as info:
        await store.delete_record(key="k", if_version="some-version")
    assert (info.value.expected, info.value.actual) == ("some-version", None)


async def test_a_chain_of_conditional_writes(store: KeyValueStoreClient) -> None:
    version = await store.set_record(key="counter", value=b"0", content_type=JSON, if_absent=True)
    for i in range(1, 20):
        record = await store.get_record(key="counter")
        assert record is not None
        assert record.version == version
        version = await store.set_record(
            key="counter", value=str(int(record.value) + 1).encode(), content_type=JSON, if_version=record.version
        )
        assert await _value(store, "counter") == (str(i).encode(), JSON, version)


async def test_versions_of_a_purged_store_do_not_match(store: KeyValueStoreClient) -> None:
    version = await store.set_record(key="k", value=b"1", content_type=JSON)
    await store.purge()

    with pytest.raises(VersionConflictError):
        await store.set_record(key="k", value=b"2", content_type=JSON, if_version=version)
    assert await store.get_record(key="k") is None


# --- through the facade -------------------------------------------------------------------------------


async def test_facade_versions(kvs: KeyValueStore) -> None:
    first = await kvs.set_value("k", {"n": 1})
    second = await kvs.set_value("k", {"n": 1})

    assert first != second
    record = await kvs.get_record("k")
    assert record is not None
    assert record.version == second


async def test_facade_conditional_writes(kvs: KeyValueStore) -> None:
    first = await kvs.set_value("k", {"n": 1}, if_absent=True)
    with pytest.raises(VersionConflictError) as absent:
        await kvs.set_value("k", {"n": 99}, if_absent=True)
    assert (absent.value.expected, absent.value.actual) == (None, first)

    second = await kvs.set_value("k", {"n": 2}, if_version=first)
    with pytest.raises(VersionConflictError) as stale:
        await kvs.set_value("k", {"n": 99}, if_version=first)
    assert (stale.value.expected, stale.value.actual) == (first, second)

    record = await kvs.get_record("k")
    assert record is not None
    assert (record.value, record.version) == ({"n": 2}, second)


async def test_facade_conditional_delete(kvs: KeyValueStore) -> None:
    first = await kvs.set_value("k", "a")
    second = await kvs.set_value("k", "b")

    with pytest.raises(VersionConflictError):
        await kvs.delete_value("k", if_version=first)
    assert await kvs.get_value("k") == "b"
    assert await kvs.delete_value("k", if_version=second) is True
    assert await kvs.get_value("k") is None
