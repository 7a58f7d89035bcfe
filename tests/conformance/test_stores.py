"""Opening, listing, purging and dropping stores, through the storage client ABC and the facade."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from recoverable.errors import InvalidStoreNameError, StoreNotFoundError
from recoverable.storages import KeyInfo, KeyValueStore, KeyValueStoreClient, StorageClient

Reopen = Callable[[], Awaitable[StorageClient]]
JSON = "application/json"


async def test_open_by_name_twice_gives_the_same_store(storage_client: StorageClient) -> None:
    first = await storage_client.open_key_value_store_client(name="shared")
    await first.set_record(key="k", value=b"1", content_type=JSON)
    second = await storage_client.open_key_value_store_client(name="shared")

    assert (await second.get_metadata()).id == (await first.get_metadata()).id
    record = await second.get_record(key="k")
    assert record is not None
    assert record.value == b"1"


async def test_named_store_metadata(storage_client: StorageClient) -> None:
    store = await storage_client.open_key_value_store_client(name="my-crawl-1")
    metadata = await store.get_metadata()

    assert metadata.name == "my-crawl-1"
    assert metadata.id
    assert metadata.created_at <= metadata.modified_at
    assert metadata.created_at <= metadata.accessed_at
    assert metadata.created_at.tzinfo is not None


async def test_open_by_alias_twice_gives_the_same_unnamed_store(storage_client: StorageClient) -> None:
    first = await storage_client.open_key_value_store_client(alias="scratch")
    await first.set_record(key="k", value=b"alias", content_type=JSON)
    second = await storage_client.open_key_value_store_client(alias="scratch")

    metadata = await second.get_metadata()
    assert metadata.id == (await first.get_metadata()).id
    assert metadata.name is None
    record = await second.get_record(key="k")
    assert record is not None
    assert record.value == b"alias"


async def test_default_store_is_the_alias_default(storage_client: StorageClient) -> None:
    default = await storage_client.open_key_value_store_client()
    await default.set_record(key="k", value=b"d", content_type=JSON)
    by_alias = await storage_client.open_key_value_store_client(alias="default")

    metadata = await default.get_metadata()
    assert metadata.name is None
    assert (await by_alias.get_metadata()).id == metadata.id
    record = await by_alias.get_record(key="k")
    assert record is not None
    assert record.value == b"d"


async def test_name_alias_and_default_are_different_stores(storage_client: StorageClient) -> None:
    named = await storage_client.open_key_value_store_client(name="same")
    aliased = await storage_client.open_key_value_store_client(alias="same")
    default = await storage_client.open_key_value_store_client()
    await named.set_record(key="k", value=b"named", content_type=JSON)
    await aliased.set_record(key="k", value=b"aliased", content_type=JSON)

    ids = {(await s.get_metadata()).id for s in (named, aliased, default)}
    assert len(ids) == 3
    named_record = await named.get_record(key="k")
    aliased_record = await aliased.get_record(key="k")
    assert named_record is not None
    assert aliased_record is not None
    assert (named_record.value, aliased_record.value) == (b"named", b"aliased")
    assert await default.get_record(key="k") is None


async def test_open_by_id_gives_the_same_store(storage_client: StorageClient) -> None:
    for opened in (
        await storage_client.open_key_value_store_client(name="by-id"),
        await storage_client.open_key_value_store_client(alias="by-id"),
        await storage_client.open_key_value_store_client(),
    ):
        metadata = await opened.get_metadata()
        await opened.set_record(key="which", value=metadata.id.encode(), content_type=JSON)

        by_id = await storage_client.open_key_value_store_client(id=metadata.id)

        by_id_metadata = await by_id.get_metadata()
        assert (by_id_metadata.id, by_id_metadata.name) == (metadata.id, metadata.name)
        record = await by_id.get_record(key="which")
        assert record is not None
        assert record.value == metadata.id.encode()


async def test_open_by_unknown_id_raises(storage_client: StorageClient) -> None:
    await storage_client.open_key_value_store_client(name="exists")
    with pytest.raises(StoreNotFoundError) as info:
        await storage_client.open_key_value_store_client(id="nosuchstoreid0000")
    assert info.value.store == "nosuchstoreid0000"
    assert "nosuchstoreid0000" in str(info.value)


async def test_list_key_value_stores(storage_client: StorageClient) -> None:
    named = await storage_client.open_key_value_store_client(name="listed")
    aliased = await storage_client.open_key_value_store_client(alias="listed")
    default = await storage_client.open_key_value_store_client()
    expected = {(await s.get_metadata()).id: (await s.get_metadata()).name for s in (named, aliased, default)}

    listed = await storage_client.list_key_value_stores()

    assert {m.id: m.name for m in listed} == expected
    assert [m.created_at for m in listed] == sorted(m.created_at for m in listed)


async def test_list_key_value_stores_when_there_are_none(storage_client: StorageClient) -> None:
    assert await storage_client.list_key_value_stores() == []


async def test_purge_deletes_records_and_keeps_the_store(storage_client: StorageClient) -> None:
    store = await storage_client.open_key_value_store_client(name="purged")
    store_id = (await store.get_metadata()).id
    for i in range(5):
        await store.set_record(key=f"k{i}", value=b"x", content_type=JSON)

    await store.purge()

    assert [info async for info in store.iterate_keys()] == []
    assert await store.get_record(key="k0") is None
    assert not await store.record_exists(key="k0")
    assert (await store.get_metadata()).id == store_id
    await store.set_record(key="after", value=b"y", content_type=JSON)
    assert [info.key async for info in store.iterate_keys()] == ["after"]
    reopened = await storage_client.open_key_value_store_client(name="purged")
    assert (await reopened.get_metadata()).id == store_id
    assert store_id in {m.id for m in await storage_client.list_key_value_stores()}


async def test_drop_removes_the_store(storage_client: StorageClient) -> None:
    store = await storage_client.open_key_value_store_client(name="dropped")
    store_id = (await store.get_metadata()).id
    await store.set_record(key="k", value=b"x", content_type=JSON)

    await store.drop()

    assert store_id not in {m.id for m in await storage_client.list_key_value_stores()}
    with pytest.raises(StoreNotFoundError):
        await storage_client.open_key_value_store_client(id=store_id)


@pytest.mark.parametrize(
    "use",
    ["get_metadata", "get_record", "set_record", "record_exists", "delete_record", "iterate_keys", "purge"],
)
async def test_a_dropped_store_cannot_be_used(storage_client: StorageClient, use: str) -> None:
    store = await storage_client.open_key_value_store_client(name="dropped")
    await store.set_record(key="k", value=b"x", content_type=JSON)
    await store.drop()

    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "get_metadata": store.get_metadata,
        "get_record": lambda: store.get_record(key="k"),
        "set_record": lambda: store.set_record(key="k", value=b"y", content_type=JSON),
        "record_exists": lambda: store.record_exists(key="k"),
        "delete_record": lambda: store.delete_record(key="k"),
        "iterate_keys": lambda: _list_keys(store.iterate_keys()),
        "purge": store.purge,
    }
    with pytest.raises(StoreNotFoundError):
        await calls[use]()


async def _list_keys(keys: AsyncIterator[KeyInfo]) -> list[KeyInfo]:
    return [info async for info in keys]


async def test_reopening_a_dropped_name_makes_a_fresh_empty_store(storage_client: StorageClient) -> None:
    store = await storage_client.open_key_value_store_client(name="phoenix")
    old_id = (await store.get_metadata()).id
    await store.set_record(key="k", value=b"x", content_type=JSON)
    await store.drop()

    fresh = await storage_client.open_key_value_store_client(name="phoenix")

    metadata = await fresh.get_metadata()
    assert metadata.id != old_id
    assert metadata.name == "phoenix"
    assert [info async for info in fresh.iterate_keys()] == []
    assert await fresh.get_record(key="k") is None


async def test_the_id_of_a_dropped_store_does_not_open_its_successor(storage_client: StorageClient) -> None:
    store = await storage_client.open_key_value_store_client(name="phoenix")
    old_id = (await store.get_metadata()).id
    await store.drop()
    await storage_client.open_key_value_store_client(name="phoenix")

    with pytest.raises(StoreNotFoundError):
        await storage_client.open_key_value_store_client(id=old_id)


async def test_dropping_the_default_store(storage_client: StorageClient) -> None:
    default = await storage_client.open_key_value_store_client()
    old_id = (await default.get_metadata()).id
    await default.set_record(key="k", value=b"x", content_type=JSON)
    await default.drop()

    fresh = await storage_client.open_key_value_store_client()

    assert (await fresh.get_metadata()).id != old_id
    assert await fresh.get_record(key="k") is None


async def test_data_survives_a_new_client(storage_client: StorageClient, reopen_storage_client: Reopen) -> None:
    named = await storage_client.open_key_value_store_client(name="survivor")
    aliased = await storage_client.open_key_value_store_client(alias="survivor")
    default = await storage_client.open_key_value_store_client()
    ids = []
    for label, opened in (("named", named), ("aliased", aliased), ("default", default)):
        await opened.set_record(key="who", value=label.encode(), content_type="text/plain; charset=utf-8")
        ids.append((await opened.get_metadata()).id)

    client = await reopen_storage_client()

    for label, store_id, reopened in (
        ("named", ids[0], await client.open_key_value_store_client(name="survivor")),
        ("aliased", ids[1], await client.open_key_value_store_client(alias="survivor")),
        ("default", ids[2], await client.open_key_value_store_client()),
        ("named", ids[0], await client.open_key_value_store_client(id=ids[0])),
        ("aliased", ids[1], await client.open_key_value_store_client(id=ids[1])),
    ):
        assert (await reopened.get_metadata()).id == store_id
        record = await reopened.get_record(key="who")
        assert record is not None
        assert (record.value, record.content_type) == (label.encode(), "text/plain; charset=utf-8")


# --- through the facade -------------------------------------------------------------------------------


async def test_facade_open_gives_one_instance_per_store(storage_client: StorageClient) -> None:
    by_name = await KeyValueStore.open(name="facade", storage_client=storage_client)
    again = await KeyValueStore.open(name="facade", storage_client=storage_client)
    by_id = await KeyValueStore.open(id=by_name.id, storage_client=storage_client)
    default = await KeyValueStore.open(storage_client=storage_client)
    default_alias = await KeyValueStore.open(alias="default", storage_client=storage_client)
    aliased = await KeyValueStore.open(alias="facade", storage_client=storage_client)

    assert again is by_name
    assert by_id is by_name
    assert default_alias is default
    assert len({id(by_name), id(default), id(aliased)}) == 3
    assert (by_name.name, default.name, aliased.name) == ("facade", None, None)
    assert by_name.storage_client is storage_client


async def test_facade_open_by_id_sees_the_data(storage_client: StorageClient) -> None:
    store = await storage_client.open_key_value_store_client(name="under")
    await store.set_record(key="k", value=b'{"a": 1}', content_type=JSON)
    store_id = (await store.get_metadata()).id

    kvs = await KeyValueStore.open(id=store_id, storage_client=storage_client)

    assert kvs.id == store_id
    assert kvs.name == "under"
    assert await kvs.get_value("k") == {"a": 1}


async def test_facade_open_by_unknown_id_raises(storage_client: StorageClient) -> None:
    with pytest.raises(StoreNotFoundError):
        await KeyValueStore.open(id="nosuchstoreid0000", storage_client=storage_client)


async def test_facade_purge_and_drop(storage_client: StorageClient) -> None:
    kvs = await KeyValueStore.open(name="facade-drop", storage_client=storage_client)
    await kvs.set_value("a", 1)
    await kvs.purge()
    assert await kvs.list_keys() == []
    assert await kvs.get_value("a") is None
    await kvs.set_value("b", 2)
    old_id = kvs.id

    await kvs.drop()

    with pytest.raises(StoreNotFoundError):
        await kvs.get_value("b")
    with pytest.raises(StoreNotFoundError):
        await KeyValueStore.open(id=old_id, storage_client=storage_client)
    fresh = await KeyValueStore.open(name="facade-drop", storage_client=storage_client)
    assert fresh is not kvs
    assert fresh.id != old_id
    assert await fresh.list_keys() == []
    with pytest.raises(StoreNotFoundError):
        await KeyValueStore.open(id=old_id, storage_client=storage_client)


async def test_facade_metadata(storage_client: StorageClient) -> None:
    kvs = await KeyValueStore.open(name="facade-meta", storage_client=storage_client)
    metadata = await kvs.get_metadata()
    assert (metadata.id, metadata.name) == (kvs.id, "facade-meta")
    assert kvs.label == "facade-meta"
    unnamed = await KeyValueStore.open(alias="facade-meta", storage_client=storage_client)
    assert unnamed.label == unnamed.id
    assert repr(kvs) == f"<KeyValueStore id={kvs.id!r} name='facade-meta' client={type(storage_client).__name__}>"


async def test_only_clients_that_write_in_the_process_say_a_dead_writer_cannot_land(
    store: KeyValueStoreClient, storage_client_kind: str
) -> None:
    # A server (HTTP, Redis, PostgreSQL) may still carry out a request its sender sent just before it died.
    assert store.writes_end_with_the_writer == (storage_client_kind in {"memory", "file_system", "sqlite"})


async def test_a_store_is_found_by_name_without_creating_anything(storage_client: StorageClient) -> None:
    named = await KeyValueStore.open(name="found-by-name", storage_client=storage_client)
    await KeyValueStore.open(alias="an-alias", storage_client=storage_client)
    before = {m.id for m in await storage_client.list_key_value_stores()}
    assert await storage_client.find_key_value_store(name="found-by-name") == named.id
    assert await storage_client.find_key_value_store(name="no-such-store") is None
    assert await storage_client.find_key_value_store(name="an-alias") is None  # an alias is no name
    assert await storage_client.find_key_value_store(name="default") is None
    assert {m.id for m in await storage_client.list_key_value_stores()} == before
    await named.drop()
    assert await storage_client.find_key_value_store(name="found-by-name") is None


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "%2e%2e", "a\x00b", "", "-x"])
async def test_finding_a_store_by_a_hostile_name_is_refused(storage_client: StorageClient, name: str) -> None:
    with pytest.raises(InvalidStoreNameError):
        await storage_client.find_key_value_store(name=name)
