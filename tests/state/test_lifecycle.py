"""RecoverableState: default copies, loading, `async with`, persistence modes, initialize/teardown, reset."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from recoverable import RecoverableState
from recoverable.errors import StateNotInitializedError
from recoverable.events._default import DefaultEvents
from recoverable.storages import KeyValueStore, StorageClient
from state.support import (
    KEY,
    STORE_NAME,
    Progress,
    emit_persist_state,
    open_instrumented_store,
    own_manager_of,
    quiet_event_manager,
    reopened_storage_client,
)

if TYPE_CHECKING:
    from pathlib import Path

    from recoverable.events import EventPersistStateData


# --- the default state ------------------------------------------------------------------------------------


async def test_default_state_is_deep_copied(kvs: KeyValueStore) -> None:
    default = Progress(seen=["a"], tags={"x": 1})
    state = RecoverableState(
        default_state=default, persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    value = await state.initialize()
    value.pages_done = 5
    value.seen.append("b")
    value.tags["y"] = 2
    assert value is not default
    assert default == Progress(seen=["a"], tags={"x": 1})

    # Changing the caller's object after construction does not change the default either.
    default.seen.append("changed later")
    await state.reset()
    assert state.current_value == Progress(seen=["a"], tags={"x": 1})
    state.current_value.seen.append("after reset")
    await state.reset()
    assert state.current_value == Progress(seen=["a"], tags={"x": 1})
    await state.teardown()


async def test_two_states_from_one_default_are_independent(kvs: KeyValueStore) -> None:
    default = Progress(seen=["a"])
    manager = quiet_event_manager()
    first = RecoverableState(
        default_state=default, persist_state_key="FIRST", key_value_store=kvs, event_manager=manager
    )
    second = RecoverableState(
        default_state=default, persist_state_key="SECOND", key_value_store=kvs, event_manager=manager
    )
    async with first, second:
        first.current_value.seen.append("only in first")
        first.current_value.pages_done = 1
        assert second.current_value == Progress(seen=["a"])
        assert first.current_value.seen is not second.current_value.seen
    assert await kvs.get_value("FIRST") == {"pagesDone": 1, "seen": ["a", "only in first"], "tags": {}}
    assert await kvs.get_value("SECOND") == {"pagesDone": 0, "seen": ["a"], "tags": {}}


# --- loading ----------------------------------------------------------------------------------------------


async def test_loads_the_last_saved_copy(storage_kind: str, storage_client: StorageClient, tmp_path: Path) -> None:
    kvs = await KeyValueStore.open(name=STORE_NAME, storage_client=storage_client)
    async with RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    ) as state:
        state.current_value.pages_done = 3
        state.current_value.seen.append("https://example.com/1")
        state.current_value.tags["done"] = 1
        await state.persist_state()
        state.current_value.pages_done = 4  # saved by teardown, after the explicit save

    restarted = reopened_storage_client(storage_kind, storage_client, tmp_path)
    kvs_after_restart = await KeyValueStore.open(name=STORE_NAME, storage_client=restarted)
    again = RecoverableState(
        default_state=Progress(),
        persist_state_key=KEY,
        key_value_store=kvs_after_restart,
        event_manager=quiet_event_manager(),
    )
    loaded = await again.initialize()
    assert loaded is again.current_value
    assert loaded == Progress(pages_done=4, seen=["https://example.com/1"], tags={"done": 1})
    assert await again.has_persisted_state()
    await again.teardown()


async def test_async_with_initializes_and_tears_down(kvs: KeyValueStore) -> None:
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    assert not state.is_initialized
    async with state as entered:
        assert entered is state
        assert state.is_initialized
        state.current_value.pages_done = 9
    assert not state.is_initialized
    assert await kvs.get_value(KEY) == {"pagesDone": 9, "seen": [], "tags": {}}


async def test_async_with_saves_when_the_block_raises(kvs: KeyValueStore) -> None:
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )

    async def work_that_fails() -> None:
        async with state:
            state.current_value.pages_done = 2
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await work_that_fails()
    assert await kvs.get_value(KEY) == {"pagesDone": 2, "seen": [], "tags": {}}


# --- persistence modes ------------------------------------------------------------------------------------


async def test_persistence_enabled_true_saves_on_events_and_teardown(storage_client: StorageClient) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    manager = quiet_event_manager()
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=manager
    )
    await state.initialize()
    state.current_value.pages_done = 1
    await emit_persist_state(manager)
    assert await kvs.get_value(KEY) == {"pagesDone": 1, "seen": [], "tags": {}}
    state.current_value.pages_done = 2
    await state.teardown()
    assert await kvs.get_value(KEY) == {"pagesDone": 2, "seen": [], "tags": {}}
    assert client.set_calls == 2


async def test_persistence_disabled_writes_nothing(storage_client: StorageClient) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    await kvs.set_value(KEY, {"pagesDone": 7, "seen": [], "tags": {}})
    writes_before = client.set_calls
    manager = quiet_event_manager()
    state = RecoverableState(
        default_state=Progress(),
        persist_state_key=KEY,
        key_value_store=kvs,
        event_manager=manager,
        persistence_enabled=False,
    )
    # In memory only: the saved record is not loaded either.
    assert await state.initialize() == Progress()
    state.current_value.pages_done = 1
    await emit_persist_state(manager)
    await state.persist_state()
    assert not await state.has_persisted_state()
    await state.teardown()
    assert client.set_calls == writes_before
    assert await kvs.get_value(KEY) == {"pagesDone": 7, "seen": [], "tags": {}}


async def test_persistence_disabled_never_opens_a_store(storage_client: StorageClient) -> None:
    calls: list[str] = []

    async def factory() -> KeyValueStore:
        calls.append("opened")
        return await KeyValueStore.open(name=STORE_NAME, storage_client=storage_client)

    state = RecoverableState(
        default_state=Progress(),
        persist_state_key=KEY,
        persist_state_kvs_factory=factory,
        persistence_enabled=False,
    )
    async with state:
        state.current_value.pages_done = 1
        await state.persist_state()
        assert not await state.has_persisted_state()
    assert calls == []
    assert state.key_value_store is None
    assert await storage_client.list_key_value_stores() == []


async def test_persistence_explicit_only_saves_on_persist_state_and_teardown_only(
    storage_client: StorageClient,
) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    manager = quiet_event_manager()
    state = RecoverableState(
        default_state=Progress(),
        persist_state_key=KEY,
        key_value_store=kvs,
        event_manager=manager,
        persistence_enabled="explicit_only",
    )
    await state.initialize()
    state.current_value.pages_done = 1
    await emit_persist_state(manager)
    await emit_persist_state(manager, is_migrating=True)
    assert client.set_calls == 0
    assert not await state.has_persisted_state()

    await state.persist_state()
    assert await kvs.get_value(KEY) == {"pagesDone": 1, "seen": [], "tags": {}}
    assert client.set_calls == 1

    state.current_value.pages_done = 2
    await emit_persist_state(manager)
    assert await kvs.get_value(KEY) == {"pagesDone": 1, "seen": [], "tags": {}}

    await state.teardown()
    assert await kvs.get_value(KEY) == {"pagesDone": 2, "seen": [], "tags": {}}
    assert client.set_calls == 2


async def test_persistence_explicit_only_starts_no_event_manager(kvs: KeyValueStore) -> None:
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, persistence_enabled="explicit_only"
    )
    async with state:
        assert state._default_events is None
        assert asyncio.get_running_loop() not in DefaultEvents._by_loop


# --- initialize and teardown ------------------------------------------------------------------------------


class CountingState(RecoverableState[Progress]):
    """Counts the saves asked for, whether by an event or by the caller."""

    persist_calls = 0

    async def persist_state(self, event_data: EventPersistStateData | None = None) -> None:
        self.persist_calls += 1
        await super().persist_state(event_data)


async def test_initialize_twice_registers_once(storage_client: StorageClient) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    manager = quiet_event_manager()
    state = CountingState(default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=manager)
    first = await state.initialize()
    first.pages_done = 1
    second = await state.initialize()
    assert second is first  # not loaded again: the change made in between is kept
    assert second.pages_done == 1

    await emit_persist_state(manager)
    assert state.persist_calls == 1
    assert client.set_calls == 1
    first.pages_done = 2
    await emit_persist_state(manager)
    assert state.persist_calls == 2
    assert client.set_calls == 2
    await state.teardown()


async def test_concurrent_initialize_loads_once_and_registers_once(storage_client: StorageClient) -> None:
    kvs = await KeyValueStore.open(name=STORE_NAME, storage_client=storage_client)
    await kvs.set_value(KEY, {"pagesDone": 5, "seen": [], "tags": {}})
    # No event manager: the shared one must be acquired once, so that one teardown stops it.
    state = RecoverableState(default_state=Progress(), persist_state_key=KEY, key_value_store=kvs)
    first, second = await asyncio.gather(state.initialize(), state.initialize())
    assert first is second is state.current_value
    assert first.pages_done == 5
    shared = own_manager_of(state)
    assert shared is not None
    assert shared.active
    await state.teardown()
    assert not shared.active
    assert asyncio.get_running_loop() not in DefaultEvents._by_loop


async def test_initialize_again_after_teardown_loads_the_saved_state(kvs: KeyValueStore) -> None:
    manager = quiet_event_manager()
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=manager
    )
    async with state:
        state.current_value.pages_done = 3
    async with state:
        assert state.current_value.pages_done == 3
        state.current_value.pages_done = 4
        await emit_persist_state(manager)
        assert await kvs.get_value(KEY) == {"pagesDone": 4, "seen": [], "tags": {}}


async def test_teardown_stops_listening(storage_client: StorageClient) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    manager = quiet_event_manager()
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=manager
    )
    async with state:
        state.current_value.pages_done = 1
    writes = client.set_calls
    state.current_value.pages_done = 2
    await emit_persist_state(manager)
    assert client.set_calls == writes
    assert await kvs.get_value(KEY) == {"pagesDone": 1, "seen": [], "tags": {}}


async def test_teardown_before_initialize_does_nothing(storage_client: StorageClient) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    await state.teardown()
    assert client.set_calls == 0
    assert not state.is_initialized


async def test_persist_state_before_initialize_raises(kvs: KeyValueStore) -> None:
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    with pytest.raises(StateNotInitializedError, match="initialize"):
        await state.persist_state()
    # Crawlee raises RuntimeError here; code written for it keeps working.
    with pytest.raises(RuntimeError):
        await state.persist_state()
    assert not await kvs.record_exists(KEY)


async def test_persist_state_after_teardown_raises(kvs: KeyValueStore) -> None:
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    async with state:
        pass
    with pytest.raises(StateNotInitializedError):
        await state.persist_state()


async def test_current_value_before_initialize_raises(kvs: KeyValueStore) -> None:
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    with pytest.raises(StateNotInitializedError, match=KEY) as caught:
        _ = state.current_value
    assert isinstance(caught.value, RuntimeError)


async def test_properties(kvs: KeyValueStore) -> None:
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    assert state.persist_state_key == KEY
    assert state.key_value_store is kvs


# --- reset ------------------------------------------------------------------------------------------------


async def test_reset_deletes_the_record(storage_kind: str, storage_client: StorageClient, tmp_path: Path) -> None:
    kvs = await KeyValueStore.open(name=STORE_NAME, storage_client=storage_client)
    default = Progress(seen=["start"])
    manager = quiet_event_manager()
    state = RecoverableState(default_state=default, persist_state_key=KEY, key_value_store=kvs, event_manager=manager)
    await state.initialize()
    state.current_value.pages_done = 8
    state.current_value.seen.append("more")
    await state.persist_state()
    assert await state.has_persisted_state()

    await state.reset()
    assert not await state.has_persisted_state()
    assert not await kvs.record_exists(KEY)
    assert state.current_value == default
    assert state.current_value is not default

    # A program starting now starts from the default, not from the state saved before the reset
    # (it only looks: without a lease of its own, as `state` still owns the state).
    restarted = reopened_storage_client(storage_kind, storage_client, tmp_path)
    other = RecoverableState(
        default_state=default,
        persist_state_key=KEY,
        key_value_store=await KeyValueStore.open(name=STORE_NAME, storage_client=restarted),
        persistence_enabled="explicit_only",
        lease_ttl=None,
    )
    assert await other.initialize() == default

    # The next save writes the default again.
    await emit_persist_state(manager)
    assert await kvs.get_value(KEY) == {"pagesDone": 0, "seen": ["start"], "tags": {}}
    await state.teardown()


async def test_reset_before_initialize_raises(kvs: KeyValueStore) -> None:
    await kvs.set_value(KEY, {"pagesDone": 1, "seen": [], "tags": {}})
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    with pytest.raises(StateNotInitializedError):
        await state.reset()
    assert await kvs.record_exists(KEY)


async def test_has_persisted_state_before_initialize_without_store_raises() -> None:
    state = RecoverableState(default_state=Progress(), persist_state_key=KEY, persist_state_kvs_name="not-opened-yet")
    with pytest.raises(StateNotInitializedError):
        await state.has_persisted_state()
