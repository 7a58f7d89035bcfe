"""Attacks on a state's history: hostile keys, planted copies, races of on_invalid="previous", failing copies, cost.

Each test says what should hold. Those that do not hold yet describe a break of the history as it is; the
others are attacks that the history withstood, kept so that it goes on withstanding them.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING, Any

import pytest

from recoverable._history import history_prefix, kept_key
from recoverable.errors import InvalidKeyError, StateHistoryError, StateOwnershipError, StorageBackendError
from recoverable.events import Event, EventMigratingData
from recoverable.storages import FileSystemStorageClient, KeyValueStore
from state.history_support import JSON, Crawl, make_state, save_pages
from state.support import KEY, quiet_event_manager

if TYPE_CHECKING:
    from pathlib import Path

    from recoverable.storages import StorageClient

INFIX = history_prefix("A")[1:]  # what comes between a state key and the number of a copy


def dump(pages: int) -> bytes:
    return Crawl(pages=pages).model_dump_json().encode()


def crc(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}"


async def copies(kvs: KeyValueStore) -> list[str]:
    return sorted(info.key for info in await kvs.list_keys() if INFIX in info.key)


# --- hostile keys: one state's history must never take in another state's records ----------------------------


async def test_a_state_named_like_a_copy_of_another_is_refused(kvs: KeyValueStore) -> None:
    """State "A" lists `A.history.*` as its copies: a state whose very key has that form would be taken for one.

    Its record would be listed as version 5 of "A", and deleted by the trim of "A" once "A" saved past it:
    such a key is refused when the state is made.
    """
    other_key = f"A{INFIX}5.manual.20260101T000000000000Z.{crc(dump(99))}"
    with pytest.raises(InvalidKeyError, match="has the form of a copy kept in the history of another state"):
        make_state(kvs, key=other_key)
    # A key that only looks alike is a key like any other.
    async with make_state(kvs, key=f"A{INFIX}5.manual") as other:
        await save_pages(other, 99)
    async with make_state(kvs, key="A") as state:
        assert await state.history() == []


async def test_long_keys_that_share_their_first_characters_keep_histories_of_their_own(kvs: KeyValueStore) -> None:
    """Two keys of 1001 characters differing only in the last one: each state has a history of its own.

    The history key is cut to fit 1024 characters, and both histories land under the same prefix: "A" rolls
    back to a save of "B", and the trims of each delete the copies of the other.
    """
    a_key, b_key = "k" * 1000 + "A", "k" * 1000 + "B"
    async with make_state(kvs, key=a_key) as a:
        await save_pages(a, 1, 2, 3)
    async with make_state(kvs, key=b_key) as b:
        assert [v.version for v in await b.history()] == [], "state B lists the saves of state A as its own"
        await save_pages(b, 100)
    async with make_state(kvs, key=a_key) as a:
        assert [(v.version, v.current) for v in await a.history()] == [(3, True), (2, False), (1, False)]
        assert a.current_value.pages == 3


async def test_a_copy_key_whose_time_is_no_date_does_not_stop_the_state_from_loading(kvs: KeyValueStore) -> None:
    """A record whose key has the form of a copy but names no real time (month 13) is not a copy of the state.

    Today it makes `initialize()` (and `history()`) raise a bare ValueError of `strptime`: the state can no
    longer be loaded at all, whatever its own record holds.
    """
    await kvs.client.set_record(key=KEY, value=dump(4), content_type=JSON)
    await kvs.client.set_record(
        key=f"{KEY}{INFIX}1.manual.20261399T000000000000Z.{crc(b'{}')}", value=b"{}", content_type=JSON
    )
    async with make_state(kvs) as state:
        assert state.current_value.pages == 4
        versions = await state.history()
    assert [(v.version, v.current) for v in versions] == [(0, True)]


async def test_a_planted_huge_save_number_does_not_hide_the_saves_that_follow(kvs: KeyValueStore) -> None:
    """A copy numbered 999999999999999999 (18 digits, the most a copy key may have) is planted.

    The saves that follow are numbered from 10**18: 19 digits, which no listing recognises. Their copies are
    never listed, never rolled back to, never trimmed after a restart, and numbering starts over at 1.
    """
    data = dump(1)
    await kvs.client.set_record(key=KEY, value=data, content_type=JSON)
    await kvs.client.set_record(key=kept_key(KEY, 10**18 - 1, "manual", data), value=data, content_type=JSON)
    for run in range(3):
        async with make_state(kvs) as state:
            await save_pages(state, 10 * run + 2, 10 * run + 3)
            versions = await state.history()
            # The save just made is listed, as the current version, whatever the numbers planted before.
            assert versions[0].current, versions
            assert versions[0].version != 0, versions
    assert len(await copies(kvs)) <= 3 + 1, "copies the state made pile up unlisted"


# --- on_invalid="previous": races -------------------------------------------------------------------------------


async def test_a_write_landing_between_the_quarantine_and_the_write_back_is_loaded_instead(
    kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fall-back writes the good version only over the very record found bad; a write landing in between wins.

    `_fall_back` says that `_load` then loads that write instead. It does not: the VersionConflictError
    escapes `initialize()`.
    """
    async with make_state(kvs) as state:
        await save_pages(state, 1, 2, 3)
    await kvs.client.set_record(key=KEY, value=b"{garbage", content_type=JSON)

    client = kvs.client
    set_record = client.set_record
    landed: list[str] = []

    async def set_record_then_a_write_lands(**kwargs: Any) -> str:
        version = await set_record(**kwargs)
        if ".quarantine-" in kwargs["key"] and not landed:
            landed.append(await set_record(key=KEY, value=dump(42), content_type=JSON))
        return version

    monkeypatch.setattr(client, "set_record", set_record_then_a_write_lands)
    async with make_state(kvs, on_invalid="previous", lease_ttl=None) as state:
        assert landed
        assert state.current_value.pages == 42  # the good write that landed, not an older version over it
    stored = await kvs.client.get_record(key=KEY)
    assert stored is not None
    assert stored.value == dump(42)


async def test_two_starts_without_a_lease_on_one_bad_record_both_load_a_good_version(
    kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two programs with lease_ttl=None start at once on a bad record; both read it before either replaces it.

    One writes a good version back; the other's write-back is refused. It should load what the first wrote,
    as `_fall_back` promises; it raises VersionConflictError out of `initialize()` instead.
    """
    async with make_state(kvs) as state:
        await save_pages(state, 1, 2)
    await kvs.client.set_record(key=KEY, value=b"", content_type=JSON)

    client = kvs.client
    get_record = client.get_record
    both_read = asyncio.Barrier(2)
    waiting = [True]

    async def get_record_together(*, key: str) -> Any:
        stored = await get_record(key=key)
        if key == KEY and waiting:
            try:
                await asyncio.wait_for(both_read.wait(), timeout=5)
            finally:
                waiting.clear()
        return stored

    monkeypatch.setattr(client, "get_record", get_record_together)
    first = make_state(kvs, on_invalid="previous", lease_ttl=None)
    second = make_state(kvs, on_invalid="previous", lease_ttl=None)
    results = await asyncio.gather(first.initialize(), second.initialize(), return_exceptions=True)
    for state in (first, second):
        if state.is_initialized:
            await state.teardown()
    assert results == [Crawl(pages=2), Crawl(pages=2)], results


async def test_the_fall_back_passes_over_a_copy_equal_to_the_bad_record(
    kvs: KeyValueStore,
) -> None:
    """Held: the newest copy holds the very bytes now found bad (a save of a bug): the one before it is loaded."""
    async with make_state(kvs, history=5) as state:
        await save_pages(state, 1, 2)
    bad = b'{"pages": "many"}'
    # The bad bytes, kept as save 4 with the right checksum.
    await kvs.client.set_record(key=kept_key(KEY, 4, "manual", bad), value=bad, content_type=JSON)
    await kvs.client.set_record(key=KEY, value=bad, content_type=JSON)
    async with make_state(kvs, on_invalid="previous", history=5) as state:
        assert state.current_value.pages == 2
        assert [v.version for v in await state.history()][:2] == [5, 4]


# --- history=0 after a history ---------------------------------------------------------------------------------


async def test_history_0_after_a_history_trims_the_copies_at_the_next_save(kvs: KeyValueStore) -> None:
    """docs/history.md: "A smaller `history` than before trims the extra copies at the next save", and 0 keeps none.

    With history=0 the save copies nothing and trims nothing: the old copies stay for ever, listed by
    `history()` and rolled back to, by a state that keeps no history.
    """
    async with make_state(kvs, history=5) as state:
        await save_pages(state, 1, 2, 3, 4, 5)
    async with make_state(kvs, history=0) as state:
        await save_pages(state, 6)
        assert [(v.version, v.current) for v in await state.history()] == [(0, True)]
    assert await copies(kvs) == []


# --- a history copy that fails after the record landed ----------------------------------------------------------


async def test_a_failed_copy_to_the_history_does_not_report_a_landed_save_as_failed(
    kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`persist_state()` raising StorageError means "the save failed; ... the old record intact".

    The copy to the history fails (a full disk, a key the backend cannot name) after the record was written:
    the save raises although it landed, and the next save (teardown) writes the same bytes again as a new
    save. Either the save is not reported as failed, or the record is the old one.
    """
    client = kvs.client
    set_record = client.set_record
    failures = [1]

    async def copy_fails_once(**kwargs: Any) -> str:
        if INFIX in kwargs["key"] and failures:
            failures.clear()
            raise StorageBackendError("injected failure of the copy", store="test", key=kwargs["key"])
        return await set_record(**kwargs)

    monkeypatch.setattr(client, "set_record", copy_fails_once)
    async with make_state(kvs) as state:
        await save_pages(state, 1)
        state.current_value.pages = 2
        try:
            await state.persist_state()
        except StorageBackendError:
            stored = await kvs.client.get_record(key=KEY)
            assert stored is not None
            assert stored.value == dump(1), "the save raised 'failed', yet its record landed"


# --- the file system -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["состояние_краулера_магазина", "crawl-" + "k" * 160], ids=["cyrillic", "long"])
async def test_saves_with_a_history_do_not_leave_a_file_behind_each(tmp_path: Path, key: str) -> None:
    """A key whose copy keys are too long for a file name (27 Cyrillic letters, 166 ASCII characters).

    Each copy's full key is kept in `.keys/<hash>`, and the trim deletes the copy but not that file: the store
    grows by one file per save, for ever.
    """
    client = FileSystemStorageClient(storage_dir=tmp_path / "storage")
    kvs = await KeyValueStore.open(name="files", storage_client=client)
    async with make_state(kvs, key=key) as state:
        await save_pages(state, *range(1, 41))
    store = tmp_path / "storage" / "key_value_stores" / "files"
    files = [path for path in store.rglob("*") if path.is_file()]
    # the record, 3 copies, their long keys, the store's metadata and lock: a few, not one per save
    assert len(files) <= 12, sorted(str(path.relative_to(store)) for path in files)


async def test_a_copy_on_the_file_system_does_not_read_the_record_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`_history`: the copy is made "without moving the bytes through the process: a hard link" (docs/history.md).

    No storage client overrides `copy_record`: each save with a history reads the whole record back from disk
    and writes it again, three times the bytes of a save without.
    """
    client = FileSystemStorageClient(storage_dir=tmp_path / "storage")
    kvs = await KeyValueStore.open(name="cost", storage_client=client)
    async with make_state(kvs) as state:
        store_client = kvs.client
        get_record = store_client.get_record
        reads: list[str] = []

        async def counted(*, key: str) -> Any:
            reads.append(key)
            return await get_record(key=key)

        monkeypatch.setattr(store_client, "get_record", counted)
        await save_pages(state, 1, 2, 3)
    assert reads == []


# --- cost: what held ---------------------------------------------------------------------------------------


async def test_history_reads_only_the_current_record_however_many_copies(
    kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held: `history()` lists the keys and reads one record, the current one; an unchanged save writes nothing."""
    async with make_state(kvs, history=20) as state:
        await save_pages(state, *range(1, 21))
        client = kvs.client
        get_record, set_record = client.get_record, client.set_record
        reads: list[str] = []
        writes: list[str] = []

        async def counted_get(*, key: str) -> Any:
            reads.append(key)
            return await get_record(key=key)

        async def counted_set(**kwargs: Any) -> str:
            writes.append(kwargs["key"])
            return await set_record(**kwargs)

        monkeypatch.setattr(client, "get_record", counted_get)
        monkeypatch.setattr(client, "set_record", counted_set)
        versions = await state.history()
        for _ in range(3):
            await state.persist_state()
        assert len(versions) == 20
        assert reads == [KEY]
        assert writes == []


# --- rollback: what held -----------------------------------------------------------------------------------


async def test_rollback_waits_for_a_save_in_flight_and_numbers_stay_unique(
    kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held: a rollback asked for while a save is writing waits for it, then lands as the next save."""
    async with make_state(kvs) as state:
        await save_pages(state, 1, 2)
        client = kvs.client
        set_record = client.set_record

        async def slow(**kwargs: Any) -> str:
            if kwargs["key"] == KEY:
                await asyncio.sleep(0.2)
            return await set_record(**kwargs)

        monkeypatch.setattr(client, "set_record", slow)
        state.current_value.pages = 3
        save = asyncio.create_task(state.persist_state())
        await asyncio.sleep(0.05)
        restored = await state.rollback(1)
        await save
        assert restored == Crawl(pages=1)
        versions = await state.history()
        assert [(v.version, v.trigger) for v in versions] == [(4, "rollback"), (3, "manual"), (2, "manual")]
        assert len({v.version for v in versions}) == len(versions)
    stored = await kvs.client.get_record(key=KEY)
    assert stored is not None
    assert stored.value == dump(1)


async def test_rollback_after_the_hand_over_at_a_stop_is_refused_and_writes_nothing(kvs: KeyValueStore) -> None:
    """Held: once the state let go of its lease at a stop, a rollback raises and the record is the final save."""
    manager = quiet_event_manager()
    state = make_state(kvs, manager=manager)
    await state.initialize()
    await save_pages(state, 1, 2)
    state.current_value.pages = 3
    manager.emit(event=Event.MIGRATING, event_data=EventMigratingData())
    await manager.wait_for_all_listeners_to_complete()
    keys = await copies(kvs)
    with pytest.raises(StateOwnershipError, match="let go of its lease"):
        await state.rollback(1)
    await state.teardown()
    stored = await kvs.client.get_record(key=KEY)
    assert stored is not None
    assert stored.value == dump(3)
    assert await copies(kvs) == keys


async def test_rollback_to_version_0_and_to_numbers_never_kept(kvs: KeyValueStore) -> None:
    """Held: version 0 is the current record only while the history does not know it; numbers not kept say so."""
    await kvs.client.set_record(key=KEY, value=dump(7), content_type=JSON)
    async with make_state(kvs) as state:
        restored = await state.rollback(0)  # the record written by hand, kept as a save of its own now
        assert restored == Crawl(pages=7)
        assert [(v.version, v.trigger, v.current) for v in await state.history()] == [(1, "rollback", True)]
        with pytest.raises(StateHistoryError, match="no saved version 0"):
            await state.rollback(0)
        for number in (2, 10**18, 2**63):
            with pytest.raises(StateHistoryError, match="versions kept are 1"):
                await state.rollback(number)


async def test_history_keys_are_prefixed_by_the_state_key_even_with_dots_percent_signs_and_unicode(
    storage_client: StorageClient,
) -> None:
    """Held: keys that look like paths, escapes or other infixes keep histories of their own."""
    kvs = await KeyValueStore.open(name="odd-keys", storage_client=storage_client)
    odd = ["a.b", "a.b" + INFIX, "100%2e%2e", "ключ/..\\日本", ".."]
    for index, key in enumerate(odd):
        async with make_state(kvs, key=key) as state:
            await save_pages(state, *range(10 * index + 1, 10 * index + 5))
    for index, key in enumerate(odd):
        async with make_state(kvs, key=key) as state:
            versions = await state.history()
            assert [v.version for v in versions] == [4, 3, 2], key
            assert all(v.key.startswith(history_prefix(key)) for v in versions)
            assert (await state.rollback(2)).pages == 10 * index + 2
