"""One key-value store reached over the key-value store API v2."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from typing_extensions import override

from recoverable._kv_api import (
    MAX_LIST_LIMIT,
    content_hash_version,
    etag_for,
    parse_etag,
    path_segment,
)
from recoverable.errors import StorageError, StoreNotFoundError, VersionConflictError
from recoverable.storages._base import KeyValueStoreClient
from recoverable.storages._http._session import Target
from recoverable.storages._models import KeyInfo, KeyValueStoreMetadata, StoredRecord
from recoverable.storages._validation import validate_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from recoverable.storages._http._session import ApiResponse, ApiSession

__all__ = ["HttpKeyValueStoreClient", "parse_metadata"]

_OK = 200
_CREATED = 201
_NO_CONTENT = 204
_NOT_FOUND = 404
_PRECONDITION_FAILED = 412
_PURGE_CONCURRENCY = 16
_DEFAULT_CONTENT_TYPE = "application/octet-stream"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_metadata(session: ApiSession, response: ApiResponse, *, target: Target, action: str) -> KeyValueStoreMetadata:
    """Read the store object of a `{"data": store}` answer.

    Raises:
        StorageBackendError: The answer is not a store object.
    """
    try:
        return KeyValueStoreMetadata.model_validate(response.data())
    except (ValueError, ValidationError) as exc:
        raise session.bad_answer(response, target=target, action=action, problem=f"no store object ({exc})") from exc


class HttpKeyValueStoreClient(KeyValueStoreClient):
    """A store on a key-value store API v2 server: `recoverable serve`, or the Apify platform.

    Every method is one request (two when a 404 must tell a missing record from a missing store), except
    `iterate_keys` (one per thousand keys) and `purge` (which lists the keys and deletes them one by one,
    as the API has no call for it).
    """

    def __init__(
        self,
        *,
        session: ApiSession,
        metadata: KeyValueStoreMetadata,
        on_drop: Callable[[HttpKeyValueStoreClient], Awaitable[None]] | None = None,
    ) -> None:
        self._session = session
        self._id = metadata.id
        self._label = metadata.name or metadata.id
        self._path = f"key-value-stores/{path_segment(metadata.id)}"
        self._on_drop = on_drop
        self._dropped = False

    @property
    def store_id(self) -> str:
        """The id of the store."""
        return self._id

    def _target(self, key: str | None = None) -> Target:
        return Target(store=self._label, key=key)

    def _record_path(self, key: str) -> str:
        return f"{self._path}/records/{path_segment(key)}"

    def _check_alive(self) -> None:
        if self._dropped:
            raise StoreNotFoundError(f"key-value store {self._label!r} was dropped", store=self._label)

    def _gone(self) -> StoreNotFoundError:
        self._dropped = True
        return StoreNotFoundError(
            f"key-value store {self._label!r} no longer exists at {self._session.base_url} (it was dropped)",
            store=self._label,
        )

    async def _raise_unless_store_exists(self, key: str) -> None:
        """After a 404 on a record: raise StoreNotFoundError when it was the store that is missing."""
        response = await self._session.request("GET", self._path, target=self._target(key), action="check the store of")
        if response.status == _NOT_FOUND:
            raise self._gone()
        if response.status != _OK:
            raise self._session.error(response, target=self._target(key), action="check the store of")

    @override
    async def get_metadata(self) -> KeyValueStoreMetadata:
        self._check_alive()
        action = "read the metadata of"
        response = await self._session.request("GET", self._path, target=self._target(), action=action)
        if response.status == _NOT_FOUND:
            raise self._gone()
        if response.status != _OK:
            raise self._session.error(response, target=self._target(), action=action)
        return parse_metadata(self._session, response, target=self._target(), action=action)

    @override
    async def get_record(self, *, key: str) -> StoredRecord | None:
        validate_key(key, store=self._label)
        self._check_alive()
        target = self._target(key)
        response = await self._session.request(
            "GET", self._record_path(key), target=target, action="read", params={"attachment": "true"}
        )
        if response.status == _NOT_FOUND:
            await self._raise_unless_store_exists(key)
            return None
        if response.status != _OK:
            raise self._session.error(response, target=target, action="read")
        content_type = response.headers.get("content-type") or _DEFAULT_CONTENT_TYPE
        version = parse_etag(response.headers.get("etag")) or content_hash_version(response.content, content_type)
        return StoredRecord(key=key, value=response.content, content_type=content_type, version=version)

    @override
    async def record_exists(self, *, key: str) -> bool:
        validate_key(key, store=self._label)
        self._check_alive()
        target = self._target(key)
        response = await self._session.request("HEAD", self._record_path(key), target=target, action="check")
        if response.status == _NOT_FOUND:
            await self._raise_unless_store_exists(key)
            return False
        if response.status != _OK:
            raise self._session.error(response, target=target, action="check")
        return True

    def _require_conditional_writes(self, key: str, what: str) -> None:
        if self._session.conditional_writes is False:
            raise StorageError(
                f"cannot {what} record {key!r} of key-value store {self._label!r} conditionally: the server at "
                f"{self._session.base_url} sends no ETag and does not honour If-Match (the Apify platform's "
                "API does not), so the condition could not be checked and nothing was written. Write without "
                "if_version / if_absent (RecoverableState: lease_ttl=None), or keep the store on a `recoverable serve` "
                "server",
                store=self._label,
                key=key,
            )

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
        validate_key(key, store=self._label)
        self._check_alive()
        target = self._target(key)
        headers = {"Content-Type": content_type}
        if if_version is not None or if_absent:
            self._require_conditional_writes(key, "write")
            if if_version is not None:
                headers["If-Match"] = etag_for(if_version)
            if if_absent:
                headers["If-None-Match"] = "*"
        value = bytes(value)
        response = await self._session.request(
            "PUT", self._record_path(key), target=target, action="write", content=value, headers=headers, compress=True
        )
        if response.status in (_OK, _CREATED, _NO_CONTENT):
            return parse_etag(response.headers.get("etag")) or content_hash_version(value, content_type)
        if response.status == _PRECONDITION_FAILED:
            if response.retried_after_send:
                # An earlier attempt may have written the record and lost its answer; then the condition
                # failed against our own write, which is a success.
                current = await self.get_record(key=key)
                if current is not None and (current.value, current.content_type) == (value, content_type):
                    return current.version
            raise self._conflict(response, key, if_version)
        if response.status == _NOT_FOUND:
            raise self._gone()
        raise self._session.error(response, target=target, action="write")

    def _conflict(self, response: ApiResponse, key: str, if_version: str | None) -> VersionConflictError:
        actual = parse_etag(response.headers.get("etag"))
        return VersionConflictError.for_record(store=self._label, key=key, expected=if_version, actual=actual)

    @override
    async def copy_record(self, *, key: str, to_key: str, if_version: str | None = None) -> str | None:
        """Copy the record under `key` to `to_key`: read and written again, as the KV API v2 has no copy."""
        validate_key(key, store=self._label)
        validate_key(to_key, store=self._label)
        return await super().copy_record(key=key, to_key=to_key, if_version=if_version)

    @override
    async def delete_record(self, *, key: str, if_version: str | None = None) -> bool:
        validate_key(key, store=self._label)
        self._check_alive()
        target = self._target(key)
        headers: dict[str, str] = {}
        if if_version is not None:
            self._require_conditional_writes(key, "delete")
            headers["If-Match"] = etag_for(if_version)
        response = await self._session.request(
            "DELETE", self._record_path(key), target=target, action="delete", headers=headers
        )
        if response.status in (_OK, _NO_CONTENT):
            return True
        if response.status == _NOT_FOUND:
            await self._raise_unless_store_exists(key)
            return False
        if response.status == _PRECONDITION_FAILED:
            if response.retried_after_send and response.headers.get("etag") is None:
                # The record is gone: most likely deleted by an earlier attempt whose answer was lost.
                return True
            raise self._conflict(response, key, if_version)
        raise self._session.error(response, target=target, action="delete")

    @override
    async def iterate_keys(
        self,
        *,
        exclusive_start_key: str | None = None,
        limit: int | None = None,
        prefix: str | None = None,
    ) -> AsyncIterator[KeyInfo]:
        self._check_alive()
        # A URL cannot carry a lone surrogate, and no key holds one: no key starts with such a prefix, and
        # such a start is replaced by one before the same keys.
        if prefix is not None and _LONE_SURROGATE.search(prefix):
            return
        if exclusive_start_key is not None and (surrogate := _LONE_SURROGATE.search(exclusive_start_key)):
            async for info in self._keys_after_surrogate(exclusive_start_key[: surrogate.start()], limit, prefix):
                yield info
            return
        cursor = exclusive_start_key
        remaining = limit
        while remaining is None or remaining > 0:
            items, truncated, next_key = await self._key_page(
                cursor, min(remaining, MAX_LIST_LIMIT) if remaining else MAX_LIST_LIMIT, prefix
            )
            if remaining is not None and len(items) > remaining:
                items, truncated = items[:remaining], False
            for info in items:
                yield info
            if remaining is not None:
                remaining -= len(items)
            next_key = next_key or (items[-1].key if items else None)
            if not truncated or not items or next_key is None or next_key == cursor:
                return
            cursor = next_key

    async def _keys_after_surrogate(self, head: str, limit: int | None, prefix: str | None) -> AsyncIterator[KeyInfo]:
        """The keys after `head` followed by a lone surrogate.

        They are the keys after every key that starts with `head` and then U+D7FF, the code point just below
        the surrogates: the listing starts after `head` + U+D7FF and skips the keys that start with it.
        """
        below = head + "\ud7ff"
        listed = 0
        async for info in self.iterate_keys(exclusive_start_key=below, prefix=prefix):
            if info.key.startswith(below):
                continue
            yield info
            listed += 1
            if limit is not None and listed >= limit:
                return

    async def _key_page(
        self, cursor: str | None, limit: int, prefix: str | None
    ) -> tuple[list[KeyInfo], bool, str | None]:
        """One page of the key listing: the keys, whether more follow, and the key to continue after."""
        target = self._target()
        action = "list the keys of"
        params: dict[str, str | int] = {"limit": limit}
        if cursor is not None:
            params["exclusiveStartKey"] = cursor
        if prefix:
            params["prefix"] = prefix
        response = await self._session.request("GET", f"{self._path}/keys", target=target, action=action, params=params)
        if response.status == _NOT_FOUND:
            raise self._gone()
        if response.status != _OK:
            raise self._session.error(response, target=target, action=action)
        try:
            return _key_page(response.data())
        except (ValueError, TypeError, KeyError) as exc:
            raise self._session.bad_answer(
                response, target=target, action=action, problem=f"no list of keys ({exc})"
            ) from exc

    @override
    async def drop(self) -> None:
        if self._dropped:
            return
        response = await self._session.request("DELETE", self._path, target=self._target(), action="drop")
        if response.status not in (_OK, _NO_CONTENT, _NOT_FOUND):
            raise self._session.error(response, target=self._target(), action="drop")
        self._dropped = True
        if self._on_drop is not None:
            await self._on_drop(self)

    @override
    async def purge(self) -> None:
        self._check_alive()
        keys = [info.key async for info in self.iterate_keys()]
        semaphore = asyncio.Semaphore(_PURGE_CONCURRENCY)

        async def delete(key: str) -> None:
            async with semaphore:
                response = await self._session.request(
                    "DELETE", self._record_path(key), target=self._target(key), action="purge"
                )
            if response.status not in (_OK, _NO_CONTENT, _NOT_FOUND):
                raise self._session.error(response, target=self._target(key), action="purge")

        await asyncio.gather(*(delete(key) for key in keys))


def _key_page(data: Any) -> tuple[list[KeyInfo], bool, str | None]:
    """The keys, `isTruncated` and `nextExclusiveStartKey` of a listing page.

    Raises:
        ValueError, TypeError, KeyError: The page does not have the API's shape.
    """
    if not isinstance(data, dict):
        raise TypeError("the data is not an object")
    raw_items = data["items"]
    if not isinstance(raw_items, list):
        raise TypeError("'items' is not a list")
    items: list[KeyInfo] = []
    for item in raw_items:
        key, size = item["key"], item.get("size", 0)
        if not isinstance(key, str) or isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"item {item!r} has no str key and int size")
        items.append(KeyInfo(key=key, size=size))
    next_key = data.get("nextExclusiveStartKey")
    return items, bool(data.get("isTruncated")), next_key if isinstance(next_key, str) and next_key else None
