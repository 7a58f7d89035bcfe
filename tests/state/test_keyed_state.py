"""`KeyedRecoverableState`: a mapping saved as what changed, loaded back whole, on memory and file system stores."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel

from recoverable import StateOwnershipError
from recoverable.errors import (
    ConfigurationError,
    InvalidKeyError,
    SerializationError,
    StateNotInitializedError,
    StorageBackendError,
)
from state.keyed_support import (
    KEY,
    Domain,
    kept_records,
    make_keyed,
    manifest_of,
    record_json,
    shrink,
    side_records,
)
from state.support import emit_persist_state, open_instrumented_store, quiet_event_manager, state_keys

if TYPE_CHECKING:
    from recoverable.storages import KeyValueStore, StorageClient


async def test_edit_creates_a_missing_value_and_every_change_survives_a_restart(kvs: KeyValueStore) -> None:
    async with make_keyed(kvs) as domains:
        async with domains.edit("example.com") as domain:
            domain.pages += 1
        async with domains.edit("example.com") as domain:
            domain.pages += 1
        domains["other.org"] = Domain(pages=3)
        domains["gone.net"] = Domain()
        del domains["gone.net"]

    async with make_keyed(kvs) as again:
        assert dict(again.items()) == {"example.com": Domain(pages=2), "other.org": Domain(pages=3)}


async def test_it_reads_as_a_mapping(kvs: KeyValueStore) -> None:
    async with make_keyed(kvs) as domains:
        domains.update({"a": Domain(pages=1), "b": Domain(pages=2)})
        assert len(domains) == 2
        assert "a" in domains
        assert "z" not in domains
        assert 5 not in domains  # type: ignore[comparison-overlap]
        assert domains["a"] == Domain(pages=1)
        assert domains.get("z") is None
        assert domains.get("z", Domain(errors=9)) == Domain(errors=9)
        assert sorted(domains) == ["a", "b"]
        assert sorted(domains.keys()) == ["a", "b"]
        assert sorted(v.pages for v in domains.values()) == [1, 2]
        assert domains.pop("a") == Domain(pages=1)
        assert domains.setdefault("c", Domain(pages=7)) == Domain(pages=7)
        with pytest.raises(KeyError):
            domains["z"]
        with pytest.raises(KeyError):
            del domains["z"]
        assert repr(domains) == f"<KeyedRecoverableState {KEY!r}: 2 keys>"
    async with make_keyed(kvs) as again:
        assert dict(again) == {"b": Domain(pages=2), "c": Domain(pages=7)}


async def test_default_factory_makes_the_value_edit_starts_from(kvs: KeyValueStore) -> None:
    async with make_keyed(kvs, default_factory=lambda: Domain(errors=5)) as domains:
        async with domains.edit("x") as domain:
            domain.pages = 1
        assert domains["x"] == Domain(pages=1, errors=5)


class Needs(BaseModel):
    required: int


async def test_a_value_type_that_needs_arguments_asks_for_default_factory_at_edit(kvs: KeyValueStore) -> None:
    async with make_keyed(kvs, value_type=Needs) as state:
        with pytest.raises(ConfigurationError, match="pass default_factory="):
            async with state.edit("x"):
                pass
        assert "x" not in state


@dataclass
class Counter:
    n: int = 0


@pytest.mark.parametrize(
    ("value_type", "value", "changed"),
    [
        (int, 5, 6),
        (dict[str, int], {"a": 1}, {"a": 1, "b": 2}),
        (Counter, Counter(1), Counter(2)),
        (list[str], ["x"], ["x", "y"]),
    ],
)
async def test_values_of_any_type_pydantic_serialises(
    kvs: KeyValueStore, value_type: Any, value: Any, changed: Any
) -> None:
    async with make_keyed(kvs, value_type=value_type) as state:
        state["k"] = value
        await state.persist_state()
        state["k"] = changed
    async with make_keyed(kvs, value_type=value_type) as again:
        assert again["k"] == changed


async def test_a_save_writes_only_what_changed_since_the_last_one(kvs: KeyValueStore) -> None:
    async with make_keyed(kvs, persistence_enabled="explicit_only") as domains:
        for i in range(100):
            domains[f"d{i}"] = Domain(pages=i)
        await domains.persist_state()
        async with domains.edit("d7") as domain:
            domain.errors = 1
        del domains["d8"]
        await domains.persist_state()
        manifest = await manifest_of(kvs)
        assert manifest.seq == 2
        assert manifest.count == 99
        assert [entry.count for entry in manifest.log] == [100, 2]
        # One member per part that changed (one part here), named after its region: what was set, and deleted.
        assert await record_json(kvs, manifest.log[-1].record) == {"0.0": [{"d7": {"pages": 7, "errors": 1}}, ["d8"]]}


async def test_a_save_with_nothing_changed_writes_nothing(kvs: KeyValueStore, storage_client: StorageClient) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    async with make_keyed(kvs, persistence_enabled="explicit_only") as domains:
        domains["a"] = Domain()
        await domains.persist_state()
        writes = client.set_calls
        await domains.persist_state()
        await domains.persist_state()
        assert client.set_calls == writes
    assert client.set_calls == writes  # the teardown had nothing to save either


async def test_a_change_made_in_place_outside_edit_is_not_seen(kvs: KeyValueStore) -> None:
    async with make_keyed(kvs) as domains:
        domains["a"] = Domain()
        await domains.persist_state()
        domains["a"].pages = 50  # not tracked: not saved
    async with make_keyed(kvs) as again:
        assert again["a"] == Domain()


async def test_verify_untracked_names_the_keys_changed_without_edit(
    kvs: KeyValueStore, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_keyed(kvs, verify_untracked=True, persistence_enabled="explicit_only") as domains:
        domains["a"] = Domain()
        domains["b"] = Domain()
        await domains.persist_state()
        domains["b"].pages = 50
        async with domains.edit("a") as a:
            a.pages = 1
        with caplog.at_level(logging.WARNING, logger="recoverable.state"):
            await domains.persist_state()
        assert "the value(s) of 'b' changed without edit() or assignment" in caplog.text
        assert "'a'" not in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="recoverable.state"):
            await domains.persist_state()
        assert "changed without edit()" not in caplog.text  # each untracked change is told once


async def test_verify_untracked_after_a_restart_compares_with_what_was_loaded(
    kvs: KeyValueStore, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_keyed(kvs) as domains:
        domains["a"] = Domain()
    async with make_keyed(kvs, verify_untracked=True, persistence_enabled="explicit_only") as again:
        again["a"].errors = 3
        with caplog.at_level(logging.WARNING, logger="recoverable.state"):
            await again.persist_state()
    assert "the value(s) of 'a' changed without edit()" in caplog.text


async def test_saves_on_persist_state_events(kvs: KeyValueStore) -> None:
    events = quiet_event_manager()
    async with events, make_keyed(kvs, event_manager=events) as domains:
        domains["a"] = Domain(pages=1)
        await emit_persist_state(events)
        assert (await manifest_of(kvs)).count == 1


async def test_reset_empties_the_state_and_deletes_everything_it_saved(
    kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    shrink(monkeypatch)
    async with make_keyed(kvs, persistence_enabled="explicit_only", history=0) as domains:
        for i in range(40):
            domains[f"d{i}"] = Domain(pages=i)
            await domains.persist_state()
        assert await side_records(kvs)
        await domains.reset()
        assert len(domains) == 0
        assert not await domains.has_persisted_state()
        assert await state_keys(kvs) == []
        domains["after"] = Domain()
    async with make_keyed(kvs) as again:
        assert dict(again) == {"after": Domain()}


async def test_parts_split_and_compaction_keep_the_records_few(
    kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    shrink(monkeypatch)
    expected: dict[str, Domain] = {}
    async with make_keyed(kvs, persistence_enabled="explicit_only") as domains:
        for save in range(60):
            for i in range(save % 7 + 1):
                key = f"k{(save * 13 + i * 7) % 150}"
                expected[key] = domains[key] = Domain(pages=save, errors=i)
            if save % 5 == 4:
                gone = sorted(expected)[save % len(expected)]
                del expected[gone], domains[gone]
            await domains.persist_state()
            manifest = await manifest_of(kvs)
            # The store holds what the manifest and the copies of its history name, and nothing else: replaced
            # records are deleted once no copy names them.
            assert await side_records(kvs) == await kept_records(kvs)
            assert manifest.records() <= await side_records(kvs)
            # Compaction starts at 6 records and rewrites the parts over about 8 saves: the log stays short.
            assert len(manifest.log) <= 6 + 8 + 2
        assert manifest.log[0].seq > 40  # the records of the early saves were compacted away
        assert len(manifest.parts) > 4  # the parts split
        assert any(part.upto > 0 for part in manifest.parts)  # and were rewritten
    async with make_keyed(kvs) as again:
        assert dict(again.items()) == expected


async def test_random_changes_load_back_exactly_after_every_save(
    kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model test: random sets, edits and deletes; after each save a restart loads exactly the dict kept beside."""
    shrink(monkeypatch, part_size=16, min_log=10, max_log=5)
    rng = random.Random(7)
    expected: dict[str, Domain] = {}
    domains = make_keyed(kvs, persistence_enabled="explicit_only")
    await domains.initialize()
    for _ in range(40):
        for _ in range(rng.randint(0, 30)):
            key = f"key-{rng.randint(0, 200)}"
            action = rng.random()
            if action < 0.5:
                expected[key] = Domain(pages=rng.randint(0, 9))
                domains[key] = expected[key].model_copy()  # its own object: the mirror is changed below
            elif action < 0.8:
                async with domains.edit(key) as value:
                    value.errors += 1
                expected.setdefault(key, Domain()).errors += 1
            elif key in expected:
                del domains[key], expected[key]
        await domains.teardown()
        domains = make_keyed(kvs, persistence_enabled="explicit_only")
        await domains.initialize()
        assert dict(domains.items()) == expected
        # Every key is found where a lookup looks for it, and only those keys.
        assert all(domains[key] == value and key in domains for key, value in expected.items())
        assert not any(f"key-{i}" in domains for i in range(201) if f"key-{i}" not in expected)
    await domains.teardown()


async def test_a_failed_save_keeps_its_changes_for_the_next_one(storage_client: StorageClient) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    async with make_keyed(kvs, persistence_enabled="explicit_only") as domains:
        domains["a"] = Domain(pages=1)
        await domains.persist_state()
        domains["b"] = Domain(pages=2)
        client.failing_writes = 1
        with pytest.raises(StorageBackendError, match="injected"):
            await domains.persist_state()
        domains["c"] = Domain(pages=3)
    async with make_keyed(kvs) as again:
        assert dict(again) == {"a": Domain(pages=1), "b": Domain(pages=2), "c": Domain(pages=3)}


async def test_a_value_that_cannot_be_written_is_named_and_nothing_is_written(kvs: KeyValueStore) -> None:
    async with make_keyed(kvs, value_type=Any, persistence_enabled="explicit_only") as state:
        state["good"] = 1
        state["bad"] = object()
        with pytest.raises(SerializationError, match="'bad'"):
            await state.persist_state()
        assert not await state.has_persisted_state()
        del state["bad"]
    async with make_keyed(kvs, value_type=Any) as again:
        assert dict(again) == {"good": 1}


async def test_bad_keys_and_values_are_refused_clearly(kvs: KeyValueStore) -> None:
    async with make_keyed(kvs) as domains:
        with pytest.raises(InvalidKeyError, match="keys of state 'DOMAINS' are str, not int"):
            domains[5] = Domain()  # type: ignore[index]
        with pytest.raises(SerializationError, match="must be a Domain, not dict"):
            domains["a"] = {"pages": 1}  # type: ignore[assignment]
        with pytest.raises(InvalidKeyError, match="lone surrogate"):
            domains["\ud800"] = Domain()
        with pytest.raises(KeyError):
            domains[5]  # type: ignore[index]
        assert domains.get(5) is None  # type: ignore[call-overload]
        assert len(domains) == 0


def test_bad_arguments_are_refused_at_construction(kvs: KeyValueStore) -> None:
    with pytest.raises(InvalidKeyError, match="too long for a keyed state"):
        make_keyed(kvs, persist_state_key="k" * 1000)
    with pytest.raises(ConfigurationError, match="default_factory must be a callable"):
        make_keyed(kvs, default_factory=5)
    with pytest.raises(ConfigurationError, match="verify_untracked must be True or False"):
        make_keyed(kvs, verify_untracked="yes")
    with pytest.raises(ConfigurationError, match="on_invalid must be"):
        make_keyed(kvs, on_invalid="ignore")
    with pytest.raises(ConfigurationError, match="schema_version must be"):
        make_keyed(kvs, schema_version=0)


async def test_entries_before_initialize_raise(kvs: KeyValueStore) -> None:
    domains = make_keyed(kvs)
    with pytest.raises(StateNotInitializedError):
        domains["a"] = Domain()
    with pytest.raises(StateNotInitializedError):
        len(domains)
    with pytest.raises(StateNotInitializedError):
        "a" in domains  # noqa: B015


async def test_without_persistence_nothing_is_written(kvs: KeyValueStore) -> None:
    async with make_keyed(kvs, persistence_enabled=False) as domains:
        domains["a"] = Domain()
        await domains.persist_state()
    assert await state_keys(kvs) == []


async def test_a_stale_owner_cannot_write_and_its_records_are_collected(
    kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from state.keyed_support import SHORT_TTL  # noqa: PLC0415

    shrink(monkeypatch)
    stale = make_keyed(kvs, lease_ttl=SHORT_TTL, persistence_enabled="explicit_only")
    await stale.initialize()
    stale["a"] = Domain(pages=1)
    await stale.persist_state()
    lease = stale._lease
    assert lease is not None
    assert lease._renewer is not None
    lease._renewer.cancel()  # frozen: its lease is no longer renewed
    await asyncio.sleep(SHORT_TTL.total_seconds() + 0.1)

    new = make_keyed(kvs, lease_ttl=SHORT_TTL, persistence_enabled="explicit_only")
    await new.initialize()
    new["b"] = Domain(pages=2)
    await new.persist_state()

    for i in range(20):  # the stale owner's late save, compaction included
        stale[f"s{i}"] = Domain()
    with pytest.raises(StateOwnershipError):
        await stale.persist_state()
    assert dict(new) == {"a": Domain(pages=1), "b": Domain(pages=2)}
    await new.teardown()
    async with make_keyed(kvs) as again:
        assert dict(again) == {"a": Domain(pages=1), "b": Domain(pages=2)}
        # The records the stale owner wrote before its manifest was refused are gone after this load.
        assert await side_records(kvs) == await kept_records(kvs)


async def test_a_stop_event_makes_the_final_save_and_hands_the_state_over(kvs: KeyValueStore) -> None:
    from recoverable.events import Event, EventMigratingData  # noqa: PLC0415

    events = quiet_event_manager()
    async with events:
        domains = make_keyed(kvs, event_manager=events)
        await domains.initialize()
        domains["a"] = Domain(pages=1)
        events.emit(event=Event.MIGRATING, event_data=EventMigratingData())
        await events.wait_for_all_listeners_to_complete()
        assert await kvs.get_value(f"{KEY}.lease") is None
        domains["b"] = Domain()  # after the hand-over: not saved
        with pytest.raises(StateOwnershipError, match="no longer saved by this process"):
            await domains.persist_state()
        await domains.teardown()
    async with make_keyed(kvs) as again:
        assert dict(again) == {"a": Domain(pages=1)}


async def test_adding_or_deleting_keys_while_iterating_raises(
    kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    shrink(monkeypatch)
    async with make_keyed(kvs) as domains:
        domains.update({f"k{i}": Domain() for i in range(40)})

        def copy_each() -> None:
            for key in domains:
                domains[key + "-copy"] = Domain()

        def delete_each() -> None:
            for key in domains:
                del domains[key]

        with pytest.raises(RuntimeError, match="changed size during iteration"):
            copy_each()
        with pytest.raises(RuntimeError, match="changed size during iteration"):
            delete_each()
        for key in domains:  # setting a value of an existing key is no change of size
            domains[key] = Domain(pages=1)


async def test_a_reset_during_a_save_leaves_the_state_empty(storage_client: StorageClient) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    async with make_keyed(kvs, persistence_enabled="explicit_only") as domains:
        domains["a"] = Domain()
        await domains.persist_state()
        domains["b"] = Domain()
        client.set_delay = 0.05
        save = asyncio.create_task(domains.persist_state())
        await asyncio.sleep(0.01)
        await domains.reset()
        await save
        client.set_delay = 0
        assert len(domains) == 0
        domains["c"] = Domain()
    async with make_keyed(kvs) as again:
        assert dict(again) == {"c": Domain()}


async def test_a_value_is_saved_as_it_was_when_its_edit_ended_or_it_was_assigned(kvs: KeyValueStore) -> None:
    async with make_keyed(kvs, persistence_enabled="explicit_only") as domains:
        kept = domains["a"] = Domain(pages=1)
        kept.pages = 99  # after the assignment, outside edit(): not seen
        async with domains.edit("b") as b:
            b.pages = 1
            await domains.persist_state()  # a save while the block runs writes what was there before it
            b.pages = 2
        b.pages = 3  # after the block: not seen
        await domains.persist_state()
    async with make_keyed(kvs) as again:
        assert dict(again) == {"a": Domain(pages=1), "b": Domain(pages=2)}
