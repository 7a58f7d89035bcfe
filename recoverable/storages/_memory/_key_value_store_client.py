"""One key-value store held in memory."""

from __future__ import annotations

import bisect
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from typing_extensions import override

from recoverable.errors import StoreNotFoundError, VersionConflictError
from recoverable.storages._base import KeyValueStoreClient
from recoverable.storages._models import KeyInfo, KeyValueStoreMetadata, StoredRecord
from recoverable.storages._validation import validate_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

__all__ = ["MemoryKeyValueStoreClient"]


class MemoryKeyValueStoreClient(KeyValueStoreClient):
    """A store living in a dict; gone when the process ends. Versions come from a counter of its storage client."""

    def __init__(
        self,
        *,
        metadata: KeyValueStoreMetadata,
        next_version: Callable[[], int],
        on_drop: Callable[[MemoryKeyValueStoreClient], None],
    ) -> None:
        self._metadata = metadata
        self._next_version = next_version
        self._on_drop = on_drop
        self._records: dict[str, StoredRecord] = {}
        self._sorted_keys: list[str] = []
        self._dropped = False

    @property
    def store_id(self) -> str:
        """The id of the store."""
        return self._metadata.id

    def _label(self) -> str:
        return self._metadata.name or self._metadata.id

    def _check_alive(self) -> None:
        if self._dropped:
            raise StoreNotFoundError(f"key-value store {self._label()!r} was dropped", store=self._label())

    def _touch(self, *, modified: bool = False) -> None:
        now = datetime.now(UTC)
        update: dict[str, datetime] = {"accessed_at": now}
        if modified:
            update["modified_at"] = now
        self._metadata = self._metadata.model_copy(update=update)

    def _check_condition(self, key: str, if_version: str | None, *, if_absent: bool) -> None:
        current = self._records.get(key)
        actual = current.version if current else None
        if if_absent and current is not None:
            raise VersionConflictError.for_record(store=self._label(), key=key, expected=None, actual=actual)
        if if_version is not None and actual != if_version:
            raise VersionConflictError.for_record(store=self._label(), key=key, expected=if_version, actual=actual)

    @property
    @override
    def writes_end_with_the_writer(self) -> bool:
        return True

    @override
    async def get_metadata(self) -> KeyValueStoreMetadata:
        self._check_alive()
        return self._metadata

    @override
    async def get_record(self, *, key: str) -> StoredRecord | None:
        validate_key(key, store=self._label())
        self._check_alive()
        self._touch()
        return self._records.get(key)

    @override
    async def record_exists(self, *, key: str) -> bool:
        validate_key(key, store=self._label())
        self._check_alive()
        return key in self._records

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
        validate_key(key, store=self._label())
        self._check_alive()
        self._check_condition(key, if_version, if_absent=if_absent)
        version = str(self._next_version())
        if key not in self._records:
            bisect.insort(self._sorted_keys, key)
        self._records[key] = StoredRecord(key=key, value=bytes(value), content_type=content_type, version=version)
        self._touch(modified=True)
        return version

    @override
    async def copy_record(self, *, key: str, to_key: str, if_version: str | None = None) -> str | None:
        """Copy the record under `key` to `to_key`: the copy shares the source's bytes object, with a new version."""
        validate_key(key, store=self._label())
        validate_key(to_key, store=self._label())
        self._check_alive()
        self._check_condition(key, if_version, if_absent=False)
        source = self._records.get(key)
        if source is None:
            return None
        version = str(self._next_version())
        if to_key not in self._records:
            bisect.insort(self._sorted_keys, to_key)
        # Bytes are immutable: the two records can share one object.
        self._records[to_key] = StoredRecord(
            key=to_key, value=source.value, content_type=source.content_type, version=version
        )
        self._touch(modified=True)
        return version

    @override
    async def delete_record(self, *, key: str, if_version: str | None = None) -> bool:
        validate_key(key, store=self._label())
        self._check_alive()
        self._check_condition(key, if_version, if_absent=False)
        if self._records.pop(key, None) is None:
            return False
        del self._sorted_keys[bisect.bisect_left(self._sorted_keys, key)]
        self._touch(modified=True)
        return True

    @override
    async def iterate_keys(
        self,
        *,
        exclusive_start_key: str | None = None,
        limit: int | None = None,
        prefix: str | None = None,
    ) -> AsyncIterator[KeyInfo]:
        self._check_alive()
        keys = self._sorted_keys
        start = 0
        if exclusive_start_key is not None:
            start = bisect.bisect_right(keys, exclusive_start_key)
        if prefix and (exclusive_start_key is None or exclusive_start_key < prefix):
            start = max(start, bisect.bisect_left(keys, prefix))
        # Snapshot so that writes during iteration neither skip nor repeat keys.
        snapshot = keys[start:]
        yielded = 0
        for key in snapshot:
            if limit is not None and yielded >= limit:
                return
            if prefix and not key.startswith(prefix):
                return
            record = self._records.get(key)
            if record is None:
                continue
            yield KeyInfo(key=key, size=record.size)
            yielded += 1

    @override
    async def drop(self) -> None:
        self._records.clear()
        self._sorted_keys.clear()
        self._dropped = True
        self._on_drop(self)

    @override
    async def purge(self) -> None:
        self._check_alive()
        self._records.clear()
        self._sorted_keys.clear()
        self._touch(modified=True)
