"""One owner per state, within one process: the lease is taken, renewed, waited for, taken over, lost."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import psutil
import pytest
from pydantic import BaseModel
from state.support import open_instrumented_store

from recoverable import (
    Event,
    EventManager,
    FileSystemStorageClient,
    KeyValueStore,
    MemoryStorageClient,
    RecoverableState,
    StateOwnershipError,
)
from recoverable._ownership import LEASE_SUFFIX, LeaseRecord
from recoverable.errors import StateTimeoutError, VersionConflictError
from recoverable.events import (
    EventAbortingData,
    EventData,
    EventExitData,
    EventMigratingData,
    EventPersistStateData,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from recoverable.storages import StorageClient

KEY = "CRAWL"
LEASE = KEY + LEASE_SUFFIX


class Progress(BaseModel):
    done: int = 0


@pytest.fixture(params=["memory", "file_system"])
async def kvs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyValueStore]:
    client: StorageClient = (
        MemoryStorageClient() if request.param == "memory" else FileSystemStorageClient(storage_dir=tmp_path)
    )
    async with client:
        yield await KeyValueStore.open(name="owned", storage_client=client)


def make_state(kvs: KeyValueStore, **kwargs: object) -> RecoverableState[Progress]:
    kwargs.setdefault("event_manager", EventManager(persist_state_interval=timedelta(hours=1)))
    return RecoverableState(
        default_state=Progress(),
        persist_state_key=KEY,
        key_value_store=kvs,
        **kwargs,  # type: ignore[arg-type]
    )


async def lease_of(kvs: KeyValueStore) -> LeaseRecord | None:
    raw = await kvs.get_value(LEASE)
    return None if raw is None else LeaseRecord.model_validate(raw)


def stop_renewing(state: RecoverableState[Progress]) -> None:
    """Make `state` behave like a process frozen in place: its lease is no longer renewed."""
    lease = state._lease
    assert lease is not None
    assert lease._renewer is not None
    lease._renewer.cancel()


SHORT_TTL = timedelta(milliseconds=300)


async def frozen_owner(
    kvs: KeyValueStore, *, done: int | None = 1, state: RecoverableState[Progress] | None = None
) -> RecoverableState[Progress]:
    """An owner (with a lease of `SHORT_TTL`) that saved `done` (None: nothing), then froze until its lease expired."""
    stale = state or make_state(kvs, lease_ttl=SHORT_TTL)
    await stale.initialize()
    if done is not None:
        stale.current_value.done = done
        await stale.persist_state()
    stop_renewing(stale)
    await asyncio.sleep(SHORT_TTL.total_seconds() + 0.1)
    return stale


def left_behind(pid: int, **changes: object) -> dict[str, object]:
    """The JSON of a lease of this host whose owner, process `pid`, is gone; valid for another hour."""
    now = datetime.now(UTC)
    record = LeaseRecord(
        owner="gone", pid=pid, host=socket.gethostname(), acquired_at=now, expires_at=now + timedelta(hours=1)
    )
    return record.model_copy(update=changes).model_dump(mode="json", by_alias=True)


async def test_a_second_owner_fails_at_once_naming_the_first(kvs: KeyValueStore) -> None:
    first = make_state(kvs)
    await first.initialize()
    second = make_state(kvs)
    with pytest.raises(StateOwnershipError) as caught:
        await second.initialize()
    message = str(caught.value)
    assert f"process {os.getpid()}" in message
    assert socket.gethostname() in message
    assert "on_owned='wait'" in message
    assert caught.value.owner is not None
    assert str(os.getpid()) in caught.value.owner
    assert not second.is_initialized
    await first.teardown()


async def test_the_lease_is_a_record_beside_the_state_and_goes_at_teardown(kvs: KeyValueStore) -> None:
    state = make_state(kvs)
    await state.initialize()
    lease = await lease_of(kvs)
    assert lease is not None
    assert lease.pid == os.getpid()
    assert lease.host == socket.gethostname()
    assert lease.token == 1
    assert lease.expires_at > datetime.now(UTC)
    await state.teardown()
    assert not await kvs.record_exists(LEASE)
    # Free again: the next owner starts with no wait.
    again = make_state(kvs)
    await again.initialize()
    await again.teardown()


async def test_no_lease_when_lease_ttl_is_none(kvs: KeyValueStore) -> None:
    state = make_state(kvs, lease_ttl=None)
    other = make_state(kvs, lease_ttl=None)
    await state.initialize()
    await other.initialize()  # nothing stops a second one: the caller chose so
    assert not await kvs.record_exists(LEASE)
    await state.teardown()
    await other.teardown()


async def test_renewals_keep_the_lease_past_its_time_to_live(kvs: KeyValueStore) -> None:
    state = make_state(kvs, lease_ttl=timedelta(milliseconds=300))
    await state.initialize()
    first_expiry = (await lease_of(kvs)).expires_at  # type: ignore[union-attr]
    await asyncio.sleep(0.9)
    lease = await lease_of(kvs)
    assert lease is not None
    assert lease.expires_at > first_expiry
    with pytest.raises(StateOwnershipError):
        await make_state(kvs).initialize()
    await state.teardown()


async def test_waiting_for_the_lease_gets_the_state_its_owner_saved_last(kvs: KeyValueStore) -> None:
    first = make_state(kvs)
    await first.initialize()
    first.current_value.done = 41
    waiter = make_state(kvs, on_owned="wait")
    waiting = asyncio.create_task(waiter.initialize())
    await asyncio.sleep(0.2)
    assert not waiting.done()
    first.current_value.done = 42
    await first.teardown()
    loaded = await asyncio.wait_for(waiting, timeout=10)
    assert loaded.done == 42
    await waiter.teardown()


async def test_waiting_gives_up_after_the_wait_timeout(kvs: KeyValueStore) -> None:
    first = make_state(kvs)
    await first.initialize()
    waiter = make_state(kvs, on_owned="wait", lease_wait_timeout=timedelta(milliseconds=200))
    with pytest.raises(StateOwnershipError, match="gave up waiting"):
        await waiter.initialize()
    await first.teardown()


async def test_an_expired_lease_is_taken_over_and_the_stale_owner_cannot_write(
    kvs: KeyValueStore, caplog: pytest.LogCaptureFixture
) -> None:
    ttl = timedelta(milliseconds=300)
    stale = make_state(kvs, lease_ttl=ttl)
    await stale.initialize()
    stale.current_value.done = 1
    await stale.persist_state()
    stop_renewing(stale)
    await asyncio.sleep(0.4)

    with caplog.at_level(logging.WARNING, logger="recoverable.state"):
        new = make_state(kvs, lease_ttl=ttl)
        assert (await new.initialize()).done == 1
    assert f"took over the lease of state {KEY!r} in store " in caplog.text
    lease = await lease_of(kvs)
    assert lease is not None
    assert lease.token == 2  # the fencing token grows with each change of owner
    new.current_value.done = 100
    await new.persist_state()

    stale.current_value.done = 2
    with pytest.raises(StateOwnershipError):
        await stale.persist_state()
    assert await kvs.get_value(KEY) == {"done": 100}
    await new.teardown()


async def test_a_write_under_a_held_lease_by_someone_else_is_detected_not_overwritten(kvs: KeyValueStore) -> None:
    state = make_state(kvs)
    await state.initialize()
    state.current_value.done = 1
    await state.persist_state()
    # Someone ignoring the lease writes the record (a second program started with lease_ttl=None, say).
    await kvs.set_value(KEY, {"done": 500})
    state.current_value.done = 2
    with pytest.raises(StateOwnershipError, match="written by someone else"):
        await state.persist_state()
    assert await kvs.get_value(KEY) == {"done": 500}
    # Ownership is given up: later saves are refused too, and teardown leaves the record alone and says the
    # last changes are lost.
    with pytest.raises(StateOwnershipError):
        await state.persist_state()
    with pytest.raises(StateOwnershipError, match="last save of state 'CRAWL' was refused") as caught:
        await state.teardown()
    assert "without taking its lease" in str(caught.value)
    assert not state.is_initialized
    assert await kvs.get_value(KEY) == {"done": 500}


async def test_a_lost_lease_is_logged_by_periodic_saves_never_raised(
    kvs: KeyValueStore, caplog: pytest.LogCaptureFixture
) -> None:
    manager = EventManager(persist_state_interval=timedelta(hours=1))
    async with manager:
        state = RecoverableState(
            default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=manager
        )
        await state.initialize()
        await kvs.delete_value(LEASE)  # the lease vanished under the owner
        await kvs.set_value(LEASE, {"gone": True})
        lease = state._lease
        assert lease is not None
        await lease.renew()
        state.current_value.done = 3
        with caplog.at_level(logging.ERROR):
            from recoverable import Event, EventPersistStateData  # noqa: PLC0415

            manager.emit(event=Event.PERSIST_STATE, event_data=EventPersistStateData())
            await manager.wait_for_all_listeners_to_complete()
        assert f"lost the lease of state {KEY!r} in store " in caplog.text
        assert await kvs.get_value(KEY) is None
        with pytest.raises(StateOwnershipError, match="last save of state 'CRAWL' was refused"):
            await state.teardown()
        assert not state.is_initialized


async def test_a_lease_left_by_a_dead_process_on_this_host_is_taken_at_once(kvs: KeyValueStore) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import os; print(os.getpid())", stdout=subprocess.PIPE
    )
    out, _ = await child.communicate()
    dead_pid = int(out)
    now = datetime.now(UTC)
    left_behind = LeaseRecord(
        owner="crashed",
        pid=dead_pid,
        host=socket.gethostname(),
        token=7,
        acquired_at=now,
        expires_at=now + timedelta(hours=1),
    )
    await kvs.set_value(LEASE, left_behind.model_dump(mode="json", by_alias=True))
    state = make_state(kvs)
    await asyncio.wait_for(state.initialize(), timeout=5)
    lease = await lease_of(kvs)
    assert lease is not None
    assert lease.pid == os.getpid()
    assert lease.token == 8
    await state.teardown()


async def test_a_live_owner_on_another_host_is_not_taken_over_before_expiry(kvs: KeyValueStore) -> None:
    now = datetime.now(UTC)
    elsewhere = LeaseRecord(
        owner="remote", pid=1, host="another-host", acquired_at=now, expires_at=now + timedelta(hours=1)
    )
    await kvs.set_value(LEASE, elsewhere.model_dump(mode="json", by_alias=True))
    with pytest.raises(StateOwnershipError, match="another-host"):
        await make_state(kvs).initialize()


@pytest.mark.parametrize("then", ["renew", "teardown"])
async def test_a_renewal_that_timed_out_after_it_landed_keeps_the_lease(kvs: KeyValueStore, then: str) -> None:
    # The renewal reaches the store, but its answer comes after the timeout. The version of the lease
    # changed under the owner: the next renewal (or the release) must see the record is still its own.
    instrumented, client = await open_instrumented_store(kvs.storage_client, name="owned-slowly")
    state = make_state(instrumented, timeout=timedelta(milliseconds=200))
    await state.initialize()
    lease = state._lease
    assert lease is not None
    client.lease_answer_delay = 30.0
    with pytest.raises(StateTimeoutError, match="renewing"):
        await lease.renew()
    client.lease_answer_delay = 0.0

    if then == "renew":
        await lease.renew()
        state.current_value.done = 5
        await state.persist_state()  # would raise StateOwnershipError had the lease been taken for lost
        assert await instrumented.get_value(KEY) == {"done": 5}
    await state.teardown()

    assert await lease_of(instrumented) is None  # released, so the next owner need not wait for it to expire
    async with make_state(instrumented) as successor:
        assert successor.current_value.done == (5 if then == "renew" else 0)


async def test_a_take_of_the_lease_that_landed_unanswered_holds_it(kvs: KeyValueStore) -> None:
    # The first attempt to take the lease lands but its answer is lost; the retry meets a conflict with it.
    instrumented, client = await open_instrumented_store(kvs.storage_client, name="taken-unanswered")
    client.lease_writes_answered_as_conflicts = 1
    state = make_state(instrumented)
    await state.initialize()  # not "held by process <this one>"
    assert client.lease_writes_answered_as_conflicts == 0

    state.current_value.done = 2
    await state.persist_state()
    lease = state._lease
    assert lease is not None
    await lease.renew()
    with pytest.raises(StateOwnershipError, match="held by process"):
        await make_state(instrumented).initialize()
    await state.teardown()
    assert await lease_of(instrumented) is None
    assert await instrumented.get_value(KEY) == {"done": 2}


# --- lease records tampered with --------------------------------------------------------------------------


def _lease_json(**changes: object) -> dict[str, object]:
    now = datetime.now(UTC)
    record: dict[str, object] = {
        "owner": "someone",
        "pid": 1,
        "host": "another-host",
        "token": 4,
        "acquiredAt": now.isoformat(),
        "expiresAt": (now + timedelta(hours=1)).isoformat(),
    }
    record.update(changes)
    return record


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"expiresAt": "2999-01-01T00:00:00"}, "expiresAt"),  # no time zone
        ({"acquiredAt": "2020-01-01T00:00:00"}, "acquiredAt"),
        ({"pid": 2**63}, "pid"),
        ({"pid": -5}, "pid"),
        ({"pid": 0}, "pid"),
        ({"pid": "12"}, None),  # a number in a string is read as the number: not damaged, but a live lease
        ({"token": 2**64}, "token"),
        ({"token": 0}, "token"),
        ({"owner": ""}, "owner"),
        ({"host": "h" * 10_000}, "host"),
        ({"expiresAt": "not a time"}, "expiresAt"),
        ({"expiresAt": None}, "expiresAt"),
    ],
)
async def test_a_tampered_lease_is_a_damaged_lease_never_a_raw_error(
    kvs: KeyValueStore, caplog: pytest.LogCaptureFixture, changes: dict[str, object], field: str | None
) -> None:
    await kvs.set_value(LEASE, _lease_json(**changes))
    state = make_state(kvs)
    if field is None:
        with pytest.raises(StateOwnershipError, match="another-host"):
            await state.initialize()
        return
    with caplog.at_level(logging.WARNING, logger="recoverable.state"):
        await state.initialize()
    assert f"lease record {LEASE!r} of store 'owned' is damaged ({field}" in caplog.text
    lease = await lease_of(kvs)
    assert lease is not None
    assert lease.pid == os.getpid()
    await state.teardown()


@pytest.mark.parametrize("raw", [b"", b"[]", b"null", b'{"owner": 1}', b"\xff\xfe", b"{" * 100_000])
async def test_a_lease_record_that_is_no_lease_at_all_is_damaged(kvs: KeyValueStore, raw: bytes) -> None:
    await kvs.client.set_record(key=LEASE, value=raw, content_type="application/json")
    state = make_state(kvs)
    await state.initialize()
    lease = await lease_of(kvs)
    assert lease is not None
    assert lease.pid == os.getpid()
    await state.teardown()


async def test_a_lease_left_by_a_zombie_on_this_host_is_taken_at_once(kvs: KeyValueStore) -> None:
    # Started without asyncio's child watcher, and not waited for: once it exits, it stays a zombie.
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: ASYNC220 - asyncio would reap it
    try:
        for _ in range(200):
            if psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the child did not exit")
        await kvs.set_value(LEASE, left_behind(zombie.pid))
        state = make_state(kvs)
        await asyncio.wait_for(state.initialize(), timeout=5)
        assert psutil.pid_exists(zombie.pid)  # still not reaped
        await state.teardown()
    finally:
        zombie.wait()


# --- what a takeover does to the state record -------------------------------------------------------------


async def test_a_takeover_rewrites_the_record_so_the_stale_owners_version_is_gone(kvs: KeyValueStore) -> None:
    stale = await frozen_owner(kvs)
    stale_version = stale._version
    new = make_state(kvs, lease_ttl=SHORT_TTL)
    assert (await new.initialize()).done == 1
    record = await kvs.client.get_record(key=KEY)
    assert record is not None
    assert record.value == b'{"done":1}'
    assert record.version != stale_version  # a write conditional on what the stale owner saw cannot land
    with pytest.raises(VersionConflictError):
        await kvs.client.set_record(
            key=KEY, value=b'{"done":2}', content_type="application/json", if_version=stale_version
        )
    await new.teardown()
    stale._lease = None  # its lease is gone: nothing to release


async def test_a_takeover_of_a_state_never_saved_claims_it_and_still_has_no_saved_state(kvs: KeyValueStore) -> None:
    stale = await frozen_owner(kvs, done=None)
    new = make_state(kvs, lease_ttl=SHORT_TTL)
    await new.initialize()
    assert await kvs.get_value(KEY) is None  # JSON null: "nothing saved"
    assert await kvs.record_exists(KEY)
    assert not await new.has_persisted_state()
    # The stale owner's first save, sent late, required the record to be absent: it is refused.
    stale.current_value.done = 5
    with pytest.raises(StateOwnershipError):
        await stale.persist_state()
    new.current_value.done = 1
    await new.persist_state()
    assert await new.has_persisted_state()
    await new.teardown()
    assert await kvs.get_value(KEY) == {"done": 1}
    stale._lease = None


async def test_a_stale_owner_does_not_adopt_the_new_owners_rewrite_of_its_own_bytes(kvs: KeyValueStore) -> None:
    """The new owner rewrites the very bytes the stale owner saved last; the stale owner must not take them for
    a save of its own whose answer was lost, and write on."""
    stale = await frozen_owner(kvs)
    stale._unanswered = [stale._last_persisted]  # as if that save had timed out after it landed
    stale._version = None
    new = make_state(kvs, lease_ttl=SHORT_TTL)
    await new.initialize()
    stale._lease._record = stale._lease._record.model_copy(  # type: ignore[union-attr]
        update={"expires_at": datetime.now(UTC) + timedelta(hours=1)}
    )  # it believes its lease is fine: frozen, it never saw the time pass
    stale.current_value.done = 2
    with pytest.raises(StateOwnershipError, match="lease is held by process"):
        await stale.persist_state()
    new.current_value.done = 10
    await new.persist_state()  # the rightful owner is never refused
    assert await kvs.get_value(KEY) == {"done": 10}
    await new.teardown()
    stale._lease = None


async def test_a_stale_owner_is_told_who_took_the_state_over_by_its_periodic_saves_and_teardown(
    kvs: KeyValueStore, caplog: pytest.LogCaptureFixture
) -> None:
    manager = EventManager(persist_state_interval=timedelta(hours=1))
    async with manager:
        stale = await frozen_owner(
            kvs,
            state=RecoverableState(
                default_state=Progress(),
                persist_state_key=KEY,
                key_value_store=kvs,
                event_manager=manager,
                lease_ttl=SHORT_TTL,
            ),
        )
        new = make_state(kvs, lease_ttl=SHORT_TTL)
        await new.initialize()

        stale.current_value.done = 2
        with caplog.at_level(logging.ERROR, logger="recoverable.state"):
            from recoverable import Event, EventPersistStateData  # noqa: PLC0415

            manager.emit(event=Event.PERSIST_STATE, event_data=EventPersistStateData())
            await manager.wait_for_all_listeners_to_complete()
        assert f"state {KEY!r} is no longer saved by this process" in caplog.text
        assert "fencing token 2" in caplog.text
        with pytest.raises(StateOwnershipError, match="last save of state 'CRAWL' was refused") as caught:
            await stale.teardown()
        assert caught.value.owner is not None
        assert "fencing token 2" in caught.value.owner
        assert await kvs.get_value(KEY) == {"done": 1}
        await new.teardown()


async def test_a_teardown_without_changes_after_losing_the_state_raises_nothing(kvs: KeyValueStore) -> None:
    stale = await frozen_owner(kvs)
    new = make_state(kvs, lease_ttl=SHORT_TTL)
    await new.initialize()
    await stale.teardown()  # nothing changed since its last save: nothing is lost
    assert not stale.is_initialized
    assert (await lease_of(kvs)) is not None  # the new owner's lease is left alone
    await new.teardown()


async def test_a_lease_whose_pid_now_belongs_to_a_later_process_is_taken_at_once(kvs: KeyValueStore) -> None:
    # The pid of a live process of this host, recorded with a start time it does not have: the owner that
    # had that pid is gone, and the pid was given to another program since.
    live = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
    try:
        await kvs.set_value(LEASE, left_behind(live.pid, process_started_at=datetime.now(UTC) - timedelta(days=3)))
        state = make_state(kvs)
        await asyncio.wait_for(state.initialize(), timeout=5)
        await state.teardown()

        # With the start time it does have, the same pid is a live owner.
        started = datetime.fromtimestamp(psutil.Process(live.pid).create_time(), UTC)
        await kvs.set_value(LEASE, left_behind(live.pid, process_started_at=started))
        with pytest.raises(StateOwnershipError, match=f"process {live.pid}"):
            await make_state(kvs).initialize()
    finally:
        live.kill()
        await live.wait()


async def test_the_lease_records_when_its_owner_process_started(kvs: KeyValueStore) -> None:
    state = make_state(kvs)
    await state.initialize()
    raw = await kvs.get_value(LEASE)
    assert isinstance(raw, dict)
    started = datetime.fromisoformat(raw["processStartedAt"])
    assert abs(started.timestamp() - psutil.Process().create_time()) < 0.01
    await state.teardown()


async def test_a_takeover_from_a_dead_owner_rewrites_only_where_a_dead_writer_could_still_land(
    kvs: KeyValueStore,
) -> None:
    await kvs.set_value(KEY, {"done": 4})
    before = await kvs.client.get_record(key=KEY)
    assert before is not None
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await child.wait()
    await kvs.set_value(LEASE, left_behind(child.pid))
    state = make_state(kvs)
    assert (await state.initialize()).done == 4
    after = await kvs.client.get_record(key=KEY)
    assert after is not None
    # Memory and the file system are written by the process itself: nothing of the dead one can land.
    assert kvs.client.writes_end_with_the_writer
    assert after.version == before.version
    await state.teardown()


async def test_an_owner_frozen_past_its_lease_that_nobody_took_over_renews_and_saves_on(kvs: KeyValueStore) -> None:
    state = await frozen_owner(kvs)  # its lease expired, and nobody took it over
    state.current_value.done = 2
    await state.persist_state()  # renews first, over the lease version it wrote last, then saves
    assert await kvs.get_value(KEY) == {"done": 2}
    lease = await lease_of(kvs)
    assert lease is not None
    assert lease.expires_at > datetime.now(UTC)
    assert lease.token == 1  # still the same owner
    # And a process that comes now finds the lease alive.
    with pytest.raises(StateOwnershipError):
        await make_state(kvs, lease_ttl=SHORT_TTL).initialize()
    await state.teardown()


@pytest.mark.parametrize("before", ["never-saved", "reset-already"])
async def test_a_late_reset_of_a_stale_owner_never_deletes_the_new_owners_save(kvs: KeyValueStore, before: str) -> None:
    stale = await frozen_owner(kvs, done=None)
    if before == "reset-already":
        stale._lease._record = stale._lease._record.model_copy(  # type: ignore[union-attr]
            update={"expires_at": datetime.now(UTC) + timedelta(hours=1)}
        )
        stale.current_value.done = 3
        await stale.persist_state()
        await stale.reset()
        stale._lease._record = stale._lease._record.model_copy(  # type: ignore[union-attr]
            update={"expires_at": datetime.now(UTC) - timedelta(seconds=1)}
        )
    new = make_state(kvs, lease_ttl=SHORT_TTL)
    await new.initialize()
    new.current_value.done = 7
    await new.persist_state()
    # The stale owner resumes in the middle of a reset, past its check of the lease: its delete goes out.
    stale._lease._record = stale._lease._record.model_copy(  # type: ignore[union-attr]
        update={"expires_at": datetime.now(UTC) + timedelta(hours=1)}
    )
    await stale.reset()
    assert await kvs.get_value(KEY) == {"done": 7}
    new.current_value.done = 8
    await new.persist_state()  # the rightful owner is never refused
    assert await kvs.get_value(KEY) == {"done": 8}
    await new.teardown()
    stale._lease = None


async def test_a_lease_whose_token_reached_the_top_is_taken_over_with_a_new_one(kvs: KeyValueStore) -> None:
    expired = left_behind(1, host="another-host", token=2**53 - 1, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    await kvs.set_value(LEASE, expired)
    state = make_state(kvs)
    await state.initialize()
    lease = await lease_of(kvs)
    assert lease is not None
    assert lease.token == 1
    assert lease.pid == os.getpid()
    await state.teardown()


async def test_a_lease_of_another_pid_namespace_is_not_judged_by_pids_of_this_one(kvs: KeyValueStore) -> None:
    # Containers of one pod share a host name, not their pids: a pid unknown here may be alive there.
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await child.wait()
    ours = os.stat("/proc/self/ns/pid").st_ino
    await kvs.set_value(LEASE, left_behind(child.pid, pid_namespace=ours + 1))
    with pytest.raises(StateOwnershipError, match=f"process {child.pid}"):
        await make_state(kvs).initialize()
    # In this namespace, the same lease is a dead owner's, taken at once.
    await kvs.set_value(LEASE, left_behind(child.pid, pid_namespace=ours))
    state = make_state(kvs)
    await state.initialize()
    await state.teardown()


async def test_a_lease_naming_this_pid_from_before_this_process_started_is_taken_at_once(kvs: KeyValueStore) -> None:
    # A restart in a new container gets the pid its dead predecessor had (often 1).
    started = datetime.fromtimestamp(psutil.Process().create_time(), UTC)
    await kvs.set_value(LEASE, left_behind(os.getpid(), process_started_at=started - timedelta(minutes=5)))
    state = make_state(kvs)
    await asyncio.wait_for(state.initialize(), timeout=5)
    lease = await lease_of(kvs)
    assert lease is not None
    assert lease.owner != "gone"
    await state.teardown()


# --- a graceful stop hands the state over -------------------------------------------------------------------

STOPS: dict[str, list[tuple[Event, EventData]]] = {
    # What LocalEventManager emits on SIGTERM and on SIGINT, and the platform's `exit`.
    "sigterm": [
        (Event.MIGRATING, EventMigratingData()),
        (Event.PERSIST_STATE, EventPersistStateData(is_migrating=True)),
    ],
    "sigint": [(Event.ABORTING, EventAbortingData()), (Event.PERSIST_STATE, EventPersistStateData(is_migrating=False))],
    "exit": [(Event.EXIT, EventExitData())],
    "persist-migrating": [(Event.PERSIST_STATE, EventPersistStateData(is_migrating=True))],
}


async def stop(manager: EventManager, how: str) -> None:
    """Emit the events of a stop, as an event manager does, and wait for the listeners."""
    for event, data in STOPS[how]:
        manager.emit(event=event, event_data=data)
    await manager.wait_for_all_listeners_to_complete()


async def persist_event(manager: EventManager) -> None:
    manager.emit(event=Event.PERSIST_STATE, event_data=EventPersistStateData())
    await manager.wait_for_all_listeners_to_complete()


@pytest.mark.parametrize("how", list(STOPS))
async def test_a_stop_saves_then_releases_the_lease_and_writes_nothing_after(
    kvs: KeyValueStore, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    manager = EventManager(persist_state_interval=timedelta(hours=1))
    stopping_kvs, client = await open_instrumented_store(kvs.storage_client, name="owned")
    state = make_state(stopping_kvs, event_manager=manager, lease_ttl=SHORT_TTL)
    await state.initialize()
    state.current_value.done = 7
    await stop(manager, how)

    assert await kvs.get_value(KEY) == {"done": 7}  # the final save
    assert await lease_of(kvs) is None  # released, not left to expire
    await asyncio.sleep(SHORT_TTL.total_seconds() * 1.5)
    assert await lease_of(kvs) is None  # and no longer renewed
    writes = client.set_calls

    new = make_state(kvs)  # on_owned="fail": not refused
    assert (await new.initialize()).done == 7

    # The stopped process goes on: nothing it does writes, and only what asks for a write in so many words raises.
    state.current_value.done = 8
    with caplog.at_level(logging.WARNING, logger="recoverable.state"):
        await persist_event(manager)
        await stop(manager, how)  # the same signal again, or another one
        with pytest.raises(StateOwnershipError, match="let go of its lease when the process began stopping"):
            await state.persist_state()
        with pytest.raises(StateOwnershipError, match="let go of its lease"):
            await state.reset()
        assert state.current_value.done == 8  # the refused reset left it alone
        await state.teardown()  # raises nothing
    assert caplog.text.count("those changes are not saved") == 2  # once for the events, once at teardown
    assert not state.is_initialized
    assert client.set_calls == writes

    new.current_value.done = 9
    await new.persist_state()  # the stopped process wrote nothing under it: not refused
    await new.teardown()
    assert await kvs.get_value(KEY) == {"done": 9}


async def test_a_stop_without_changes_since_the_last_save_writes_nothing_and_teardown_is_quiet(
    kvs: KeyValueStore, caplog: pytest.LogCaptureFixture
) -> None:
    manager = EventManager(persist_state_interval=timedelta(hours=1))
    state = make_state(kvs, event_manager=manager)
    await state.initialize()
    state.current_value.done = 1
    await state.persist_state()
    await stop(manager, "sigterm")
    assert await lease_of(kvs) is None
    with caplog.at_level(logging.WARNING, logger="recoverable.state"):
        await state.persist_state()  # nothing changed: nothing to refuse
        await state.teardown()
    assert "not saved" not in caplog.text


async def test_a_stop_during_a_save_waits_for_it_then_saves_what_changed_since(kvs: KeyValueStore) -> None:
    manager = EventManager(persist_state_interval=timedelta(hours=1))
    slow_kvs, client = await open_instrumented_store(kvs.storage_client, name="owned")
    state = make_state(slow_kvs, event_manager=manager)
    await state.initialize()
    client.set_delay = 0.3
    state.current_value.done = 1
    manager.emit(event=Event.PERSIST_STATE, event_data=EventPersistStateData())
    await asyncio.sleep(0.1)  # that save is under way
    state.current_value.done = 2
    await stop(manager, "sigterm")
    assert await kvs.get_value(KEY) == {"done": 2}
    assert await lease_of(kvs) is None
    await state.teardown()


async def test_a_stop_whose_final_save_got_no_answer_leaves_the_lease_to_expire(kvs: KeyValueStore) -> None:
    manager = EventManager(persist_state_interval=timedelta(hours=1))
    slow_kvs, client = await open_instrumented_store(kvs.storage_client, name="owned")
    state = make_state(
        slow_kvs, event_manager=manager, timeout=timedelta(milliseconds=200), lease_ttl=timedelta(seconds=2)
    )
    await state.initialize()
    state.current_value.done = 5
    client.answer_delay = 30.0  # the final save lands, and its answer never comes in time
    await stop(manager, "sigterm")
    client.answer_delay = 0.0

    left = await lease_of(kvs)
    assert left is not None  # not deleted: the save may still land, only a takeover is safe from it
    assert left.pid == os.getpid()
    with pytest.raises(StateOwnershipError):
        await make_state(kvs).initialize()
    await asyncio.sleep((left.expires_at - datetime.now(UTC)).total_seconds() + 0.1)
    assert await lease_of(kvs) == left  # never renewed
    new = make_state(kvs)
    assert (await new.initialize()).done == 5
    assert new._lease is not None
    assert new._lease.took_over
    await state.teardown()  # raises nothing, writes nothing
    await new.teardown()


@pytest.mark.parametrize("cut", ["in-the-save", "waiting-for-a-save-under-way"])
async def test_a_second_signal_cutting_the_hand_over_short_leaves_the_lease_to_expire(
    kvs: KeyValueStore, cut: str
) -> None:
    manager = EventManager(persist_state_interval=timedelta(hours=1))
    slow_kvs, client = await open_instrumented_store(kvs.storage_client, name="owned")
    ttl = timedelta(milliseconds=600)
    state = make_state(slow_kvs, event_manager=manager, lease_ttl=ttl)
    await state.initialize()
    client.set_delay = 30.0
    state.current_value.done = 5
    if cut == "waiting-for-a-save-under-way":
        manager.emit(event=Event.PERSIST_STATE, event_data=EventPersistStateData())
        await asyncio.sleep(0.05)
    manager.emit(event=Event.MIGRATING, event_data=EventMigratingData())
    await asyncio.sleep(0.1)
    # What a second SIGTERM does to the listeners of the first: cancel them.
    await manager.wait_for_all_listeners_to_complete(timeout=timedelta(milliseconds=50))
    client.set_delay = 0.0
    await asyncio.sleep(0.05)  # the cancelled listeners finish (and let go of the lease) on their next turn

    left = await lease_of(kvs)
    assert left is not None  # kept: the cut save might still have been sent
    await asyncio.sleep(ttl.total_seconds() * 0.6)
    assert await lease_of(kvs) == left  # no longer renewed: it expires on its own
    attempts = client.set_calls
    state.current_value.done = 6
    await persist_event(manager)
    with pytest.raises(StateOwnershipError, match="let go of its lease"):
        await state.persist_state()
    await state.teardown()
    assert client.set_calls == attempts
    assert await kvs.get_value(KEY) is None


async def test_a_program_carrying_on_after_a_stop_takes_the_state_back_with_teardown_and_initialize(
    kvs: KeyValueStore,
) -> None:
    manager = EventManager(persist_state_interval=timedelta(hours=1))
    state = make_state(kvs, event_manager=manager)
    await state.initialize()
    state.current_value.done = 3
    await stop(manager, "sigterm")
    state.current_value.done = 4  # after the hand-over: not saved
    await state.teardown()

    assert (await state.initialize()).done == 3  # the lease taken again, the last save loaded
    lease = await lease_of(kvs)
    assert lease is not None
    assert lease.pid == os.getpid()
    state.current_value.done = 5
    await state.persist_state()
    assert await kvs.get_value(KEY) == {"done": 5}

    await stop(manager, "exit")  # owner again in full: the next stop hands it over again
    assert await lease_of(kvs) is None
    other = make_state(kvs)
    await other.initialize()
    await state.teardown()
    with pytest.raises(StateOwnershipError, match="is held by"):
        await state.initialize()  # taken by then: not taken back
    await other.teardown()


async def test_a_state_without_a_lease_saves_on_after_a_stop(kvs: KeyValueStore) -> None:
    manager = EventManager(persist_state_interval=timedelta(hours=1))
    state = make_state(kvs, event_manager=manager, lease_ttl=None)
    await state.initialize()
    state.current_value.done = 1
    await stop(manager, "sigterm")
    assert await kvs.get_value(KEY) == {"done": 1}
    state.current_value.done = 2
    await persist_event(manager)
    assert await kvs.get_value(KEY) == {"done": 2}
    state.current_value.done = 3
    await state.teardown()
    assert await kvs.get_value(KEY) == {"done": 3}


async def test_a_save_cancelled_after_it_landed_counts_as_unanswered(kvs: KeyValueStore) -> None:
    """A cancelled save (a second signal, a timeout around the caller) may have landed all the same: the next
    save, of other bytes, finds it there and builds on it instead of taking it for someone else's write."""
    slow_kvs, client = await open_instrumented_store(kvs.storage_client, name="owned")
    state = make_state(slow_kvs)
    await state.initialize()
    client.answer_delay = 30.0
    state.current_value.done = 1
    saving = asyncio.create_task(state.persist_state())
    await asyncio.sleep(0.2)  # landed, not answered
    saving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await saving
    client.answer_delay = 0.0
    assert await kvs.get_value(KEY) == {"done": 1}
    state.current_value.done = 2
    await state.persist_state()  # not refused
    await state.teardown()
    assert await kvs.get_value(KEY) == {"done": 2}
    assert await lease_of(kvs) is None
