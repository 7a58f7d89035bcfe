"""One key-value store kept in Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from typing_extensions import override

import recoverable.storages._redis._scripts as scripts
from recoverable.errors import StoreNotFoundError, VersionConflictError
from recoverable.storages._backend_errors import shown_key
from recoverable.storages._base import KeyValueStoreClient
from recoverable.storages._models import KeyInfo, KeyValueStoreMetadata, StoredRecord
from recoverable.storages._redis._layout import lex_range
from recoverable.storages._validation import validate_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from recoverable.storages._redis._dependency import redis_asyncio
    from recoverable.storages._redis._errors import ServerInfo
    from recoverable.storages._redis._layout import RegistryKeys, StoreKeys

__all__ = ["RedisKeyValueStoreClient", "from_micros", "now_micros"]

_PAGE_SIZE = 1000
_PURGE_BATCH = 1000


def now_micros() -> int:
    """The current time in microseconds since the epoch, as the store's timestamps are kept."""
    return time.time_ns() // 1000


def from_micros(raw: bytes | str | int) -> datetime:
    """A timestamp kept as microseconds since the epoch, as an aware UTC datetime."""
    micros = int(raw)
    return datetime.fromtimestamp(micros // 1_000_000, tz=UTC).replace(microsecond=micros % 1_000_000)


class RedisKeyValueStoreClient(KeyValueStoreClient):
    """A store in Redis: a hash per record, a sorted set of keys, one Lua script per operation.

    Every write is one script, so it is atomic on the server, conditions included. The key layout is
    documented in `recoverable.storages._redis._layout`.
    """

    def __init__(
        self,
        *,
        client: redis_asyncio.Redis | redis_asyncio.RedisCluster,
        server: ServerInfo,
        registry: RegistryKeys,
        keys: StoreKeys,
        store_id: str,
        name: str | None,
        alias: str | None,
        created_at: datetime,
    ) -> None:
        self._redis = client
        self._server = server
        self._registry = registry
        self._keys = keys
        self._id = store_id
        self._name = name
        self._alias = alias
        self._created_at = created_at
        self._accessed_at = created_at

    @property
    def store_id(self) -> str:
        """The id of the store."""
        return self._id

    def _label(self) -> str:
        return self._name or self._id

    def _gone(self) -> StoreNotFoundError:
        return StoreNotFoundError(
            f"key-value store {self._label()!r} no longer exists on Redis at {self._server.description} "
            "(it was dropped)",
            store=self._label(),
        )

    async def _run(
        self,
        script: scripts.Script,
        keys: Sequence[bytes],
        args: Sequence[bytes | str | int],
        *,
        action: str,
        key: str | None = None,
    ) -> Any:
        with self._server.backend.mapped(action, store=self._label(), key=key):
            return await script(self._redis, keys, args)

    def _conflict(self, key: str, expected: str | None, actual_raw: bytes | None) -> VersionConflictError:
        actual = actual_raw.decode() if actual_raw else None
        return VersionConflictError.for_record(store=self._label(), key=key, expected=expected, actual=actual)

    @override
    async def get_metadata(self) -> KeyValueStoreMetadata:
        with self._server.backend.mapped("read the metadata of", store=self._label()):
            modified_raw, accessed_raw = await self._redis.hmget(self._keys.meta, ["modified_at", "accessed_at"])
        if modified_raw is None:
            raise self._gone()
        modified = max(from_micros(modified_raw), self._created_at)
        accessed = max(from_micros(accessed_raw or modified_raw), self._accessed_at, modified)
        return KeyValueStoreMetadata(
            id=self._id, name=self._name, created_at=self._created_at, modified_at=modified, accessed_at=accessed
        )

    @override
    async def get_record(self, *, key: str) -> StoredRecord | None:
        validate_key(key, store=self._label())
        answer = await self._run(scripts.GET, [self._keys.meta, self._keys.record(key)], [], action="read", key=key)
        status = answer[0]
        if status == scripts.STORE_GONE:
            raise self._gone()
        self._accessed_at = datetime.now(UTC)
        if status == scripts.CONFLICT:
            return None
        _, value, content_type, version = answer
        return StoredRecord(key=key, value=value, content_type=content_type.decode(), version=version.decode())

    @override
    async def record_exists(self, *, key: str) -> bool:
        validate_key(key, store=self._label())
        answer = await self._run(
            scripts.RECORD_EXISTS, [self._keys.meta, self._keys.record(key)], [], action="check", key=key
        )
        if answer[0] == scripts.STORE_GONE:
            raise self._gone()
        return bool(answer[1])

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
        answer = await self._run(
            scripts.SET,
            [self._keys.meta, self._keys.keys, self._keys.record(key)],
            [
                key.encode("utf-8"),
                bytes(value),
                content_type.encode("utf-8"),
                "1" if if_absent else "0",
                "0" if if_version is None else "1",
                "" if if_version is None else if_version,
                now_micros(),
            ],
            action="write",
            key=key,
        )
        status = answer[0]
        if status == scripts.STORE_GONE:
            raise self._gone()
        if status == scripts.CONFLICT:
            actual = answer[1] or None
            raise self._conflict(key, None if if_absent and actual else if_version, actual)
        version: bytes = answer[1]
        return version.decode()

    @override
    async def copy_record(self, *, key: str, to_key: str, if_version: str | None = None) -> str | None:
        """Copy the record under `key` to `to_key` inside the server: one script, the value never sent."""
        validate_key(key, store=self._label())
        validate_key(to_key, store=self._label())
        answer = await self._run(
            scripts.COPY,
            [self._keys.meta, self._keys.keys, self._keys.record(key), self._keys.record(to_key)],
            [
                to_key.encode("utf-8"),
                "0" if if_version is None else "1",
                "" if if_version is None else if_version,
                now_micros(),
            ],
            action=f"copy record {shown_key(key)!r} to",
            key=to_key,
        )
        status = answer[0]
        if status == scripts.STORE_GONE:
            raise self._gone()
        if status == scripts.CONFLICT:
            raise self._conflict(key, if_version, answer[1] or None)
        if len(answer) == 1:
            return None
        version: bytes = answer[1]
        return version.decode()

    @override
    async def delete_record(self, *, key: str, if_version: str | None = None) -> bool:
        validate_key(key, store=self._label())
        answer = await self._run(
            scripts.DELETE,
            [self._keys.meta, self._keys.keys, self._keys.record(key)],
            [
                key.encode("utf-8"),
                "0" if if_version is None else "1",
                "" if if_version is None else if_version,
                now_micros(),
            ],
            action="delete",
            key=key,
        )
        status = answer[0]
        if status == scripts.STORE_GONE:
            raise self._gone()
        if status == scripts.CONFLICT:
            raise self._conflict(key, if_version, answer[1] or None)
        return bool(answer[1])

    @override
    async def iterate_keys(
        self,
        *,
        exclusive_start_key: str | None = None,
        limit: int | None = None,
        prefix: str | None = None,
    ) -> AsyncIterator[KeyInfo]:
        lower, upper = lex_range(exclusive_start_key, prefix)
        remaining = limit
        while remaining is None or remaining > 0:
            count = _PAGE_SIZE if remaining is None else min(_PAGE_SIZE, remaining)
            answer = await self._run(
                scripts.LIST,
                [self._keys.meta, self._keys.keys],
                [lower, upper, count, self._keys.record_prefix],
                action="list the keys of",
            )
            if answer[0] == scripts.STORE_GONE:
                raise self._gone()
            pairs = answer[1:]
            for i in range(0, len(pairs), 2):
                yield KeyInfo(key=pairs[i].decode("utf-8"), size=int(pairs[i + 1]))
            found = len(pairs) // 2
            if found < count:
                return
            if remaining is not None:
                remaining -= found
            # Page on from the last key seen, so keys written meanwhile are neither skipped nor repeated.
            lower = b"(" + pairs[-2]

    @override
    async def drop(self) -> None:
        await self._run(
            scripts.UNREGISTER,
            [self._registry.stores, self._registry.names, self._registry.aliases, self._registry.dropped],
            [self._id, self._name or "", self._alias or ""],
            action="drop",
        )
        await self.finish_drop()

    async def finish_drop(self) -> None:
        """Delete the keys of this store, which is out of the registry already, then forget that it was dropped.

        `drop()` ends with this; a storage client also runs it for a drop that a crash stopped half-way.
        """
        with self._server.backend.mapped("drop", store=self._label()):
            await self._redis.delete(self._keys.meta)
        await self._delete_records(mode="drop")
        with self._server.backend.mapped("drop", store=self._label()):
            await self._redis.srem(self._registry.dropped, self._id)

    @override
    async def purge(self) -> None:
        await self._delete_records(mode="purge")

    async def _delete_records(self, *, mode: str) -> None:
        # In batches, so that a store of a million records does not block the server for seconds.
        while True:
            deleted = await self._run(
                scripts.PURGE_BATCH,
                [self._keys.meta, self._keys.keys],
                [self._keys.record_prefix, _PURGE_BATCH, now_micros(), mode],
                action=mode,
            )
            if deleted == scripts.STORE_GONE:
                raise self._gone()
            if deleted < _PURGE_BATCH:
                return
