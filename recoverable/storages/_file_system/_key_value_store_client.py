"""One key-value store kept in a folder on local disk."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar, TypeVarTuple

import aiofiles.os
from typing_extensions import override

from recoverable.errors import StoreNotFoundError
from recoverable.storages._backend_errors import shown_key
from recoverable.storages._base import KeyValueStoreClient
from recoverable.storages._file_system._writers_lock import LockWait
from recoverable.storages._validation import validate_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from recoverable.storages._file_system._store_dir import StoreDir
    from recoverable.storages._models import KeyInfo, KeyValueStoreMetadata, StoredRecord

__all__ = ["FileSystemKeyValueStoreClient"]

_INLINE_READ_MAX = 64 * 1024
"""Records up to this size that the index knows are read without a worker thread."""

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


async def _off_loop(func: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
    """Run a blocking function in the default executor (aiofiles' wrapper of it), one hop per operation."""
    return await aiofiles.os.wrap(func)(*args)


async def _locked(func: Callable[[LockWait], _T], lock_timeout: float) -> _T:
    """Run a blocking function that takes the writers' lock in the default executor.

    When the awaiting task is cancelled (a timeout, the program stopping), the worker thread stops
    waiting for the lock too, instead of blocking on it for as long as another process holds it.
    """
    wait = LockWait(timeout=lock_timeout)
    try:
        return await _off_loop(func, wait)
    except asyncio.CancelledError:
        wait.cancel.set()
        raise


class FileSystemKeyValueStoreClient(KeyValueStoreClient):
    """A store in one folder: a file per record, each write one durable all-or-nothing replace.

    The folder layout is documented in `recoverable.storages._file_system._layout`.
    """

    def __init__(self, *, metadata: KeyValueStoreMetadata, store_dir: StoreDir, lock_timeout: float) -> None:
        self._metadata = metadata
        self._dir = store_dir
        self._lock_timeout = lock_timeout
        self._accessed_at = metadata.accessed_at

    @property
    def path(self) -> str:
        """The folder holding the store."""
        return str(self._dir.path)

    def _check_alive(self) -> None:
        # Only this process's own drop is checked here, for free; a folder removed by another process
        # shows up as FileNotFoundError in the operation, which `StoreDir.backend` reports the same way.
        if self._dir.dropped:
            raise StoreNotFoundError(
                f"key-value store {self._dir.label!r} no longer exists in {self._dir.path} (it was dropped)",
                store=self._dir.label,
            )

    @property
    @override
    def writes_end_with_the_writer(self) -> bool:
        return True

    @override
    async def get_metadata(self) -> KeyValueStoreMetadata:
        self._check_alive()
        with self._dir.backend.mapped("read the metadata of", store=self._dir.label):
            modified_ns = self._dir.path.stat().st_mtime_ns
        modified = max(datetime.fromtimestamp(modified_ns / 1e9, tz=UTC), self._metadata.created_at)
        return self._metadata.model_copy(
            update={"modified_at": modified, "accessed_at": max(self._accessed_at, modified)}
        )

    @override
    async def get_record(self, *, key: str) -> StoredRecord | None:
        validate_key(key, store=self._dir.label)
        self._check_alive()
        with self._dir.backend.mapped("read", store=self._dir.label, key=key):
            # A small record the index knows is read on the loop: cheaper than a thread hop, and a
            # read of a few KiB from the page cache blocks no longer than the hop itself would.
            cached = self._dir.read_cached(key, _INLINE_READ_MAX)
            record = await _off_loop(self._dir.read, key) if cached is False else cached
        self._accessed_at = datetime.now(UTC)
        return record

    @override
    async def record_exists(self, *, key: str) -> bool:
        validate_key(key, store=self._dir.label)
        self._check_alive()
        with self._dir.backend.mapped("check", store=self._dir.label, key=key):
            return await _off_loop(self._dir.exists, key)

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
        validate_key(key, store=self._dir.label)
        self._check_alive()
        with self._dir.backend.mapped("write", store=self._dir.label, key=key):
            return await _locked(
                lambda wait: self._dir.write(
                    key, value, content_type, if_version=if_version, if_absent=if_absent, wait=wait
                ),
                self._lock_timeout,
            )

    @override
    async def copy_record(self, *, key: str, to_key: str, if_version: str | None = None) -> str | None:
        """Copy the record under `key` to `to_key` as a hard link to its file, with a version of its own.

        No byte is copied in this library's layout; in Crawlee's, or where the file system has no hard links,
        the bytes are read and written again under the same lock (see `StoreDir.copy`).
        """
        validate_key(key, store=self._dir.label)
        validate_key(to_key, store=self._dir.label)
        self._check_alive()
        with self._dir.backend.mapped(f"copy record {shown_key(key)!r} to", store=self._dir.label, key=to_key):
            return await _locked(
                lambda wait: self._dir.copy(key, to_key, if_version=if_version, wait=wait), self._lock_timeout
            )

    @override
    async def delete_record(self, *, key: str, if_version: str | None = None) -> bool:
        validate_key(key, store=self._dir.label)
        self._check_alive()
        with self._dir.backend.mapped("delete", store=self._dir.label, key=key):
            return await _locked(
                lambda wait: self._dir.delete(key, if_version=if_version, wait=wait), self._lock_timeout
            )

    @override
    async def iterate_keys(
        self,
        *,
        exclusive_start_key: str | None = None,
        limit: int | None = None,
        prefix: str | None = None,
    ) -> AsyncIterator[KeyInfo]:
        self._check_alive()
        with self._dir.backend.mapped("list the keys of", store=self._dir.label):
            keys = await _off_loop(self._dir.keys)
        yielded = 0
        for info in keys:
            if limit is not None and yielded >= limit:
                return
            if exclusive_start_key is not None and info.key <= exclusive_start_key:
                continue
            if prefix and not info.key.startswith(prefix):
                if info.key > prefix:
                    return
                continue
            yield info
            yielded += 1

    @override
    async def drop(self) -> None:
        if self._dir.dropped:
            return
        with self._dir.backend.mapped("drop", store=self._dir.label):
            try:
                await _locked(self._dir.drop, self._lock_timeout)
            except FileNotFoundError:
                self._dir.dropped = True

    @override
    async def purge(self) -> None:
        self._check_alive()
        with self._dir.backend.mapped("purge", store=self._dir.label):
            await _locked(self._dir.purge, self._lock_timeout)
