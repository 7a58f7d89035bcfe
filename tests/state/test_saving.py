"""RecoverableState: when it saves, what bytes it writes, what it skips, and how it fails."""

from __future__ import annotations

import json
import logging
import os
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from pydantic import BaseModel

from recoverable import RecoverableState
from recoverable.errors import (
    RecoverableError,
    SerializationError,
    StateOwnershipError,
    StateTimeoutError,
    StorageBackendError,
)
from recoverable.events import LocalEventManager
from recoverable.storages import FileSystemStorageClient, KeyValueStore, StorageClient
from state.support import (
    KEY,
    STORE_NAME,
    Progress,
    emit_persist_state,
    open_instrumented_store,
    own_manager_of,
    quiet_event_manager,
    reopened_storage_client,
    until,
)

if TYPE_CHECKING:
    from pathlib import Path

TINY = timedelta(milliseconds=500)  # far below the delays the tests inject, far above a loaded machine's fsync
SHORT = timedelta(milliseconds=200)


async def stored_bytes(kvs: KeyValueStore) -> bytes | None:
    record = await kvs.client.get_record(key=KEY)
    return None if record is None else record.value


def state_with_timeout(kvs: KeyValueStore, timeout: timedelta = SHORT) -> RecoverableState[Progress]:
    """A state of `kvs` whose loads and saves give up waiting for an answer after `timeout`."""
    return RecoverableState(
        default_state=Progress(),
        persist_state_key=KEY,
        key_value_store=kvs,
        event_manager=quiet_event_manager(),
        timeout=timeout,
    )


# --- when it saves ----------------------------------------------------------------------------------------


async def test_saved_on_each_persist_state_event(storage_client: StorageClient) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    manager = quiet_event_manager()
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=manager
    )
    await state.initialize()
    for pages in (1, 2, 3):
        state.current_value.pages_done = pages
        await emit_persist_state(manager)
        assert await kvs.get_value(KEY) == {"pagesDone": pages, "seen": [], "tags": {}}
    assert client.set_calls == 3
    await state.teardown()


async def test_saved_before_a_migration(storage_client: StorageClient, caplog: pytest.LogCaptureFixture) -> None:
    kvs = await KeyValueStore.open(name=STORE_NAME, storage_client=storage_client)
    manager = quiet_event_manager()
    async with RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=manager
    ) as state:
        state.current_value.pages_done = 5
        with caplog.at_level(logging.INFO, logger="recoverable.state"):
            await emit_persist_state(manager, is_migrating=True)
        assert await kvs.get_value(KEY) == {"pagesDone": 5, "seen": [], "tags": {}}
    assert any("migration" in r.getMessage() and KEY in r.getMessage() for r in caplog.records)


async def test_saved_at_teardown(storage_client: StorageClient) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    await state.initialize()
    state.current_value.seen.append("last")
    assert client.set_calls == 0
    await state.teardown()
    assert client.set_calls == 1
    assert await kvs.get_value(KEY) == {"pagesDone": 0, "seen": ["last"], "tags": {}}


async def test_saved_by_the_timer_of_a_running_local_event_manager(storage_client: StorageClient) -> None:
    kvs = await KeyValueStore.open(name=STORE_NAME, storage_client=storage_client)
    expected = {"pagesDone": 11, "seen": ["timer"], "tags": {}}

    async def saved() -> bool:
        return bool(await kvs.get_value(KEY) == expected)

    async with LocalEventManager(persist_state_interval=timedelta(milliseconds=20), handle_signals=False) as events:
        state = RecoverableState(
            default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=events
        )
        await state.initialize()
        state.current_value.pages_done = 11
        state.current_value.seen.append("timer")
        await until(saved)
        await state.teardown()


async def test_final_persist_state_of_the_event_manager_saves(storage_client: StorageClient) -> None:
    kvs = await KeyValueStore.open(name=STORE_NAME, storage_client=storage_client)
    async with LocalEventManager(persist_state_interval=timedelta(hours=1), handle_signals=False) as events:
        state = RecoverableState(
            default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=events
        )
        await state.initialize()
        state.current_value.pages_done = 12
    # Leaving the manager emitted its last PERSIST_STATE while the state was still listening.
    assert await kvs.get_value(KEY) == {"pagesDone": 12, "seen": [], "tags": {}}
    await state.teardown()


# --- what it writes ---------------------------------------------------------------------------------------


async def test_record_is_json_by_alias(storage_kind: str, storage_client: StorageClient, tmp_path: Path) -> None:
    kvs = await KeyValueStore.open(name=STORE_NAME, storage_client=storage_client)
    async with RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    ) as state:
        state.current_value.pages_done = 4
    record = await kvs.client.get_record(key=KEY)
    assert record is not None
    assert record.content_type == "application/json"
    document = json.loads(record.value)
    assert document["pagesDone"] == 4
    assert "pages_done" not in document

    restarted = reopened_storage_client(storage_kind, storage_client, tmp_path)
    again = RecoverableState(
        default_state=Progress(),
        persist_state_key=KEY,
        key_value_store=await KeyValueStore.open(name=STORE_NAME, storage_client=restarted),
        persistence_enabled="explicit_only",
    )
    assert (await again.initialize()).pages_done == 4


async def test_record_is_the_models_own_json_bytes(storage_client: StorageClient) -> None:
    kvs = await KeyValueStore.open(name=STORE_NAME, storage_client=storage_client)
    manager = quiet_event_manager()
    async with RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=manager
    ) as state:
        state.current_value.pages_done = 3
        state.current_value.seen.extend(["é", 'quote " and \\ backslash', "\U0001f600"])
        state.current_value.tags["k"] = 2**53 + 1
        await emit_persist_state(manager)
        expected = Progress.__pydantic_serializer__.to_json(state.current_value, by_alias=True)
        assert await stored_bytes(kvs) == expected


# --- what it skips ----------------------------------------------------------------------------------------


async def test_unchanged_state_writes_nothing(storage_kind: str, storage_client: StorageClient, tmp_path: Path) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    manager = quiet_event_manager()
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=manager
    )
    await state.initialize()
    await emit_persist_state(manager)
    assert client.set_calls == 1  # the first save writes the default: nothing was saved yet
    for _ in range(3):
        await emit_persist_state(manager)
    await state.persist_state()
    assert client.set_calls == 1

    state.current_value.pages_done = 1
    await emit_persist_state(manager)
    assert client.set_calls == 2
    await emit_persist_state(manager)
    await state.teardown()
    assert client.set_calls == 2

    # A state loaded from its record and left unchanged writes nothing either.
    restarted = reopened_storage_client(storage_kind, storage_client, tmp_path)
    kvs_again, client_again = await open_instrumented_store(restarted)
    async with RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs_again, event_manager=manager
    ) as again:
        assert again.current_value.pages_done == 1
        await emit_persist_state(manager)
        await again.persist_state()
    assert client_again.set_calls == 0


async def test_unchanged_state_leaves_the_file_untouched(tmp_path: Path) -> None:
    storage = FileSystemStorageClient(storage_dir=tmp_path / "storage")
    kvs = await KeyValueStore.open(name=STORE_NAME, storage_client=storage)
    manager = quiet_event_manager()
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=manager
    )
    await state.initialize()
    state.current_value.pages_done = 1
    await state.persist_state()
    record = await kvs.get_record(KEY)
    assert record is not None
    path = tmp_path / "storage" / "key_value_stores" / STORE_NAME / f"{KEY}.json"
    before = os.stat(path)

    for _ in range(3):
        await emit_persist_state(manager)
    await state.persist_state()
    await state.teardown()

    after_record = await kvs.get_record(KEY)
    assert after_record is not None
    assert after_record.version == record.version
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)


# --- how it fails -----------------------------------------------------------------------------------------


async def test_failing_periodic_save_is_logged_and_retried(
    storage_client: StorageClient, caplog: pytest.LogCaptureFixture
) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    manager = quiet_event_manager()
    logger = logging.getLogger("tests.recoverable_state.failing")
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=manager, logger=logger
    )
    await state.initialize()
    state.current_value.pages_done = 1
    client.failing_writes = 2

    with caplog.at_level(logging.DEBUG):
        await emit_persist_state(manager)  # does not raise into the emitter or the waiter
        await emit_persist_state(manager)
    failures = [r for r in caplog.records if r.name == logger.name and r.levelno == logging.ERROR]
    assert len(failures) == 2
    for failure in failures:
        assert KEY in failure.getMessage()
        assert failure.exc_info is not None
        assert isinstance(failure.exc_info[1], StorageBackendError)
        assert isinstance(failure.exc_info[1].__cause__, OSError)
    assert "injected write failure" in caplog.text
    # The state caught it: the event manager did not see a failing listener.
    assert not [r for r in caplog.records if r.name.startswith("recoverable.events")]
    assert not await kvs.record_exists(KEY)
    assert state.current_value.pages_done == 1

    await emit_persist_state(manager)
    assert await kvs.get_value(KEY) == {"pagesDone": 1, "seen": [], "tags": {}}
    assert client.set_calls == 3
    await state.teardown()


async def test_failing_explicit_save_raises_and_keeps_the_old_record(storage_client: StorageClient) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    await state.initialize()
    state.current_value.pages_done = 1
    await state.persist_state()
    state.current_value.pages_done = 2
    client.failing_writes = 1
    with pytest.raises(StorageBackendError, match="injected"):
        await state.persist_state()
    assert await kvs.get_value(KEY) == {"pagesDone": 1, "seen": [], "tags": {}}
    # Not taken for saved: the next save writes it.
    await state.persist_state()
    assert await kvs.get_value(KEY) == {"pagesDone": 2, "seen": [], "tags": {}}
    await state.teardown()


async def test_failing_teardown_save_raises(storage_client: StorageClient) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    state = RecoverableState(default_state=Progress(), persist_state_key=KEY, key_value_store=kvs)
    await state.initialize()
    shared = own_manager_of(state)
    assert shared is not None
    state.current_value.pages_done = 1
    client.failing_writes = 1
    with pytest.raises(StorageBackendError):
        await state.teardown()
    # Nothing is given up: still initialized, listening and owning the state, so a retry can save it.
    assert state.is_initialized
    assert state.current_value.pages_done == 1
    assert shared.active
    await state.teardown()
    assert not state.is_initialized
    assert await kvs.get_value(KEY) == {"pagesDone": 1, "seen": [], "tags": {}}
    assert not shared.active


async def test_load_timeout(storage_client: StorageClient) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    client.get_delay = 30.0
    state = state_with_timeout(kvs, TINY)
    with pytest.raises(StateTimeoutError, match="load") as caught:
        await state.initialize()
    assert isinstance(caught.value, TimeoutError)
    assert KEY in str(caught.value)
    assert STORE_NAME in str(caught.value)
    assert not state.is_initialized


async def test_a_save_that_timed_out_after_it_landed_keeps_the_state_saving(storage_client: StorageClient) -> None:
    # The write reaches the store, but its answer comes after the timeout: the next save must build on the
    # record this process wrote, not take it for another writer's and give up the state.
    kvs, client = await open_instrumented_store(storage_client)
    state = state_with_timeout(kvs)
    await state.initialize()
    state.current_value.pages_done = 1
    client.answer_delay = 30.0
    with pytest.raises(StateTimeoutError, match="save"):
        await state.persist_state()
    assert await kvs.get_value(KEY) == {"pagesDone": 1, "seen": [], "tags": {}}  # it landed all the same

    client.answer_delay = 0.0
    state.current_value.pages_done = 2
    await state.persist_state()
    assert await kvs.get_value(KEY) == {"pagesDone": 2, "seen": [], "tags": {}}

    state.current_value.pages_done = 3
    await state.teardown()
    assert await kvs.get_value(KEY) == {"pagesDone": 3, "seen": [], "tags": {}}


async def test_a_reset_that_timed_out_after_it_landed_keeps_the_state_saving(storage_client: StorageClient) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    state = state_with_timeout(kvs)
    await state.initialize()
    state.current_value.pages_done = 1
    await state.persist_state()
    client.answer_delay = 30.0
    with pytest.raises(StateTimeoutError, match="reset"):
        await state.reset()
    assert not await kvs.record_exists(KEY)  # the delete landed all the same
    client.answer_delay = 0.0

    await state.reset()  # again: nothing left to delete, and that is no conflict
    state.current_value.pages_done = 2
    await state.persist_state()
    assert await kvs.get_value(KEY) == {"pagesDone": 2, "seen": [], "tags": {}}
    await state.teardown()


async def test_a_save_that_timed_out_is_not_mistaken_for_one_that_landed(storage_client: StorageClient) -> None:
    # Someone else wrote the record meanwhile, with other contents: that is still refused.
    kvs, client = await open_instrumented_store(storage_client)
    state = state_with_timeout(kvs)
    await state.initialize()
    state.current_value.pages_done = 1
    client.answer_delay = 30.0
    with pytest.raises(StateTimeoutError, match="save"):
        await state.persist_state()
    client.answer_delay = 0.0
    await client.inner.set_record(key=KEY, value=b'{"pagesDone": 99}', content_type="application/json")

    state.current_value.pages_done = 2
    with pytest.raises(StateOwnershipError, match="written by someone else"):
        await state.persist_state()
    assert await kvs.get_value(KEY) == {"pagesDone": 99}
    with pytest.raises(StateOwnershipError, match="refused"):
        await state.teardown()
    assert await kvs.get_value(KEY) == {"pagesDone": 99}


async def test_save_timeout(storage_client: StorageClient) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    state = state_with_timeout(kvs, TINY)
    await state.initialize()
    state.current_value.pages_done = 1
    client.set_delay = 30.0
    with pytest.raises(StateTimeoutError, match="save") as caught:
        await state.persist_state()
    assert isinstance(caught.value, TimeoutError)
    assert KEY in str(caught.value)
    assert not await kvs.record_exists(KEY)

    client.set_delay = 0.0
    await state.teardown()
    assert await kvs.get_value(KEY) == {"pagesDone": 1, "seen": [], "tags": {}}


async def test_teardown_save_timeout(storage_client: StorageClient) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    state = state_with_timeout(kvs, TINY)
    await state.initialize()
    state.current_value.pages_done = 1
    client.set_delay = 30.0
    with pytest.raises(StateTimeoutError):
        await state.teardown()
    assert not await kvs.record_exists(KEY)


async def test_timeout_from_the_environment(storage_client: StorageClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOVERABLE_STATE_TIMEOUT_SECS", "0.05")
    kvs, client = await open_instrumented_store(storage_client)
    client.get_delay = 30.0
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    with pytest.raises(StateTimeoutError, match="RECOVERABLE_STATE_TIMEOUT_SECS"):
        await state.initialize()


class _WithBytes(BaseModel):
    pages: int = 0
    raw: bytes = b""


async def test_a_state_that_cannot_become_json_raises_a_serialization_error_naming_the_field(
    kvs: KeyValueStore,
) -> None:
    state = RecoverableState(
        default_state=_WithBytes(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    await state.initialize()
    await state.persist_state()
    before = await kvs.client.get_record(key=KEY)
    state.current_value.raw = b"\xff\xfe not utf-8"
    with pytest.raises(SerializationError, match=r"field\(s\) raw of _WithBytes") as caught:
        await state.persist_state()
    assert isinstance(caught.value, RecoverableError)
    with pytest.raises(SerializationError):
        await state.teardown()
    assert state.is_initialized  # it can be fixed, and torn down again
    after = await kvs.client.get_record(key=KEY)
    assert after is not None
    assert before is not None
    assert after.version == before.version  # nothing was written
    state.current_value.raw = b"fine"
    await state.teardown()
    assert await kvs.get_value(KEY) == {"pages": 0, "raw": "fine"}
