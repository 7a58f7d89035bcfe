"""RecoverableState without an event manager: the shared default `LocalEventManager` really saves periodically."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from recoverable import RecoverableState
from recoverable.events import LocalEventManager
from recoverable.events._default import DefaultEvents
from recoverable.storages import FileSystemStorageClient, KeyValueStore, MemoryStorageClient
from state.support import KEY, STORE_NAME, Progress, own_manager_of, quiet_event_manager, until

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(autouse=True)
def _fast_persist_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS", "50")


def shared_manager_of_this_loop() -> object:
    shared = DefaultEvents._by_loop.get(asyncio.get_running_loop())
    return None if shared is None else shared.manager


async def test_periodic_saves_into_the_default_store_without_an_event_manager(tmp_path: Path) -> None:
    # Nothing but the state's own arguments: store and event manager come from the environment.
    state = RecoverableState(default_state=Progress(), persist_state_key=KEY)
    await state.initialize()
    manager = own_manager_of(state)
    assert isinstance(manager, LocalEventManager)
    assert manager.active
    assert manager.persist_state_interval.total_seconds() == 0.05

    state.current_value.pages_done = 21
    state.current_value.seen.append("periodic")
    # Read the disk through a client of its own, as another program would.
    reader = FileSystemStorageClient(storage_dir=tmp_path / "default-storage")

    async def saved_on_disk() -> bool:
        stored = await (await KeyValueStore.open(storage_client=reader)).get_value(KEY)
        return bool(stored == {"pagesDone": 21, "seen": ["periodic"], "tags": {}})

    await until(saved_on_disk)
    assert state.is_initialized  # saved by the timer, not by teardown

    await state.teardown()
    assert not manager.active
    assert shared_manager_of_this_loop() is None


async def test_two_states_share_one_manager_that_stops_after_the_last_teardown() -> None:
    kvs = await KeyValueStore.open(name=STORE_NAME, storage_client=MemoryStorageClient())
    first = RecoverableState(default_state=Progress(), persist_state_key="FIRST", key_value_store=kvs)
    second = RecoverableState(default_state=Progress(), persist_state_key="SECOND", key_value_store=kvs)
    await first.initialize()
    await second.initialize()
    manager = own_manager_of(first)
    assert manager is not None
    assert own_manager_of(second) is manager
    assert shared_manager_of_this_loop() is manager

    await first.teardown()
    assert manager.active  # the second state still needs it

    second.current_value.pages_done = 2

    async def second_saved() -> bool:
        return bool(await kvs.get_value("SECOND") == {"pagesDone": 2, "seen": [], "tags": {}})

    await until(second_saved)

    await second.teardown()
    assert not manager.active
    assert shared_manager_of_this_loop() is None


async def test_a_new_shared_manager_starts_after_the_last_one_stopped() -> None:
    kvs = await KeyValueStore.open(name=STORE_NAME, storage_client=MemoryStorageClient())
    state = RecoverableState(default_state=Progress(), persist_state_key=KEY, key_value_store=kvs)
    async with state:
        old = own_manager_of(state)
    assert old is not None
    assert not old.active

    async with state:
        new = own_manager_of(state)
        assert new is not None
        assert new is not old
        assert new.active
        state.current_value.pages_done = 3

        async def saved() -> bool:
            return bool(await kvs.get_value(KEY) == {"pagesDone": 3, "seen": [], "tags": {}})

        await until(saved)
    assert not new.active


async def test_a_given_event_manager_is_used_instead_of_the_shared_one() -> None:
    kvs = await KeyValueStore.open(name=STORE_NAME, storage_client=MemoryStorageClient())
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    async with state:
        assert state._default_events is None
        assert shared_manager_of_this_loop() is None


async def test_on_the_platform_the_default_manager_listens_to_its_websocket(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from websockets.asyncio.server import ServerConnection, serve  # noqa: PLC0415

    from recoverable import PlatformEventManager  # noqa: PLC0415

    monkeypatch.setenv("RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS", "3600000")  # only the platform's events
    connections: asyncio.Queue[ServerConnection] = asyncio.Queue()

    async def handler(connection: ServerConnection) -> None:
        await connections.put(connection)
        await connection.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        monkeypatch.setenv("ACTOR_EVENTS_WEBSOCKET_URL", f"ws://127.0.0.1:{port}")
        kvs = await KeyValueStore.open(name=STORE_NAME, storage_client=FileSystemStorageClient(storage_dir=tmp_path))
        state = RecoverableState(default_state=Progress(), persist_state_key=KEY, key_value_store=kvs)
        await state.initialize()
        assert isinstance(own_manager_of(state), PlatformEventManager)
        connection = await asyncio.wait_for(connections.get(), timeout=10)

        state.current_value.pages_done = 5
        await connection.send(
            '{"name": "persistState", "createdAt": "2024-01-01T00:00:00Z", "data": {"isMigrating": true}}'
        )

        async def saved_by_the_platform_event() -> bool:
            saved = await kvs.get_value(KEY)
            return saved is not None and saved["pagesDone"] == 5

        await until(saved_by_the_platform_event)
        await state.teardown()
