"""Keyed states work the same on every storage client: through the KeyValueStore contract alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from recoverable import KeyedRecoverableState, RecoverableSet, StateOwnershipError
from recoverable._keyed_manifest import Manifest
from recoverable._ownership import LEASE_SUFFIX
from recoverable.events import EventManager
from recoverable.storages import KeyValueStore, StorageClient

Reopen = Callable[[], Awaitable[StorageClient]]
STORE = "keyed-states"
# A state key with what a path or a URL would read as structure: it names records, it is never a path.
HOSTILE_KEY = "../crawl %2e%2e/ü?#"
TTL = timedelta(milliseconds=400)


class Domain(BaseModel):
    pages: int = 0
    errors: int = 0


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of 8 entries and a compaction after 4 changelog records, so that a few saves split and compact."""
    monkeypatch.setattr("recoverable._keyed_parts.PART_SIZE", 8)
    monkeypatch.setattr("recoverable._keyed_state.COMPACT_MIN_ENTRIES", 4)
    monkeypatch.setattr("recoverable._keyed_state.MAX_LOG_RECORDS", 4)


def events() -> EventManager:
    return EventManager(persist_state_interval=timedelta(hours=1))


def keyed(kvs: KeyValueStore, **kwargs: Any) -> KeyedRecoverableState[Domain]:
    kwargs.setdefault("persist_state_key", HOSTILE_KEY)
    return KeyedRecoverableState(value_type=Domain, key_value_store=kvs, event_manager=events(), **kwargs)


def items(kvs: KeyValueStore, **kwargs: Any) -> RecoverableSet[str]:
    return RecoverableSet(persist_state_key="SEEN", key_value_store=kvs, event_manager=events(), **kwargs)


async def records_of(kvs: KeyValueStore, key: str) -> tuple[Manifest, set[str], set[str]]:
    """The manifest of the state `key`, the keys of its other records in the store (its history's copies
    aside), and the records the manifest and those copies name."""
    record = await kvs.client.get_record(key=key)
    assert record is not None
    manifest = Manifest.model_validate_json(record.value)
    side = {info.key for info in await kvs.list_keys(prefix=f"{key}.~") if ".history." not in info.key}
    named = set(manifest.records())
    for info in await kvs.list_keys(prefix=f"{key}.history."):
        copy = await kvs.client.get_record(key=info.key)
        assert copy is not None
        named |= Manifest.model_validate_json(copy.value).records()
    return manifest, side, named


async def test_entries_saved_over_many_saves_load_back_after_a_restart(
    storage_client: StorageClient, reopen_storage_client: Reopen
) -> None:
    kvs = await KeyValueStore.open(name=STORE, storage_client=storage_client)
    expected: dict[str, Domain] = {}
    urls: set[str] = set()
    async with (
        keyed(kvs, persistence_enabled="explicit_only") as domains,
        items(kvs, persistence_enabled="explicit_only") as seen,
    ):
        for save in range(24):
            for i in range(5):
                key = f"dömain-{(save * 5 + i) % 70}/../{i}"
                expected[key] = domains[key] = Domain(pages=save, errors=i)
                seen.add(f"https://example.com/{save}/{i}")
                urls.add(f"https://example.com/{save}/{i}")
            if save % 3 == 0:
                gone = min(expected)
                del domains[gone], expected[gone]
                seen.discard(f"https://example.com/{save}/0")
                urls.discard(f"https://example.com/{save}/0")
            await domains.persist_state()
            await seen.persist_state()
        manifest, side, named = await records_of(kvs, HOSTILE_KEY)
        assert side == named  # what neither the manifest nor a copy of the history names was deleted
        assert manifest.records() <= side
        assert len(manifest.parts) > 2
        assert manifest.log[0].seq > 1  # compacted

    kvs = await KeyValueStore.open(name=STORE, storage_client=await reopen_storage_client())
    async with keyed(kvs) as domains, items(kvs) as seen:
        assert dict(domains.items()) == expected
        assert set(seen) == urls
        assert all(domains[key] == value for key, value in expected.items())  # found where lookups look
        assert all(url in seen for url in urls)


async def test_a_stale_owners_late_save_never_lands(
    storage_client: StorageClient, reopen_storage_client: Reopen
) -> None:
    kvs = await KeyValueStore.open(name=STORE, storage_client=storage_client)
    stale = keyed(kvs, lease_ttl=TTL, persistence_enabled="explicit_only")
    await stale.initialize()
    stale["a"] = Domain(pages=1)
    await stale.persist_state()
    assert stale._lease is not None
    assert stale._lease._renewer is not None
    stale._lease._renewer.cancel()  # frozen: the lease runs out
    await asyncio.sleep(TTL.total_seconds() + 0.2)

    other = await KeyValueStore.open(name=STORE, storage_client=await reopen_storage_client())
    new = keyed(other, lease_ttl=TTL, persistence_enabled="explicit_only")
    await new.initialize()
    new["b"] = Domain(pages=2)
    await new.persist_state()

    for i in range(30):  # enough to compact: the stale save writes parts and a changelog record first
        stale[f"late-{i}"] = Domain()
    with pytest.raises(StateOwnershipError):
        await stale.persist_state()
    await new.teardown()
    async with keyed(other) as again:
        assert dict(again) == {"a": Domain(pages=1), "b": Domain(pages=2)}
        _, side, named = await records_of(other, HOSTILE_KEY)
        assert side == named  # what the stale save wrote was collected at this load


async def test_reset_deletes_every_record(storage_client: StorageClient) -> None:
    kvs = await KeyValueStore.open(name=STORE, storage_client=storage_client)
    async with keyed(kvs, persistence_enabled="explicit_only", history=0) as domains:
        for i in range(40):
            domains[f"d{i}"] = Domain()
            await domains.persist_state()
        await domains.reset()
        assert [info.key for info in await kvs.list_keys()] == [HOSTILE_KEY + LEASE_SUFFIX]
    assert await kvs.list_keys() == []


async def test_with_a_history_a_reset_keeps_the_copies_and_can_be_rolled_back(storage_client: StorageClient) -> None:
    kvs = await KeyValueStore.open(name=STORE, storage_client=storage_client)
    async with keyed(kvs, persistence_enabled="explicit_only") as domains:
        for i in range(40):
            domains[f"d{i}"] = Domain(pages=i)
            await domains.persist_state()
        await domains.reset()
        assert len(domains) == 0
        assert not await domains.has_persisted_state()
        newest = (await domains.history())[0]
        assert newest.version == 40
        await domains.rollback(newest.version)
    async with keyed(kvs) as again:
        assert dict(again) == {f"d{i}": Domain(pages=i) for i in range(40)}
