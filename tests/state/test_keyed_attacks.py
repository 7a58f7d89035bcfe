"""Attacks on `KeyedRecoverableState` and `RecoverableSet`: races, cancelled saves, hostile records, odd input.

Each test states the promise it checks (docs/keyed-state.md). The storage wrappers of `state.support` run over
a real memory or file system store and only delay, gate or fail calls, as a slow or flaky backend would.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from recoverable.errors import RecoverableError, SerializationError, StorageBackendError
from state.keyed_support import KEY, Domain, make_keyed, make_set, manifest_of, shrink, side_records
from state.support import open_instrumented_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from recoverable.storages import KeyInfo, KeyValueStore, StorageClient


async def test_a_save_made_while_a_reset_lists_the_old_records_survives(storage_client: StorageClient) -> None:
    """Concurrent `reset()` and `persist_state()`: a save that returned must load back after a restart.

    `reset()` deletes the manifest under the save lock, then lists and deletes every record of the state with
    no lock held: a save made meanwhile (under the new, empty manifest) has its changelog record deleted.
    """
    kvs, client = await open_instrumented_store(storage_client)
    inner_iterate = client.iterate_keys

    async def slow_listing(**kwargs: Any) -> AsyncIterator[KeyInfo]:
        await asyncio.sleep(0.2)  # a listing over a slow link (the HTTP client pages, Redis scans)
        async for info in inner_iterate(**kwargs):
            yield info

    async with make_keyed(kvs, persistence_enabled="explicit_only") as domains:
        domains["old"] = Domain(pages=1)
        await domains.persist_state()
        client.iterate_keys = slow_listing  # type: ignore[method-assign]
        reset = asyncio.create_task(domains.reset())
        await asyncio.sleep(0.05)  # the reset has deleted the manifest and is listing the old records
        domains["new"] = Domain(pages=2)
        await domains.persist_state()  # returns: saved
        await reset
        client.iterate_keys = inner_iterate  # type: ignore[method-assign]
    async with make_keyed(kvs) as again:
        assert dict(again) == {"new": Domain(pages=2)}


async def test_a_stale_owners_reset_never_deletes_the_new_owners_records(
    storage_client: StorageClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stale owner's write never lands: neither may its deletes, once another process took the state over.

    The stale owner's `reset()` deleted its manifest (fenced) and was then frozen while deleting the records
    it named; it resumes after a takeover and must delete none of the new owner's.
    """
    from state.keyed_support import SHORT_TTL  # noqa: PLC0415

    kvs, client = await open_instrumented_store(storage_client)
    inner_delete = client.delete_record
    frozen = asyncio.Event()
    thawed = asyncio.Event()

    async def freezing_delete(*, key: str, if_version: str | None = None) -> bool:
        if key.startswith(f"{KEY}.~") and not frozen.is_set():
            frozen.set()
            await thawed.wait()  # SIGSTOP here, SIGCONT after the takeover
        return await inner_delete(key=key, if_version=if_version)

    # Without a history, whose copies would keep the records the reset deletes.
    stale = make_keyed(kvs, lease_ttl=SHORT_TTL, persistence_enabled="explicit_only", history=0)
    await stale.initialize()
    stale["a"] = Domain(pages=1)
    await stale.persist_state()
    client.delete_record = freezing_delete  # type: ignore[method-assign]
    reset = asyncio.create_task(stale.reset())
    await frozen.wait()
    lease = stale._lease
    assert lease is not None
    assert lease._renewer is not None
    lease._renewer.cancel()  # frozen: its lease is no longer renewed
    await asyncio.sleep(SHORT_TTL.total_seconds() + 0.1)

    new = make_keyed(kvs, lease_ttl=SHORT_TTL, persistence_enabled="explicit_only")
    await new.initialize()
    new["b"] = Domain(pages=2)
    await new.persist_state()  # returns: saved
    thawed.set()
    await asyncio.gather(reset, return_exceptions=True)
    await new.teardown()
    async with make_keyed(kvs) as again:
        assert dict(again) == {"b": Domain(pages=2)}


async def test_a_save_after_a_cancelled_one_never_rewrites_the_records_its_manifest_names(
    storage_client: StorageClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash-atomic after a cancelled save: the store loads as exactly one saved state, never a mix of two.

    A save is cancelled (task.cancel, a timeout) after its manifest landed but before the answer came back. The
    next save reuses the same save number and writer, so it rewrites the part records that landed manifest
    names ("every record is written once ... and is never changed"); when it then fails before its own
    manifest lands (a crash, an I/O error), the store holds parts of the second save under the manifest of the
    first: a state that was never saved.
    """
    shrink(monkeypatch)
    kvs, client = await open_instrumented_store(storage_client)
    domains = make_keyed(kvs, persistence_enabled="explicit_only")
    await domains.initialize()
    for i in range(40):
        domains[f"k{i}"] = Domain(pages=1)
    await domains.persist_state()  # save 1: one changelog record of 40 entries, so save 2 compacts
    saved_1 = dict(domains)
    domains["k0"] = Domain(pages=2)
    saved_2 = dict(domains)

    client.answer_delay = 0.3  # every write lands at once; its answer comes 0.3 s later
    save_2 = asyncio.create_task(domains.persist_state())
    while (await manifest_of(kvs)).seq < 2:  # noqa: ASYNC110 - polls the store, which signals nothing
        await asyncio.sleep(0.01)
    save_2.cancel()  # the manifest of save 2 has landed; its caller gives up waiting
    with pytest.raises(asyncio.CancelledError):
        await save_2
    client.answer_delay = 0

    for i in range(40):
        domains[f"k{i}"] = Domain(pages=3)
    inner_set = client.set_record

    async def failing_log_writes(**kwargs: Any) -> str:
        if ".~log." in kwargs["key"]:
            raise StorageBackendError("injected failure of a changelog write", store="instrumented", key=kwargs["key"])
        return await inner_set(**kwargs)

    client.set_record = failing_log_writes  # type: ignore[method-assign]
    with pytest.raises(StorageBackendError, match="injected"):
        await domains.persist_state()  # the process dies here, before this save's manifest lands
    client.set_record = inner_set  # type: ignore[method-assign]
    domains._abandon_lease()  # the dead process never releases its lease; nor does it save at teardown
    domains._initialized = False

    async with make_keyed(kvs, lease_ttl=None) as again:
        loaded = dict(again)
    assert loaded in (saved_1, saved_2), {key: value.pages for key, value in sorted(loaded.items())}


async def test_a_changelog_write_that_lands_after_its_timeout_never_replaces_a_later_save(
    storage_client: StorageClient,
) -> None:
    """A save that returned is never lost: a write the library gave up on (timeout) may still land later.

    The library knows such writes may land (it keeps the manifest's in `_unanswered`); but the changelog
    record of the failed save and that of the next save have the same key, so the late write replaces the
    later, larger record under the manifest that names it.
    """
    from datetime import timedelta  # noqa: PLC0415

    kvs, client = await open_instrumented_store(storage_client)
    inner_set = client.set_record
    late: list[asyncio.Task[str]] = []

    async def first_log_write_lands_late(**kwargs: Any) -> str:
        if ".~log." in kwargs["key"] and not late:

            async def deliver() -> str:
                await asyncio.sleep(0.6)  # a request delivered after its sender gave up on it
                return await inner_set(**kwargs)

            late.append(asyncio.ensure_future(deliver()))
            return await asyncio.shield(late[0])
        return await inner_set(**kwargs)

    client.set_record = first_log_write_lands_late  # type: ignore[method-assign]
    async with make_keyed(kvs, persistence_enabled="explicit_only", timeout=timedelta(seconds=0.3)) as domains:
        domains["a"] = Domain(pages=1)
        with pytest.raises(RecoverableError, match="took longer than"):
            await domains.persist_state()
        domains["b"] = Domain(pages=2)
        await domains.persist_state()  # returns: a and b are saved
        await late[0]
    async with make_keyed(kvs) as again:
        assert dict(again) == {"a": Domain(pages=1), "b": Domain(pages=2)}


async def saved_in_parts(kvs: KeyValueStore) -> dict[str, Domain]:
    """Save 40 entries and compact them into several part records; return them."""
    async with make_keyed(kvs, persistence_enabled="explicit_only") as domains:
        for i in range(40):
            domains[f"k{i}"] = Domain(pages=i)
        await domains.persist_state()
        for save in range(8):  # more saves: the compaction rewrites every part
            domains[f"k{save}"] = Domain(pages=100 + save)
            await domains.persist_state()
        saved = dict(domains)
    manifest = await manifest_of(kvs)
    assert len([part for part in manifest.parts if part.record is not None]) >= 3
    return saved


async def test_a_manifest_whose_parts_name_each_others_records_is_refused(
    kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Damaged records raise StateValidationError; a load never makes a mapping that is not a mapping.

    Here every part names the record of another region. The load puts each key in the part of the region named,
    not in the part its hash says: iteration yields keys that `in` denies, and a key set again is held twice.
    """
    shrink(monkeypatch)
    await saved_in_parts(kvs)
    manifest = await manifest_of(kvs)
    records = [part.record for part in manifest.parts]
    parts = [
        part.model_copy(update={"record": records[(i + 1) % len(records)]}) for i, part in enumerate(manifest.parts)
    ]
    swapped = manifest.model_copy(update={"parts": parts}).model_dump_json().encode()
    await kvs.client.set_record(key=KEY, value=swapped, content_type="application/json")
    from recoverable.errors import StateValidationError  # noqa: PLC0415

    try:
        async with make_keyed(kvs) as domains:
            listed = list(domains)
            assert all(key in domains for key in listed), "iteration yields keys that `in` denies"
            assert len(listed) == len(set(listed)) == len(domains)
    except StateValidationError:
        pass  # what the promise asks for


async def test_a_part_record_emptied_behind_the_manifests_back_is_refused(
    kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never a silent loss: the manifest says how many entries each part holds, and nobody checks it.

    A part record replaced by `{}` (valid JSON, a part of no entries) loads without a word, the entries gone.
    """
    shrink(monkeypatch)
    saved = await saved_in_parts(kvs)
    manifest = await manifest_of(kvs)
    emptied = next(part for part in manifest.parts if part.record is not None and part.count > 0)
    assert emptied.record is not None
    await kvs.client.set_record(key=emptied.record, value=b"{}", content_type="application/json")
    from recoverable.errors import StateValidationError  # noqa: PLC0415

    try:
        async with make_keyed(kvs) as domains:
            assert dict(domains) == saved, f"{len(saved) - len(domains)} entries lost without an error"
    except StateValidationError:
        pass


@pytest.mark.filterwarnings("ignore::UserWarning")  # as in production, where pydantic's warning is only logged
async def test_a_value_of_the_wrong_type_is_refused_not_saved_into_an_unloadable_state(kvs: KeyValueStore) -> None:
    """Bad input raises a RecoverableError at once; a save that returned loads back.

    `state[key] = value` checks the type only for models and dataclasses: for `value_type=int`, a str is
    taken, pydantic writes it with a warning, the save returns, and every later load of the whole state
    raises StateValidationError (one bad value and no key of the state loads any more).
    """
    counts: Any = make_keyed(kvs, value_type=int, persistence_enabled="explicit_only")
    async with counts:
        counts["good"] = 1
        try:
            counts["bad"] = "many"
            await counts.persist_state()
        except SerializationError:
            pass  # refused, as a Domain given for an int is
        counts.pop("bad", None)
    again: Any = make_keyed(kvs, value_type=int)
    async with again:
        assert dict(again) == {"good": 1}


@pytest.mark.parametrize("key", ["\ud800", "a\udfffb"])
async def test_reads_with_a_key_that_cannot_be_stored_answer_as_a_dict_does(kvs: KeyValueStore, key: str) -> None:
    """`in`, `get(key, default)`, `pop(key, default)` and `del` behave like a dict's (docs: "(reads)").

    A key holding a lone surrogate can never be in the state, so `in` is False and `get` gives the default;
    they raise InvalidKeyError instead, so `if url in seen` crashes a crawler on one odd URL.
    """
    async with make_keyed(kvs) as domains, make_set(kvs) as seen:
        assert key not in domains
        assert domains.get(key, None) is None
        assert domains.pop(key, None) is None
        with pytest.raises(KeyError):
            domains[key]
        with pytest.raises(KeyError):
            del domains[key]
        assert key not in seen
        seen.discard(key)  # a no-op, as set.discard of an absent item


async def test_int_items_too_large_to_hash_are_refused_with_a_recoverable_error(kvs: KeyValueStore) -> None:
    """Bad input raises a RecoverableError subclass naming what is wrong; a lookup of it answers False.

    An int of more than 4,300 digits cannot become the str its hash is taken of: `add` raises Python's own
    ValueError ("Exceeds the limit (4300 digits) for integer string conversion"), and so does `in`.
    """
    from recoverable.errors import InvalidKeyError  # noqa: PLC0415

    huge = 10**5000
    ids: Any = make_set(kvs, item_type=int)
    async with ids:
        ids.add(2**100)  # big ints within the limit are fine
        with pytest.raises(InvalidKeyError):
            ids.add(huge)
        assert huge not in ids
        ids.discard(huge)
    again: Any = make_set(kvs, item_type=int)
    async with again:
        assert set(again) == {2**100}


@pytest.mark.parametrize("kind", ["keyed", "set"])
async def test_clear_and_pop_take_entries_where_they_are_not_through_a_new_iterator_each(
    kvs: KeyValueStore, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`clear()` and `pop()` / `popitem()` in a loop behave like a dict's / set's: linear, not quadratic.

    The generic MutableMapping / MutableSet methods pop one entry at a time, each from a new iterator that
    restarts at the front of a part (a dict or set whose front is full of deleted slots): 40,000 entries took
    seconds, a million hours, all on the event loop. Here no iteration of the state may be started at all.
    """
    n = 2_000
    state: Any = make_set(kvs) if kind == "set" else make_keyed(kvs, value_type=int)
    async with state:
        if kind == "set":
            state.update(f"https://example.com/{i}" for i in range(n))
        else:
            state.update({f"https://example.com/{i}": i for i in range(n)})
        await state.persist_state()

        def no_iteration(self: Any) -> Any:
            raise AssertionError("an iteration of the whole state was started")

        monkeypatch.setattr(type(state), "__iter__", no_iteration)
        for _ in range(n // 2):
            state.pop() if kind == "set" else state.popitem()
        state.clear()
        monkeypatch.undo()
        assert len(state) == 0
    again: Any = make_set(kvs) if kind == "set" else make_keyed(kvs, value_type=int)
    async with again:
        assert len(again) == 0


def colliding_urls(count: int, *, bits: int = 24) -> list[str]:  # noqa: C901 - one Gaussian elimination
    """`count` distinct ASCII URLs whose CRC-32 agree in their low `bits` bits (CRC-32 is affine over GF(2))."""
    import zlib  # noqa: PLC0415

    prefix, width = b"https://evil.example/", 48
    base = prefix + b"a" * width
    start = zlib.crc32(base)
    pivots: dict[int, tuple[int, int]] = {}
    kernel: list[int] = []
    for position in range(width):
        flipped = bytearray(base)
        flipped[len(prefix) + position] ^= 0x02  # 'a' <-> 'c'
        vector, combination = (zlib.crc32(bytes(flipped)) ^ start) & ((1 << bits) - 1), 1 << position
        for bit in reversed(range(bits)):
            if vector >> bit & 1:
                if bit not in pivots:
                    pivots[bit] = (vector, combination)
                    break
                vector ^= pivots[bit][0]
                combination ^= pivots[bit][1]
        if vector == 0:
            kernel.append(combination)
    urls = []
    for choice in range(1, count + 1):
        combination = 0
        for j, vector in enumerate(kernel):
            if choice >> j & 1:
                combination ^= vector
        url = bytearray(base)
        for position in range(width):
            if combination >> position & 1:
                url[len(prefix) + position] ^= 0x02
        urls.append(url.decode())
    return urls


async def test_urls_crafted_to_share_their_hash_bits_cost_what_they_are(kvs: KeyValueStore) -> None:
    """Keys are data: what a crawled site chooses as its URLs must not decide how they are spread.

    8,193 URLs sharing the low 24 bits of their CRC-32 (which anyone can steer) made a part split 24 times to
    no avail when CRC-32 placed keys: a directory of 2**24 slots (over 130 MB, one add stalling the event loop
    for about half a second), and again at every load. With a hash keyed by a salt of the state's own, they
    spread like any other URLs: one split, two parts.
    """
    import zlib  # noqa: PLC0415

    urls = colliding_urls(8193)
    assert len(set(urls)) == len(urls)
    assert len({zlib.crc32(url.encode()) & 0xFFFFFF for url in urls}) == 1
    async with make_set(kvs) as seen:
        seen.update(urls)
        assert len(seen) == len(urls)
        assert seen._parts.depth <= 2
        assert len(seen._parts.parts) <= 4


async def test_reset_keeps_the_records_a_refused_manifest_names_while_its_backup_exists(kvs: KeyValueStore) -> None:
    """docs/keyed-state.md, Limits: `on_invalid="reset"` "keeps every record of the state until that backup is
    deleted (so that nothing the backup names is lost)". A `reset()` after it deletes them all the same.
    """
    async with make_keyed(kvs) as domains:
        domains["a"] = Domain(pages=1)
    refused = await manifest_of(kvs)
    (record,) = refused.records()
    await kvs.client.set_record(key=record, value=b'{"a": {"pages": "many"}}', content_type="application/json")
    async with make_keyed(kvs, on_invalid="reset") as domains:
        assert len(domains) == 0
        await domains.reset()  # start over, knowingly: the backup is still there to be looked into
    backups = [info.key for info in await kvs.list_keys(prefix=f"{KEY}.invalid-")]
    assert len(backups) == 1
    assert refused.records() <= await side_records(kvs), "the records the backup names were deleted"


async def test_a_key_added_and_deleted_again_before_a_save_writes_nothing(storage_client: StorageClient) -> None:
    """ "A save with nothing changed writes nothing": a state equal to its last save is a state with nothing changed.

    A key added then deleted (a URL seen and dropped before the next save) leaves the state as it was saved,
    yet the save writes a changelog record deleting a key that was never saved, and a new manifest.
    """
    kvs, client = await open_instrumented_store(storage_client)
    async with make_keyed(kvs, persistence_enabled="explicit_only") as domains:
        domains["kept"] = Domain(pages=1)
        await domains.persist_state()
        client.set_calls = 0
        domains["tmp"] = Domain()
        del domains["tmp"]
        await domains.persist_state()
        assert client.set_calls == 0


async def test_verify_untracked_does_not_blame_an_edit_still_under_way(
    kvs: KeyValueStore, caplog: pytest.LogCaptureFixture
) -> None:
    """`verify_untracked=True` names "the keys changed without edit() or assignment".

    A save that runs while an `edit()` block awaits (a PERSIST_STATE event during a fetch) names the key being
    edited, though it is changed inside `edit()` and is saved when the block ends.
    """
    import logging  # noqa: PLC0415

    async with make_keyed(kvs, verify_untracked=True, persistence_enabled="explicit_only") as domains:
        domains["example.com"] = Domain()
        await domains.persist_state()
        with caplog.at_level(logging.WARNING, logger="recoverable.state"):
            async with domains.edit("example.com") as domain:
                domain.pages += 1
                await domains.persist_state()  # as a PERSIST_STATE event would, while the block awaits a fetch
                domain.errors += 1
            await domains.persist_state()
    assert "changed without edit()" not in caplog.text


async def test_a_manifest_of_a_newer_schema_version_is_refused_and_left_untouched(kvs: KeyValueStore) -> None:
    """Newer-schema records raise StateValidationError and are left untouched, whatever on_invalid says.

    The manifest's content type is never looked at: one marked `schema-version=2` (by a later release that
    changed its layout) loads as version 1, and the next save overwrites it.
    """
    from recoverable.errors import StateValidationError  # noqa: PLC0415

    async with make_keyed(kvs) as domains:
        domains["a"] = Domain(pages=1)
    record = await kvs.client.get_record(key=KEY)
    assert record is not None
    await kvs.client.set_record(key=KEY, value=record.value, content_type="application/json; schema-version=2")
    with pytest.raises(StateValidationError, match="schema version"):
        async with make_keyed(kvs, on_invalid="reset") as domains:
            domains["b"] = Domain()
    after = await kvs.client.get_record(key=KEY)
    assert after is not None
    assert (after.value, after.content_type) == (record.value, "application/json; schema-version=2")


async def test_a_reset_that_fails_after_waiting_for_a_save_never_undoes_that_save(
    storage_client: StorageClient,
) -> None:
    """A save that returned is never lost, whatever fails later.

    `reset()` remembers the manifest before waiting for a save under way, and puts it back when its delete
    fails. The next save then builds on the manifest of the save before: it reuses the number of the save
    that landed, overwrites its changelog record (the manifest in the store names it), and what that save
    held is gone.
    """
    kvs, client = await open_instrumented_store(storage_client)
    inner_delete = client.delete_record

    async def failing_manifest_delete(**kwargs: Any) -> bool:
        if kwargs["key"] == KEY:
            raise StorageBackendError("injected failure of a delete", store="instrumented", key=KEY)
        return await inner_delete(**kwargs)

    async with make_keyed(kvs, persistence_enabled="explicit_only") as domains:
        domains["first"] = Domain(pages=1)
        await domains.persist_state()
        domains["second"] = Domain(pages=2)
        client.set_delay = 0.05
        save = asyncio.create_task(domains.persist_state())
        await asyncio.sleep(0.01)  # the save holds the lock
        client.delete_record = failing_manifest_delete  # type: ignore[method-assign]
        with pytest.raises(StorageBackendError, match="injected"):
            await domains.reset()  # waits for the save, then fails: the state is left as it was
        await save  # returned: "second" is saved
        client.delete_record = inner_delete  # type: ignore[method-assign]
        client.set_delay = 0
        domains["third"] = Domain(pages=3)
    async with make_keyed(kvs) as again:
        assert dict(again) == {"first": Domain(pages=1), "second": Domain(pages=2), "third": Domain(pages=3)}


async def test_a_reset_cancelled_after_waiting_for_a_save_never_undoes_that_save(storage_client: StorageClient) -> None:
    """The same with no storage failure at all: a reset given up on (a timeout around it) after the save it
    waited for returned, while its own delete of the manifest is under way (a slow store)."""
    kvs, client = await open_instrumented_store(storage_client)
    inner_delete = client.delete_record

    async def slow_delete(**kwargs: Any) -> bool:
        await asyncio.sleep(0.3)
        return await inner_delete(**kwargs)

    async with make_keyed(kvs, persistence_enabled="explicit_only") as domains:
        domains["first"] = Domain(pages=1)
        await domains.persist_state()
        domains["second"] = Domain(pages=2)
        client.set_delay = 0.05
        save = asyncio.create_task(domains.persist_state())
        await asyncio.sleep(0.01)  # the save holds the lock
        client.delete_record = slow_delete  # type: ignore[method-assign]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(domains.reset(), timeout=0.2)
        assert save.done()
        await save  # returned: "second" is saved
        client.delete_record = inner_delete  # type: ignore[method-assign]
        client.set_delay = 0
        domains["third"] = Domain(pages=3)
    async with make_keyed(kvs) as again:
        assert dict(again) == {"first": Domain(pages=1), "second": Domain(pages=2), "third": Domain(pages=3)}


# --- attacks that held: these pass, and pin the behaviour -----------------------------------------------------


async def test_saves_on_every_await_while_entries_change_load_back_exactly(
    storage_client: StorageClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Holds. PERSIST_STATE fires while the program sets, edits (across awaits) and deletes entries, adds and
    removes items, and resets; small parts and early compactions; a restart loads exactly a dict and a set kept
    beside."""
    import random  # noqa: PLC0415

    from recoverable.events import Event, EventPersistStateData  # noqa: PLC0415
    from state.support import quiet_event_manager  # noqa: PLC0415

    shrink(monkeypatch, part_size=8, min_log=4, max_log=3)
    kvs, client = await open_instrumented_store(storage_client)
    client.set_delay = 0.001  # saves span several steps of the loop
    rng = random.Random(11)
    expected: dict[str, Domain] = {}
    expected_items: set[str] = set()
    events = quiet_event_manager()
    async with events, make_keyed(kvs, event_manager=events) as domains, make_set(kvs, event_manager=events) as seen:

        async def emit() -> None:
            while True:
                events.emit(event=Event.PERSIST_STATE, event_data=EventPersistStateData(is_migrating=False))
                await asyncio.sleep(rng.random() * 0.005)

        emitter = asyncio.create_task(emit())
        for step in range(1500):
            key, action = f"k{rng.randint(0, 80)}", rng.random()
            if action < 0.3:
                domains[key] = Domain(pages=step)
                expected[key] = Domain(pages=step)  # an object of its own: the mirror changes it below
            elif action < 0.55:
                async with domains.edit(key) as value:
                    value.errors += 1
                    await asyncio.sleep(0)
                    value.pages += 1
                mirror = expected.setdefault(key, Domain())
                mirror.errors += 1
                mirror.pages += 1
            elif action < 0.7 and key in expected:
                del domains[key], expected[key]
            elif action < 0.9:
                if rng.random() < 0.5:
                    seen.add(key)
                    expected_items.add(key)
                else:
                    seen.discard(key)
                    expected_items.discard(key)
            elif action < 0.905:
                await domains.reset()
                expected.clear()
            await asyncio.sleep(0)
        emitter.cancel()
        await events.wait_for_all_listeners_to_complete()
        assert dict(domains) == expected
    async with make_keyed(kvs) as domains, make_set(kvs) as seen:
        assert dict(domains) == expected
        assert set(seen) == expected_items


async def test_states_whose_keys_prefix_each_other_keep_apart(kvs: KeyValueStore) -> None:
    """Holds. "A", "A.~log" and "A.~part" name records that start alike; none collects or resets another's."""
    for _ in range(2):
        async with (
            make_keyed(kvs, persist_state_key="A") as a,
            make_keyed(kvs, persist_state_key="A.~log") as log,
            make_keyed(kvs, persist_state_key="A.~part") as part,
        ):
            a["x"] = log["y"] = part["z"] = Domain(pages=1)
        async with make_keyed(kvs, persist_state_key="A") as a:
            assert dict(a) == {"x": Domain(pages=1)}
            await a.reset()
    async with make_keyed(kvs, persist_state_key="A.~log") as log, make_keyed(kvs, persist_state_key="A.~part") as part:
        assert dict(log) == {"y": Domain(pages=1)}
        assert dict(part) == {"z": Domain(pages=1)}


@pytest.mark.parametrize("swap", ["folder", "link out", "link in"])
async def test_a_record_swapped_for_a_folder_or_a_link_is_refused_and_left_untouched(tmp_path: Any, swap: str) -> None:
    """Holds (file system). A changelog file replaced by a folder or a symbolic link is refused, never followed."""
    from recoverable.storages import FileSystemStorageClient, KeyValueStore  # noqa: PLC0415

    async with FileSystemStorageClient(storage_dir=tmp_path / "storage") as client:
        kvs = await KeyValueStore.open(name="attacks", storage_client=client)
        async with make_keyed(kvs) as domains:
            domains["a"] = Domain(pages=1)
        async with make_keyed(kvs) as domains:
            domains["b"] = Domain(pages=2)
        folder = tmp_path / "storage" / "key_value_stores" / "attacks"
        first, second = sorted(folder.glob(f"{KEY}.%7Elog.*"))
        outside = tmp_path / "outside.json"
        outside.write_text('[{"evil": {"pages": 666}}, []]')
        first.unlink()
        if swap == "folder":
            first.mkdir()
        else:
            first.symlink_to(outside if swap == "link out" else second)
        before = sorted(path.name for path in folder.iterdir())
        with pytest.raises(RecoverableError, match="not a regular file"):
            await make_keyed(kvs).initialize()
        assert sorted(path.name for path in folder.iterdir()) == before
