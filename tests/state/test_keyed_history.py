"""Keyed states and sets keep copies of their manifest, and every record those name, and roll back to them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest

from recoverable.errors import StateHistoryError, StateValidationError
from state.keyed_support import KEY, Domain, kept_records, make_keyed, make_set, manifest_of, shrink, side_records

if TYPE_CHECKING:
    from recoverable.storages import KeyValueStore


async def copies(kvs: KeyValueStore, key: str = KEY) -> list[str]:
    return [info.key for info in await kvs.list_keys(prefix=f"{key}.history.")]


async def test_rollback_restores_the_entries_of_an_older_save(
    kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    shrink(monkeypatch)
    async with make_keyed(kvs, persistence_enabled="explicit_only", history=5) as domains:
        snapshots: dict[int, dict[str, Domain]] = {}
        for save in range(1, 13):  # enough saves to split parts and compact several times
            for i in range(6):
                domains[f"d{(save * 5 + i) % 40}"] = Domain(pages=save, errors=i)
            if save % 3 == 0:
                del domains[min(domains)]
            await domains.persist_state()
            snapshots[save] = dict(domains)
            # Every record a kept copy names survives the compactions: each copy can still be loaded.
            assert await kept_records(kvs) <= await side_records(kvs)
        versions = await domains.history()
        assert [v.version for v in versions] == [12, 11, 10, 9, 8]
        domains["unsaved"] = Domain()

        await domains.rollback(9)
        assert dict(domains) == snapshots[9]
        assert (await domains.history())[0].trigger == "rollback"
        # The manifest written back names only records of this writer's, copied from the version's.
        writers = {record.split(".~", 1)[1].split(".")[1] for record in (await manifest_of(kvs)).records()}
        assert len(writers) == 1

        domains["after"] = Domain(pages=99)
        await domains.persist_state()
        assert await side_records(kvs) == await kept_records(kvs)

    async with make_keyed(kvs) as again:
        assert dict(again) == {**snapshots[9], "after": Domain(pages=99)}
        await again.rollback(12)
        assert dict(again) == snapshots[12]
    async with make_keyed(kvs) as again:
        assert dict(again) == snapshots[12]


async def test_a_reset_can_be_rolled_back(kvs: KeyValueStore) -> None:
    async with make_keyed(kvs, persistence_enabled="explicit_only") as domains:
        domains["a"] = Domain(pages=1)
        await domains.persist_state()
        await domains.reset()
        assert len(domains) == 0
        (kept,) = await domains.history()
        await domains.rollback(kept.version)
        assert dict(domains) == {"a": Domain(pages=1)}
    async with make_keyed(kvs) as again:
        assert dict(again) == {"a": Domain(pages=1)}


async def test_a_set_rolls_back_too(kvs: KeyValueStore) -> None:
    async with make_set(kvs, persistence_enabled="explicit_only") as seen:
        seen.update(["a", "b"])
        await seen.persist_state()
        seen.discard("a")
        seen.add("c")
        await seen.persist_state()
        assert [v.version for v in await seen.history()] == [2, 1]
        await seen.rollback(1)
        assert set(seen) == {"a", "b"}
    async with make_set(kvs) as again:
        assert set(again) == {"a", "b"}


async def test_history_0_keeps_no_copy_and_collects_as_before(kvs: KeyValueStore) -> None:
    async with make_keyed(kvs, persistence_enabled="explicit_only", history=0) as domains:
        for i in range(3):
            domains[f"d{i}"] = Domain(pages=i)
            await domains.persist_state()
        assert await copies(kvs) == []
        assert await side_records(kvs) == (await manifest_of(kvs)).records()
        with pytest.raises(StateHistoryError, match="no saved version 1"):
            await domains.rollback(1)


async def test_previous_quarantines_a_bad_manifest_and_loads_the_newest_good_copy(
    kvs: KeyValueStore, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_keyed(kvs, persistence_enabled="explicit_only") as domains:
        domains["a"] = Domain(pages=1)
        await domains.persist_state()
        domains["b"] = Domain(pages=2)
        await domains.persist_state()
    await kvs.client.set_record(key=KEY, value=b'{"kind": "keyed", "parts": 7}', content_type="application/json")

    with caplog.at_level(logging.WARNING, logger="recoverable.state"):
        async with make_keyed(kvs, on_invalid="previous") as domains:
            assert dict(domains) == {"a": Domain(pages=1), "b": Domain(pages=2)}
            domains["c"] = Domain(pages=3)
    assert "quarantine-" in caplog.text
    async with make_keyed(kvs) as again:
        assert dict(again) == {"a": Domain(pages=1), "b": Domain(pages=2), "c": Domain(pages=3)}


async def test_previous_passes_over_a_copy_whose_records_are_gone(kvs: KeyValueStore) -> None:
    async with make_keyed(kvs, persistence_enabled="explicit_only") as domains:
        domains["a"] = Domain(pages=1)
        await domains.persist_state()
        domains["b"] = Domain(pages=2)
        await domains.persist_state()
        newest = (await domains.history())[0]
    # The newest copy names the changelog of save 2, which only it names: deleted by hand.
    only_newest = (await manifest_of(kvs, newest.key)).records() - (
        await manifest_of(kvs, (await copies(kvs))[0])
    ).records()
    assert only_newest
    for record in only_newest:
        await kvs.client.delete_record(key=record)
    await kvs.client.set_record(key=KEY, value=b"garbage", content_type="application/json")
    async with make_keyed(kvs, on_invalid="previous") as domains:
        assert dict(domains) == {"a": Domain(pages=1)}


async def test_previous_with_no_good_copy_raises_and_changes_nothing(kvs: KeyValueStore) -> None:
    async with make_keyed(kvs, persistence_enabled="explicit_only") as domains:
        domains["a"] = Domain(pages=1)
        await domains.persist_state()
    await kvs.client.set_record(key=KEY, value=b"garbage", content_type="application/json")
    for record in await side_records(kvs):
        await kvs.client.delete_record(key=record)
    before = sorted(info.key for info in await kvs.list_keys())
    with pytest.raises(StateValidationError, match="none of the 1 older versions"):
        await make_keyed(kvs, on_invalid="previous").initialize()
    assert sorted(info.key for info in await kvs.list_keys()) == before
