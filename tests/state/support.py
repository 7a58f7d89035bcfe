"""Models, storage wrappers and helpers shared by the `RecoverableState` tests; it holds no tests itself.

The storage wrappers run over a real storage client (memory or file system) and only add what a test
needs to observe or provoke: a count of writes, writes that fail on purpose, reads and writes that stall.
"""

from __future__ import annotations

import asyncio
import errno
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import override

from recoverable._ownership import LEASE_SUFFIX
from recoverable.errors import StorageBackendError, VersionConflictError
from recoverable.events import Event, EventManager, EventPersistStateData
from recoverable.storages import (
    FileSystemStorageClient,
    KeyValueStore,
    KeyValueStoreClient,
    MemoryStorageClient,
    StorageClient,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from recoverable import RecoverableState
    from recoverable.storages import KeyInfo, KeyValueStoreMetadata, StoredRecord

STORAGE_KINDS = ["memory", "file_system"]
"""The storage clients the state tests run on, as `make_storage_client` names them."""

KEY = "STATE"
STORE_NAME = "state-tests"
HOUR = timedelta(hours=1)


class Progress(BaseModel):
    """A typical state: a counter under an alias, a growing list and a dict."""

    model_config = ConfigDict(populate_by_name=True)

    pages_done: int = Field(default=0, alias="pagesDone")
    seen: list[str] = []
    tags: dict[str, int] = {}


@dataclass
class DataclassProgress:
    """The same kind of state as a dataclass."""

    count: int = 0
    items: list[str] = field(default_factory=list)


def make_storage_client(kind: str, tmp_path: Path) -> StorageClient:
    """A storage client of the given kind; file system clients keep their data under `tmp_path/storage`."""
    if kind == "memory":
        return MemoryStorageClient()
    if kind == "file_system":
        return FileSystemStorageClient(storage_dir=tmp_path / "storage")
    raise AssertionError(f"unknown storage kind {kind!r}")


def reopened_storage_client(kind: str, client: StorageClient, tmp_path: Path) -> StorageClient:
    """Another client on the same storage, as after a restart (memory data lives in its one client)."""
    if kind == "memory":
        return client
    return make_storage_client(kind, tmp_path)


def quiet_event_manager() -> EventManager:
    """A real event manager whose timer never fires during a test: only the test emits events."""
    return EventManager(persist_state_interval=HOUR)


def own_manager_of(state: RecoverableState[Any]) -> EventManager | None:
    """The library's own event manager behind the default events a state given none listens to, if any."""
    default = state._default_events
    return None if default is None else default.manager


async def emit_persist_state(manager: EventManager, *, is_migrating: bool = False) -> None:
    """Emit PERSIST_STATE and wait for every listener to finish."""
    manager.emit(event=Event.PERSIST_STATE, event_data=EventPersistStateData(is_migrating=is_migrating))
    await manager.wait_for_all_listeners_to_complete()


async def until(predicate: Callable[[], Awaitable[bool]], *, within_secs: float = 10.0) -> None:
    """Poll an async predicate until it holds; fail the test after `within_secs` seconds."""
    deadline = time.monotonic() + within_secs
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not reached within {within_secs} s")
        await asyncio.sleep(0.02)


class InstrumentedKeyValueStoreClient(KeyValueStoreClient):
    """A real store client, plus counted writes, writes that fail on purpose and stalled reads or writes.

    Attributes:
        set_calls: How many times `set_record` was called for anything but a lease (failed calls included).
        failing_writes: How many of the next `set_record` calls (leases aside) fail with `StorageBackendError`.
        get_delay: Seconds each `get_record` sleeps before reading.
        set_delay: Seconds each `set_record` sleeps before writing.
        answer_delay: Seconds each `set_record` and `delete_record` sleeps after writing, before it returns:
            a write that lands while its caller has given up waiting.
        lease_answer_delay: The same for the writes of the state's lease.
        lease_writes_answered_as_conflicts: How many of the next lease writes land and are then answered
            with `VersionConflictError`, as a retry whose first attempt landed unanswered is.
    """

    def __init__(self, inner: KeyValueStoreClient) -> None:
        self.inner = inner
        self.set_calls = 0
        self.failing_writes = 0
        self.get_delay = 0.0
        self.set_delay = 0.0
        self.answer_delay = 0.0
        self.lease_answer_delay = 0.0
        self.lease_writes_answered_as_conflicts = 0

    @override
    async def get_metadata(self) -> KeyValueStoreMetadata:
        return await self.inner.get_metadata()

    @override
    async def get_record(self, *, key: str) -> StoredRecord | None:
        if self.get_delay:
            await asyncio.sleep(self.get_delay)
        return await self.inner.get_record(key=key)

    @override
    async def record_exists(self, *, key: str) -> bool:
        return await self.inner.record_exists(key=key)

    @override
    async def set_record(
        self,
        *,
        key: str,
        value: bytes,
        content_type: str,
        if_version: str | None = None,
        if_absent: bool = False,
    ) -> str:
        if key.endswith(LEASE_SUFFIX):
            # The state's ownership lease is bookkeeping of its own, not a save of the state.
            version = await self.inner.set_record(
                key=key, value=value, content_type=content_type, if_version=if_version, if_absent=if_absent
            )
            await asyncio.sleep(self.lease_answer_delay)
            if self.lease_writes_answered_as_conflicts > 0:
                self.lease_writes_answered_as_conflicts -= 1
                raise VersionConflictError.for_record(
                    store="instrumented", key=key, expected=if_version, actual=version
                )
            return version
        self.set_calls += 1
        if self.failing_writes > 0:
            self.failing_writes -= 1
            raise StorageBackendError(
                f"could not write record {key!r}: injected write failure", store="instrumented", key=key
            ) from OSError(errno.EIO, "Input/output error")
        if self.set_delay:
            await asyncio.sleep(self.set_delay)
        version = await self.inner.set_record(
            key=key, value=value, content_type=content_type, if_version=if_version, if_absent=if_absent
        )
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)
        return version

    @override
    async def copy_record(self, *, key: str, to_key: str, if_version: str | None = None) -> str | None:
        # The copy a save makes for the history is not a write of the state: it is neither counted nor failed.
        return await self.inner.copy_record(key=key, to_key=to_key, if_version=if_version)

    @override
    async def delete_record(self, *, key: str, if_version: str | None = None) -> bool:
        deleted = await self.inner.delete_record(key=key, if_version=if_version)
        if self.answer_delay and not key.endswith(LEASE_SUFFIX):
            await asyncio.sleep(self.answer_delay)
        return deleted

    @override
    async def iterate_keys(
        self,
        *,
        exclusive_start_key: str | None = None,
        limit: int | None = None,
        prefix: str | None = None,
    ) -> AsyncIterator[KeyInfo]:
        async for info in self.inner.iterate_keys(exclusive_start_key=exclusive_start_key, limit=limit, prefix=prefix):
            yield info

    @override
    async def drop(self) -> None:
        await self.inner.drop()

    @override
    async def purge(self) -> None:
        await self.inner.purge()


class InstrumentedStorageClient(StorageClient):
    """A real storage client whose stores are wrapped in `InstrumentedKeyValueStoreClient`."""

    def __init__(self, inner: StorageClient) -> None:
        self.inner = inner
        self._wrapped: dict[str, InstrumentedKeyValueStoreClient] = {}

    @override
    async def open_key_value_store_client(
        self,
        *,
        id: str | None = None,
        name: str | None = None,
        alias: str | None = None,
    ) -> InstrumentedKeyValueStoreClient:
        store = await self.inner.open_key_value_store_client(id=id, name=name, alias=alias)
        store_id = (await store.get_metadata()).id
        wrapped = self._wrapped.get(store_id)
        if wrapped is None:
            wrapped = self._wrapped[store_id] = InstrumentedKeyValueStoreClient(store)
        return wrapped

    @override
    async def list_key_value_stores(self) -> list[KeyValueStoreMetadata]:
        return await self.inner.list_key_value_stores()

    @override
    async def aclose(self) -> None:
        await self.inner.aclose()


async def open_instrumented_store(
    storage_client: StorageClient, name: str = STORE_NAME
) -> tuple[KeyValueStore, InstrumentedKeyValueStoreClient]:
    """Open a named store of `storage_client` through the instrumented wrapper; return it and its client."""
    kvs = await KeyValueStore.open(name=name, storage_client=InstrumentedStorageClient(storage_client))
    client = kvs.client
    assert isinstance(client, InstrumentedKeyValueStoreClient)
    return kvs, client


async def state_keys(kvs: KeyValueStore) -> list[str]:
    """The keys of `kvs`, leaving out the ownership leases of open states and the copies their histories keep."""
    return [
        info.key
        for info in await kvs.list_keys()
        if not info.key.endswith(LEASE_SUFFIX) and ".history." not in info.key
    ]
