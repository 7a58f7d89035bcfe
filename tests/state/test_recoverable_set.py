"""`RecoverableSet`: a set of str or int items saved as what was added and removed."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from recoverable import RecoverableSet
from recoverable.errors import ConfigurationError, InvalidKeyError, StateValidationError
from state.keyed_support import kept_records, make_keyed, make_set, manifest_of, record_json, shrink, side_records
from state.support import quiet_event_manager

if TYPE_CHECKING:
    from recoverable.storages import KeyValueStore


async def test_items_added_and_removed_survive_a_restart(kvs: KeyValueStore) -> None:
    async with make_set(kvs) as seen:
        seen.add("https://a")
        seen.update(["https://b", "https://c"], {"https://d"})
        seen.discard("https://c")
        seen.remove("https://d")
        seen.discard("never there")
        with pytest.raises(KeyError):
            seen.remove("never there")
    async with make_set(kvs) as again:
        assert set(again) == {"https://a", "https://b"}
        assert len(again) == 2
        assert "https://a" in again
        assert "https://c" not in again
        assert 5 not in again


async def test_it_works_as_a_set(kvs: KeyValueStore) -> None:
    async with make_set(kvs) as seen:
        seen |= {"a", "b"}
        assert seen & {"b", "c"} == {"b"}
        assert seen | {"c"} == {"a", "b", "c"}
        assert seen - {"a"} == {"b"}
        assert seen == {"a", "b"}
        assert seen <= {"a", "b", "c"}
        seen -= {"a"}
        assert repr(seen) == "<RecoverableSet 'SEEN': 1 items>"
    async with make_set(kvs) as again:
        assert set(again) == {"b"}


async def test_a_save_writes_only_the_items_added_and_removed(kvs: KeyValueStore) -> None:
    async with make_set(kvs, persistence_enabled="explicit_only") as seen:
        seen.update(f"u{i}" for i in range(50))
        await seen.persist_state()
        seen.add("new")
        seen.discard("u3")
        seen.add("u4")  # already there: no change
        await seen.persist_state()
        manifest = await manifest_of(kvs, "SEEN")
        assert [entry.count for entry in manifest.log] == [50, 2]
        assert await record_json(kvs, manifest.log[-1].record) == {"0.0": [["new"], ["u3"]]}


async def test_int_items(kvs: KeyValueStore) -> None:
    async with make_set(kvs, item_type=int) as ids:
        ids.update([1, 2, 3])
        ids.discard(2)
        with pytest.raises(InvalidKeyError, match="items of state 'SEEN' are int, not bool"):
            ids.add(True)  # noqa: FBT003
        with pytest.raises(InvalidKeyError, match="are int, not str"):
            ids.add("4")  # type: ignore[arg-type]
        assert "1" not in ids
    async with make_set(kvs, item_type=int) as again:
        assert set(again) == {1, 3}


async def test_a_str_set_refuses_other_items(kvs: KeyValueStore) -> None:
    async with make_set(kvs) as seen:
        with pytest.raises(InvalidKeyError, match="items of state 'SEEN' are str, not int"):
            seen.add(5)  # type: ignore[arg-type]
        with pytest.raises(InvalidKeyError, match="lone surrogate"):
            seen.add("\udcff")


def test_only_str_and_int_items(kvs: KeyValueStore) -> None:
    with pytest.raises(ConfigurationError, match="item_type must be str or int"):
        RecoverableSet(persist_state_key="S", item_type=float, key_value_store=kvs)  # type: ignore[type-var]


async def test_a_set_of_str_does_not_load_a_set_of_int(kvs: KeyValueStore) -> None:
    async with make_set(kvs, item_type=int) as ids:
        ids.add(1)
    with pytest.raises(StateValidationError, match="which does not fit a changelog of str items"):
        await make_set(kvs).initialize()


async def test_a_keyed_state_and_a_set_do_not_load_each_other(kvs: KeyValueStore) -> None:
    async with make_set(kvs, persist_state_key="X") as items:
        items.add("a")
    with pytest.raises(StateValidationError, match="was saved by a RecoverableSet, not a KeyedRecoverableState"):
        await make_keyed(kvs, persist_state_key="X").initialize()


async def test_random_adds_and_removes_load_back_exactly(kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch) -> None:
    shrink(monkeypatch, part_size=16, min_log=10, max_log=5)
    rng = random.Random(3)
    expected: set[str] = set()
    seen = make_set(kvs, persistence_enabled="explicit_only")
    await seen.initialize()
    for _ in range(40):
        for _ in range(rng.randint(0, 40)):
            item = f"https://example.com/{rng.randint(0, 300)}"
            if rng.random() < 0.7:
                seen.add(item)
                expected.add(item)
            else:
                seen.discard(item)
                expected.discard(item)
        await seen.teardown()
        seen = make_set(kvs, persistence_enabled="explicit_only")
        await seen.initialize()
        assert set(seen) == expected
        assert all(item in seen for item in expected)
        assert not any(
            f"https://example.com/{i}" in seen for i in range(301) if f"https://example.com/{i}" not in expected
        )
        assert await side_records(kvs, "SEEN") == await kept_records(kvs, "SEEN")
    assert len((await manifest_of(kvs, "SEEN")).parts) > 4
    await seen.teardown()


async def test_two_sets_in_one_store_keep_apart(kvs: KeyValueStore) -> None:
    events = quiet_event_manager()
    async with (
        make_set(kvs, persist_state_key="A", event_manager=events) as a,
        make_set(kvs, persist_state_key="AB", event_manager=events) as ab,
    ):
        a.add("x")
        ab.add("y")
    async with make_set(kvs, persist_state_key="A") as a:
        assert set(a) == {"x"}
