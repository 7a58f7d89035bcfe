"""`PlatformEventManager` against a real websocket server on loopback speaking the platform's messages."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel
from websockets.asyncio.server import ServerConnection, serve

from recoverable import FileSystemStorageClient, KeyValueStore, PlatformEventManager, RecoverableState
from recoverable.errors import ConfigurationError
from recoverable.events import (
    Event,
    EventAbortingData,
    EventData,
    EventExitData,
    EventMigratingData,
    EventPersistStateData,
    EventSystemInfoData,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

HOUR = timedelta(hours=1)
SYSTEM_INFO = {
    "memAvgBytes": 100,
    "memCurrentBytes": 120,
    "memMaxBytes": 150,
    "cpuAvgUsage": 10.5,
    "cpuMaxUsage": 50.0,
    "cpuCurrentUsage": 12.0,
    "isCpuOverloaded": False,
    "createdAt": "2024-01-01T00:00:00.000Z",
}


class _Platform:
    """The platform's event websocket: hands each connection to the test."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[ServerConnection] = asyncio.Queue()

    async def handler(self, connection: ServerConnection) -> None:
        await self.connections.put(connection)
        await connection.wait_closed()

    async def next_connection(self) -> ServerConnection:
        return await asyncio.wait_for(self.connections.get(), timeout=10)


def _message(name: str, data: dict[str, Any] | None = None) -> str:
    return json.dumps({"name": name, "createdAt": "2024-01-01T00:00:00.000Z", "data": data})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def platform() -> AsyncIterator[tuple[_Platform, str]]:
    platform = _Platform()
    async with serve(platform.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield platform, f"ws://127.0.0.1:{port}"


class _Received:
    """Every event the manager emits, in order."""

    def __init__(self, manager: PlatformEventManager) -> None:
        self.events: list[tuple[Event, EventData]] = []
        self._changed = asyncio.Event()
        for event in Event:
            manager.on(event=event, listener=self._listener(event))

    def _listener(self, event: Event) -> Any:
        def listener(data: EventData) -> None:
            self.events.append((event, data))
            self._changed.set()

        return listener

    async def wait_for(self, count: int) -> list[tuple[Event, EventData]]:
        async def enough() -> None:
            while len(self.events) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(enough(), timeout=10)
        return list(self.events)


async def test_platform_events_are_emitted(platform: tuple[_Platform, str]) -> None:
    server, url = platform
    async with PlatformEventManager(url=url, persist_state_interval=HOUR) as manager:
        received = _Received(manager)
        connection = await server.next_connection()
        await connection.send(_message("persistState", {"isMigrating": False}))
        await connection.send(_message("systemInfo", SYSTEM_INFO))
        await connection.send(_message("aborting"))
        await connection.send(_message("exit", {}))

        events = await received.wait_for(4)
        assert manager.connected

    assert events[0] == (Event.PERSIST_STATE, EventPersistStateData(is_migrating=False))
    assert events[1][0] is Event.SYSTEM_INFO
    info = events[1][1]
    assert isinstance(info, EventSystemInfoData)
    assert (info.mem_current_bytes, info.cpu_max_usage, info.is_cpu_overloaded) == (120, 50.0, False)
    assert events[2] == (Event.ABORTING, EventAbortingData())
    assert events[3] == (Event.EXIT, EventExitData())


async def test_migrating_also_persists_with_is_migrating(platform: tuple[_Platform, str]) -> None:
    server, url = platform
    async with PlatformEventManager(url=url, persist_state_interval=HOUR) as manager:
        received = _Received(manager)
        connection = await server.next_connection()
        await connection.send(_message("migrating", {"timeRemainingSecs": 30}))

        events = await received.wait_for(2)

    assert events[:2] == [
        (Event.MIGRATING, EventMigratingData(time_remaining_secs=30)),
        (Event.PERSIST_STATE, EventPersistStateData(is_migrating=True)),
    ]


async def test_bad_messages_are_logged_and_skipped(
    platform: tuple[_Platform, str], caplog: pytest.LogCaptureFixture
) -> None:
    server, url = platform
    async with PlatformEventManager(url=url, persist_state_interval=HOUR) as manager:
        received = _Received(manager)
        connection = await server.next_connection()
        await connection.send("not json")
        await connection.send(json.dumps({"name": "teleporting", "data": {}}))
        await connection.send(_message("migrating", {"timeRemainingSecs": "soon"}))
        await connection.send(_message("persistState", {"isMigrating": True}))

        events = await received.wait_for(1)
        skipped = [r.getMessage() for r in caplog.records if "Skipped a message" in r.getMessage()]

    assert events[0] == (Event.PERSIST_STATE, EventPersistStateData(is_migrating=True))
    assert len(skipped) == 3
    assert "not valid JSON" in skipped[0]
    assert "teleporting" in skipped[1]


async def test_reconnects_when_the_connection_drops(
    platform: tuple[_Platform, str], caplog: pytest.LogCaptureFixture
) -> None:
    server, url = platform
    async with PlatformEventManager(url=url, persist_state_interval=HOUR) as manager:
        received = _Received(manager)
        first = await server.next_connection()
        await first.close()

        second = await server.next_connection()
        await second.send(_message("persistState", {"isMigrating": False}))
        await received.wait_for(1)
        assert manager.connected

        third_attempt = server.next_connection()
        await second.close(code=1011)  # an error close
        await (await third_attempt).send(_message("aborting"))
        events = await received.wait_for(2)

    assert [e for e, _ in events] == [Event.PERSIST_STATE, Event.ABORTING]
    assert any("was closed; reconnecting" in r.getMessage() for r in caplog.records)


async def test_server_down_at_start_then_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    port = _free_port()
    url = f"ws://127.0.0.1:{port}"
    async with PlatformEventManager(url=url, persist_state_interval=HOUR) as manager:
        received = _Received(manager)
        for _ in range(100):
            if sum("attempt" in r.getMessage() for r in caplog.records) >= 2:
                break
            await asyncio.sleep(0.05)
        assert not manager.connected
        failures = [r for r in caplog.records if "failed" in r.getMessage()]
        assert failures
        assert failures[0].levelno == logging.WARNING
        assert url in failures[0].getMessage()

        platform = _Platform()
        async with serve(platform.handler, "127.0.0.1", port):
            connection = await platform.next_connection()
            await connection.send(_message("migrating", {"timeRemainingSecs": None}))
            events = await received.wait_for(2)

    assert events[1] == (Event.PERSIST_STATE, EventPersistStateData(is_migrating=True))
    assert any("Connected to the platform event websocket" in r.getMessage() for r in caplog.records)


async def test_the_periodic_persist_state_goes_on(platform: tuple[_Platform, str]) -> None:
    server, url = platform
    async with PlatformEventManager(url=url, persist_state_interval=timedelta(seconds=0.05)) as manager:
        received = _Received(manager)
        await server.next_connection()
        events = await received.wait_for(3)

    assert all(e == (Event.PERSIST_STATE, EventPersistStateData(is_migrating=False)) for e in events[:3])


async def test_exit_closes_the_websocket_and_persists_once_more(platform: tuple[_Platform, str]) -> None:
    server, url = platform
    manager = PlatformEventManager(url=url, persist_state_interval=HOUR)
    async with manager:
        received = _Received(manager)
        connection = await server.next_connection()

    await asyncio.wait_for(connection.wait_closed(), timeout=10)
    assert not manager.connected
    assert received.events == [(Event.PERSIST_STATE, EventPersistStateData(is_migrating=False))]


class _Counter(BaseModel):
    done: int = 0


@pytest.mark.parametrize(("name", "data"), [("migrating", {"timeRemainingSecs": 30}), ("aborting", None), ("exit", {})])
async def test_a_state_hands_over_when_the_platform_says_the_run_stops(
    platform: tuple[_Platform, str], tmp_path: Path, name: str, data: dict[str, Any] | None
) -> None:
    """On `migrating`, `aborting` or `exit` a state saves and releases its lease: the next run starts at once."""
    server, url = platform
    kvs = await KeyValueStore.open(name="run", storage_client=FileSystemStorageClient(storage_dir=tmp_path))
    async with PlatformEventManager(url=url, persist_state_interval=HOUR) as manager:
        state = RecoverableState(
            default_state=_Counter(), persist_state_key="STATE", key_value_store=kvs, event_manager=manager
        )
        await state.initialize()
        connection = await server.next_connection()
        state.current_value.done = 12
        await connection.send(_message(name, data))

        for _ in range(500):
            if not await kvs.record_exists("STATE.lease"):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail(f"the lease was not released after {name!r}")
        assert await kvs.get_value("STATE") == {"done": 12}

        # The next run: its own store object, the lease policy that fails at once on a live owner.
        next_kvs = await KeyValueStore.open(name="run", storage_client=FileSystemStorageClient(storage_dir=tmp_path))
        successor = RecoverableState(
            default_state=_Counter(), persist_state_key="STATE", key_value_store=next_kvs, event_manager=manager
        )
        assert (await successor.initialize()).done == 12
        state.current_value.done = 13  # too late: not saved
        await connection.send(_message("persistState", {"isMigrating": False}))
        await state.teardown()
        await successor.teardown()
    assert await kvs.get_value("STATE") == {"done": 12}


def test_the_url_comes_from_actor_events_websocket_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTOR_EVENTS_WEBSOCKET_URL", "ws://127.0.0.1:1/events")
    assert PlatformEventManager().url == "ws://127.0.0.1:1/events"


def test_a_url_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACTOR_EVENTS_WEBSOCKET_URL", raising=False)
    with pytest.raises(ConfigurationError, match="ACTOR_EVENTS_WEBSOCKET_URL"):
        PlatformEventManager()
    with pytest.raises(ConfigurationError, match="ws://"):
        PlatformEventManager(url="http://127.0.0.1:1")
    with pytest.raises(ConfigurationError):
        PlatformEventManager(url="ws://127.0.0.1:1", reconnect_max_delay=timedelta(0))
