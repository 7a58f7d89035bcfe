"""copy_record: a record copied to another key all or nothing, with a version of its own, the source untouched."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from recoverable.errors import InvalidKeyError, StoreNotFoundError, VersionConflictError
from recoverable.storages import MAX_KEY_LENGTH, KeyValueStoreClient, StorageClient

Reopen = Callable[[], Awaitable[StorageClient]]
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
ODD = "application/x-odd; v=1"


async def _record(store: KeyValueStoreClient, key: str) -> tuple[bytes, str, str] | None:
    record = await store.get_record(key=key)
    return None if record is None else (record.value, record.content_type, record.version)


async def _listing(store: KeyValueStoreClient) -> list[tuple[str, int]]:
    return [(info.key, info.size) async for info in store.iterate_keys()]


async def test_a_copy_has_the_bytes_and_content_type_and_a_version_of_its_own(store: KeyValueStoreClient) -> None:
    source = await store.set_record(key="state", value=b'{"pages": 3}', content_type=JSON)

    copied = await store.copy_record(key="state", to_key="state.~history.1")

    assert isinstance(copied, str)
    assert copied
    assert copied != source
    assert await _record(store, "state.~history.1") == (b'{"pages": 3}', JSON, copied)
    assert await _record(store, "state") == (b'{"pages": 3}', JSON, source)
    assert await store.record_exists(key="state.~history.1")
    assert await _listing(store) == [("state", 12), ("state.~history.1", 12)]


async def test_a_copy_replaces_a_record_of_another_content_type(store: KeyValueStoreClient) -> None:
    await store.set_record(key="src", value=b"[1, 2]", content_type=JSON)
    for old_type in (TEXT, ODD):
        old = await store.set_record(key="dst", value=b"an older, longer record", content_type=old_type)

        copied = await store.copy_record(key="src", to_key="dst")

        assert copied not in (None, old)
        assert await _record(store, "dst") == (b"[1, 2]", JSON, copied)
        assert await _listing(store) == [("dst", 6), ("src", 6)]


async def test_a_copy_of_an_unusual_content_type(store: KeyValueStoreClient) -> None:
    await store.set_record(key="src", value=b"\x00\xff odd", content_type=ODD)
    await store.set_record(key="dst", value=b"{}", content_type=JSON)

    copied = await store.copy_record(key="src", to_key="dst")

    assert await _record(store, "dst") == (b"\x00\xff odd", ODD, copied)
    assert await _listing(store) == [("dst", 6), ("src", 6)]


async def test_an_empty_record_is_copied(store: KeyValueStoreClient) -> None:
    await store.set_record(key="src", value=b"", content_type=TEXT)

    copied = await store.copy_record(key="src", to_key="dst")

    assert await _record(store, "dst") == (b"", TEXT, copied)


async def test_if_version_match_copies(store: KeyValueStoreClient) -> None:
    version = await store.set_record(key="src", value=b"1", content_type=JSON)
    await store.set_record(key="dst", value=b"old", content_type=TEXT)

    copied = await store.copy_record(key="src", to_key="dst", if_version=version)

    assert await _record(store, "dst") == (b"1", JSON, copied)


@pytest.mark.parametrize("destination", ["absent", "present"])
async def test_if_version_mismatch_raises_and_writes_nothing(store: KeyValueStoreClient, destination: str) -> None:
    stale = await store.set_record(key="src", value=b"1", content_type=JSON)
    current = await store.set_record(key="src", value=b"2", content_type=JSON)
    before = None
    if destination == "present":
        await store.set_record(key="dst", value=b"old", content_type=TEXT)
        before = await _record(store, "dst")
    listing = await _listing(store)

    with pytest.raises(VersionConflictError) as info:
        await store.copy_record(key="src", to_key="dst", if_version=stale)

    assert (info.value.key, info.value.expected, info.value.actual) == ("src", stale, current)
    assert await _record(store, "dst") == before
    assert await _record(store, "src") == (b"2", JSON, current)
    assert await _listing(store) == listing


async def test_a_missing_source_copies_nothing(store: KeyValueStoreClient) -> None:
    assert await store.copy_record(key="missing", to_key="dst") is None
    assert await _record(store, "dst") is None
    assert await _listing(store) == []

    await store.set_record(key="dst", value=b"kept", content_type=TEXT)
    before = await _record(store, "dst")
    assert await store.copy_record(key="missing", to_key="dst") is None
    assert await _record(store, "dst") == before


async def test_a_missing_source_with_if_version_raises(store: KeyValueStoreClient) -> None:
    version = await store.set_record(key="src", value=b"1", content_type=JSON)
    await store.delete_record(key="src")

    with pytest.raises(VersionConflictError) as info:
        await store.copy_record(key="src", to_key="dst", if_version=version)

    assert (info.value.key, info.value.expected, info.value.actual) == ("src", version, None)
    assert await _listing(store) == []


BAD_KEYS: list[object] = ["", "a\x00b", "k" * (MAX_KEY_LENGTH + 1), "\ud800", None, 7]


@pytest.mark.parametrize("bad", BAD_KEYS, ids=repr)
@pytest.mark.parametrize("side", ["key", "to_key"])
async def test_invalid_keys_are_refused_before_anything(store: KeyValueStoreClient, bad: object, side: str) -> None:
    await store.set_record(key="good", value=b"1", content_type=JSON)
    before = await _listing(store)
    keys = {"key": bad, "to_key": "copy"} if side == "key" else {"key": "good", "to_key": bad}

    with pytest.raises(InvalidKeyError) as info:
        await store.copy_record(**keys)  # type: ignore[arg-type]

    assert isinstance(info.value, ValueError)
    assert info.value.store == "conformance"
    assert await _listing(store) == before


async def test_the_copy_never_repeats_a_version_of_the_destination(store: KeyValueStoreClient) -> None:
    source = await store.set_record(key="src", value=b"same", content_type=JSON)
    seen = {source}
    for round_ in range(5):
        # The same source, unchanged, copied again and again over a destination written in between.
        written = await store.set_record(key="dst", value=b"same", content_type=JSON)
        copied = await store.copy_record(key="src", to_key="dst", if_version=source)
        again = await store.copy_record(key="src", to_key="dst")
        assert copied is not None
        assert again is not None
        assert {written, copied, again}.isdisjoint(seen), round_
        assert len({written, copied, again}) == 3
        seen |= {written, copied, again}
        assert (await _record(store, "dst")) == (b"same", JSON, again)
    assert (await _record(store, "src")) == (b"same", JSON, source)


async def test_a_stale_version_of_the_destination_never_matches_after_a_copy(store: KeyValueStoreClient) -> None:
    await store.set_record(key="src", value=b"v", content_type=JSON)
    first = await store.copy_record(key="src", to_key="dst")
    await store.set_record(key="dst", value=b"other", content_type=JSON)
    await store.copy_record(key="src", to_key="dst")

    assert first is not None
    with pytest.raises(VersionConflictError):
        await store.set_record(key="dst", value=b"late", content_type=JSON, if_version=first)
    with pytest.raises(VersionConflictError):
        await store.delete_record(key="dst", if_version=first)
    assert (await _record(store, "dst") or (b"",))[0] == b"v"


async def test_the_source_keeps_its_version_and_conditional_writes_go_on(store: KeyValueStoreClient) -> None:
    """What a state's history does: copy the record as its owner last wrote it, then overwrite it."""
    version = await store.set_record(key="state", value=b'{"n": 0}', content_type=JSON)
    for n in range(1, 6):
        copied = await store.copy_record(key="state", to_key=f"state.~history.{n}", if_version=version)
        assert copied != version
        version = await store.set_record(
            key="state", value=f'{{"n": {n}}}'.encode(), content_type=JSON, if_version=version
        )

    for n in range(1, 6):
        record = await store.get_record(key=f"state.~history.{n}")
        assert record is not None
        assert record.value == f'{{"n": {n - 1}}}'.encode()
    assert await _record(store, "state") == (b'{"n": 5}', JSON, version)


async def test_writes_of_either_key_leave_the_other_as_it_was(store: KeyValueStoreClient) -> None:
    await store.set_record(key="src", value=b"first", content_type=JSON)
    copied = await store.copy_record(key="src", to_key="dst")

    rewritten = await store.set_record(key="src", value=b"second, longer", content_type=TEXT)
    assert await _record(store, "dst") == (b"first", JSON, copied)

    written = await store.set_record(key="dst", value=b"third", content_type=JSON, if_version=copied)
    assert await _record(store, "src") == (b"second, longer", TEXT, rewritten)
    assert await _record(store, "dst") == (b"third", JSON, written)

    again = await store.copy_record(key="src", to_key="dst")
    assert await store.delete_record(key="src", if_version=rewritten) is True
    assert await _record(store, "dst") == (b"second, longer", TEXT, again)
    assert await store.delete_record(key="dst", if_version=again) is True
    assert await _listing(store) == []


async def test_a_copy_of_a_copy(store: KeyValueStoreClient) -> None:
    await store.set_record(key="a", value=b"x", content_type=JSON)
    b = await store.copy_record(key="a", to_key="b")
    c = await store.copy_record(key="b", to_key="c", if_version=b)

    assert c not in (None, b)
    assert await _record(store, "b") == (b"x", JSON, b)
    assert await _record(store, "c") == (b"x", JSON, c)
    back = await store.copy_record(key="c", to_key="a", if_version=c)
    assert await _record(store, "a") == (b"x", JSON, back)
    assert len({b, c, back}) == 3


async def test_a_record_copied_onto_itself_gets_a_new_version(store: KeyValueStoreClient) -> None:
    version = await store.set_record(key="k", value=b"self", content_type=TEXT)

    copied = await store.copy_record(key="k", to_key="k", if_version=version)

    assert copied not in (None, version)
    assert await _record(store, "k") == (b"self", TEXT, copied)
    with pytest.raises(VersionConflictError):
        await store.copy_record(key="k", to_key="k", if_version=version)


ODD_KEYS = ["../escape", "a/b", ".~copy.x", ".~tmp.x", "a.json", "__metadata__.json", "🔑", "k" * MAX_KEY_LENGTH]


@pytest.mark.parametrize("key", ODD_KEYS, ids=lambda k: repr(k[:20]))
async def test_keys_of_any_kind_copy_both_ways(store: KeyValueStoreClient, key: str) -> None:
    await store.set_record(key=key, value=b"from the odd key", content_type=JSON)
    await store.set_record(key="plain", value=b"from the plain key", content_type=TEXT)

    to_plain = await store.copy_record(key=key, to_key="plain")
    to_long = await store.copy_record(key="plain", to_key="k" * (MAX_KEY_LENGTH - 1) + "z")
    to_odd = await store.copy_record(key="k" * (MAX_KEY_LENGTH - 1) + "z", to_key=key)

    assert await _record(store, "plain") == (b"from the odd key", JSON, to_plain)
    assert await _record(store, "k" * (MAX_KEY_LENGTH - 1) + "z") == (b"from the odd key", JSON, to_long)
    assert await _record(store, key) == (b"from the odd key", JSON, to_odd)
    assert [info.key async for info in store.iterate_keys()] == sorted({key, "plain", "k" * (MAX_KEY_LENGTH - 1) + "z"})


async def test_a_large_record_is_copied_whole(store: KeyValueStoreClient) -> None:
    value = bytes(range(256)) * 4096 + b"end"  # 1 MiB and a bit
    await store.set_record(key="big", value=value, content_type="application/octet-stream")

    copied = await store.copy_record(key="big", to_key="big.copy")

    record = await store.get_record(key="big.copy")
    assert record is not None
    assert (record.value == value, record.version) == (True, copied)


async def test_another_client_sees_the_copy(
    store: KeyValueStoreClient, storage_client: StorageClient, reopen_storage_client: Reopen
) -> None:
    await store.set_record(key="src", value=b"new", content_type=JSON)
    await store.set_record(key="dst", value=b"old", content_type=TEXT)
    other = await (await reopen_storage_client()).open_key_value_store_client(name="conformance")
    assert (await _record(other, "dst") or (b"",))[0] == b"old"  # the other client knows the old record
    assert await other.get_record(key="fresh") is None

    copied = await store.copy_record(key="src", to_key="dst")
    to_fresh = await store.copy_record(key="src", to_key="fresh")

    assert await _record(other, "dst") == (b"new", JSON, copied)
    assert await _record(other, "fresh") == (b"new", JSON, to_fresh)
    assert await other.record_exists(key="fresh")
    assert [info.key async for info in other.iterate_keys()] == ["dst", "fresh", "src"]
    # The other client's conditional writes see the copy's version too.
    assert copied is not None
    await other.set_record(key="dst", value=b"theirs", content_type=JSON, if_version=copied)
    assert (await _record(store, "dst") or (b"",))[0] == b"theirs"


async def test_a_copy_in_a_dropped_store_raises(storage_client: StorageClient) -> None:
    store = await storage_client.open_key_value_store_client(name="dropped")
    await store.set_record(key="src", value=b"1", content_type=JSON)
    await store.drop()

    with pytest.raises(StoreNotFoundError):
        await store.copy_record(key="src", to_key="dst")
