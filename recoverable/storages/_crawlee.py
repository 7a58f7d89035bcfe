"""A key-value store of Crawlee for Python, seen through the library's storage contract.

`RecoverableState(persist_state_kvs_factory=lambda: crawlee.storages.KeyValueStore.open(...))` is Crawlee's own
pattern; the factory's store is wrapped here in the library's `KeyValueStore` so that a state (and auto-saved
values) can live in it. Crawlee's store speaks Python values, not bytes, and keeps no versions, so:

- Records are read through Crawlee's store client: JSON values come back as compact JSON under the JSON
  content type Crawlee stored (its parameters, such as a state's schema version, kept), `str` as
  `text/plain; charset=utf-8`, `bytes` as `application/octet-stream`. A record's version is a hash of that
  content type and those bytes: equal content, equal version.
- Writes give Crawlee the value decoded from the bytes (JSON parsed, text decoded, anything else as bytes) with
  the content type; JSON `null` becomes Crawlee's empty `application/x-none`. Both read as "no saved state".
- Conditional writes, copies and deletes (`if_version`, `if_absent`) are refused (`StorageError`): there is
  nothing to check them against. `conditional_writes` is False, and `RecoverableState` refuses to take its
  one-owner lease on such a store unless told `lease_ttl=None`.
- A record that Crawlee lists but returns no value for (its file system client reads a record it cannot decode
  as missing, logging a warning) raises `DeserializationError` instead of reading as "no record".
- Keys `.` and `..`, and keys naming Crawlee's metadata files (`__metadata__.json`, `<key>.__metadata__.json`),
  are refused with `InvalidKeyError`: Crawlee's file system client would take them for paths or sidecars.
- Durability and atomicity are Crawlee's: its file system client renames a temporary file over the record and
  over its sidecar (two steps), without fsync.
- Every other error of Crawlee is raised as `StorageBackendError` naming the store, the key and the cause.

Crawlee is never imported here: a store of Crawlee exists only once the program imported it.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import weakref
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from typing_extensions import override

from recoverable.errors import (
    DeserializationError,
    InvalidKeyError,
    RecoverableError,
    StorageBackendError,
    StorageError,
    StoreNotFoundError,
)
from recoverable.storages._base import KeyValueStoreClient, StorageClient
from recoverable.storages._key_value_store import KeyValueStore
from recoverable.storages._models import KeyInfo, KeyValueStoreMetadata, StoredRecord
from recoverable.storages._serialization import (
    BINARY,
    CRAWLEE_NONE,
    JSON,
    decode_value,
    encode_value,
    is_json,
    normalize_content_type,
)
from recoverable.storages._validation import validate_key, validate_store_reference

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

__all__ = [
    "CrawleeKeyValueStoreClient",
    "adapt_crawlee_key_value_store",
    "crawlee_empties_default_store_in",
    "is_crawlee_key_value_store",
]

_SIDECAR = "__metadata__.json"
_NULL = b"null"

_adapted: weakref.WeakKeyDictionary[Any, KeyValueStore] = weakref.WeakKeyDictionary()


def is_crawlee_key_value_store(value: object) -> bool:
    """Whether `value` is a `crawlee.storages.KeyValueStore` (False when Crawlee was never imported)."""
    storages = sys.modules.get("crawlee.storages")
    kind = getattr(storages, "KeyValueStore", None) if storages is not None else None
    return isinstance(kind, type) and isinstance(value, kind)


def crawlee_empties_default_store_in(storage_dir: Path) -> bool:
    """Whether Crawlee, imported in this process, will empty the default store of this storage folder.

    A Crawlee crawler opens its default key-value store when it runs and, with `purge_on_start` (Crawlee's
    default), empties it first when it is kept in files. Crawlee's settings are read as they are, without
    creating any of its services (its configuration, when the program set one; else its environment), and
    anything that does not look like Crawlee 1.x means "no".
    """
    crawlee = sys.modules.get("crawlee")
    if crawlee is None:
        return False
    try:
        locator = vars(crawlee).get("service_locator")
        configuration = vars(locator).get("_configuration") if locator is not None else None
        if configuration is None:
            from crawlee.configuration import Configuration  # noqa: PLC0415 - Crawlee is imported already

            configuration = Configuration()
        storage_client = vars(locator).get("_storage_client") if locator is not None else None
        in_files = storage_client is None or "FileSystem" in type(storage_client).__name__
        return (
            bool(configuration.purge_on_start)
            and in_files
            and (Path(configuration.storage_dir).resolve() == storage_dir.resolve())
        )
    except Exception:  # noqa: BLE001 - a Crawlee that looks different: nothing to warn about
        return False


async def adapt_crawlee_key_value_store(store: Any) -> KeyValueStore:
    """The library's `KeyValueStore` over a store of Crawlee; the same one for the same Crawlee store.

    Raises:
        StorageBackendError: Crawlee failed to give the store's metadata.
    """
    adapted = _adapted.get(store)
    if adapted is None:
        client = CrawleeKeyValueStoreClient(store)
        metadata = await client.get_metadata()
        adapted = KeyValueStore(
            client=client, metadata=metadata, storage_client=_CrawleeStorageClient(client, metadata)
        )
        _adapted[store] = adapted
    return adapted


def _version(value: bytes, content_type: str) -> str:
    return "crawlee-" + hashlib.sha256(content_type.encode("utf-8") + b"\x00" + value).hexdigest()[:40]


class CrawleeKeyValueStoreClient(KeyValueStoreClient):
    """One store of Crawlee for Python behind the library's store interface (see the module docstring)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._label = str(getattr(store, "name", None) or getattr(store, "id", None) or "?")

    @property
    @override
    def conditional_writes(self) -> bool:
        return False

    @override
    async def get_metadata(self) -> KeyValueStoreMetadata:
        with self._mapped("read the metadata of"):
            metadata = await self._store.get_metadata()
        now = datetime.now(UTC)
        return KeyValueStoreMetadata(
            id=str(metadata.id),
            name=metadata.name,
            created_at=getattr(metadata, "created_at", None) or now,
            modified_at=getattr(metadata, "modified_at", None) or now,
            accessed_at=getattr(metadata, "accessed_at", None) or now,
        )

    @override
    async def get_record(self, *, key: str) -> StoredRecord | None:
        key = self._check_key(key)
        stored_type: str | None = None
        with self._mapped("read", key):
            # Crawlee's own store client gives the content type it stored beside the value; its facade does not.
            inner = getattr(self._store, "_client", None)
            if callable(getattr(inner, "get_value", None)):
                record = await inner.get_value(key=key)  # type: ignore[union-attr]
                value = None if record is None else record.value
                stored_type = getattr(record, "content_type", None)
            else:
                value = await self._store.get_value(key)
        if value is None:
            return await self._valueless_record(key)
        data, content_type = self._as_stored(value, key)
        if content_type == JSON and isinstance(stored_type, str):
            # Parameters of a JSON content type (a state's schema version) are kept as Crawlee stored them.
            with contextlib.suppress(ValueError):
                if is_json(normalized := normalize_content_type(stored_type)):
                    content_type = normalized
        return StoredRecord(key=key, value=data, content_type=content_type, version=_version(data, content_type))

    @override
    async def record_exists(self, *, key: str) -> bool:
        key = self._check_key(key)
        with self._mapped("check", key):
            return bool(await self._store.record_exists(key))

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
        key = self._check_key(key)
        if if_version is not None or if_absent:
            raise self._unconditional(key, "write")
        media = content_type.split(";", 1)[0].strip().lower()
        decoded: Any
        if media == CRAWLEE_NONE:
            decoded = None
        elif is_json(media) or media.startswith("text/"):
            decoded = decode_value(value, content_type, key=key, store=self._label)
        else:
            decoded = bytes(value)
        with self._mapped("write", key):
            # Crawlee stores None as its empty application/x-none, whatever the content type says.
            await self._store.set_value(key, decoded, None if decoded is None else content_type)
        if decoded is None:
            return _version(b"", CRAWLEE_NONE)
        data, stored_type = self._as_stored(decoded, key)
        return _version(data, stored_type)

    @override
    async def copy_record(self, *, key: str, to_key: str, if_version: str | None = None) -> str | None:
        """Copy the record under `key` to `to_key` through Crawlee's store; refused with `if_version` (no versions)."""
        key, to_key = self._check_key(key), self._check_key(to_key)
        if if_version is not None:
            raise self._unconditional(key, "copy")
        return await super().copy_record(key=key, to_key=to_key)

    @override
    async def delete_record(self, *, key: str, if_version: str | None = None) -> bool:
        key = self._check_key(key)
        if if_version is not None:
            raise self._unconditional(key, "delete")
        with self._mapped("delete", key):
            existed = bool(await self._store.record_exists(key))
            await self._store.delete_value(key)
        return existed

    @override
    async def iterate_keys(
        self,
        *,
        exclusive_start_key: str | None = None,
        limit: int | None = None,
        prefix: str | None = None,
    ) -> AsyncIterator[KeyInfo]:
        # Crawlee lists in its own order and without prefixes: list everything, then order and filter.
        keys = sorted(await self._list(), key=lambda info: info.key)
        count = 0
        for info in keys:
            if limit is not None and count >= limit:
                return
            if exclusive_start_key is not None and info.key <= exclusive_start_key:
                continue
            if prefix is not None and not info.key.startswith(prefix):
                continue
            count += 1
            yield info

    @override
    async def drop(self) -> None:
        with self._mapped("drop"):
            await self._store.drop()
        _adapted.pop(self._store, None)

    @override
    async def purge(self) -> None:
        with self._mapped("purge"):
            await self._store.purge()

    async def _list(self) -> list[KeyInfo]:
        with self._mapped("list the keys of"):
            return [KeyInfo(key=str(info.key), size=int(info.size or 0)) async for info in self._store.iterate_keys()]

    async def _valueless_record(self, key: str) -> StoredRecord | None:
        """The record Crawlee returned None for: none, its empty None value, JSON null, or one it could not read."""
        with self._mapped("read", key):
            listed = [info async for info in self._store.iterate_keys() if info.key == key]
        if not listed:
            return None
        content_type = str(listed[0].content_type)
        media = content_type.split(";", 1)[0].strip().lower()
        if media == CRAWLEE_NONE:
            return StoredRecord(key=key, value=b"", content_type=CRAWLEE_NONE, version=_version(b"", CRAWLEE_NONE))
        if is_json(media) and listed[0].size == len(_NULL):
            return StoredRecord(key=key, value=_NULL, content_type=JSON, version=_version(_NULL, JSON))
        raise DeserializationError(
            f"Crawlee's key-value store {self._label!r} lists record {key!r} ({content_type}, {listed[0].size} "
            "bytes) but gives no value for it: Crawlee reads a record it cannot decode as missing (its log says "
            "why). It is not taken for 'no record': fix or delete it",
            store=self._label,
            key=key,
        )

    def _as_stored(self, value: Any, key: str) -> tuple[bytes, str]:
        """The bytes and content type the library sees for a value Crawlee returned."""
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value), BINARY
        try:
            return encode_value(value, None, key=key, store=self._label, indent=None)
        except StorageError as exc:
            raise DeserializationError(
                f"Crawlee's key-value store {self._label!r} returned a {type(value).__name__} for record {key!r}, "
                f"which cannot be read as JSON, text or bytes: {exc}",
                store=self._label,
                key=key,
            ) from exc

    def _check_key(self, key: str) -> str:
        key = validate_key(key, store=self._label)
        if key in {".", ".."} or key == _SIDECAR or key.endswith("." + _SIDECAR):
            raise InvalidKeyError(
                f"key {key!r} cannot be used in Crawlee's key-value store {self._label!r}: Crawlee's file system "
                f"client would take it for a path or for one of its {_SIDECAR} files. Use another key",
                store=self._label,
                key=key,
            )
        return key

    def _unconditional(self, key: str, what: str) -> StorageError:
        return StorageError(
            f"cannot {what} record {key!r} of Crawlee's key-value store {self._label!r} conditionally: Crawlee's "
            "stores keep no versions, so the condition could not be checked and nothing was done. Write without "
            "if_version / if_absent (RecoverableState: lease_ttl=None), or use the library's KeyValueStore",
            store=self._label,
            key=key,
        )

    @contextlib.contextmanager
    def _mapped(self, action: str, key: str | None = None) -> Iterator[None]:
        """Raise what Crawlee raises as `StorageBackendError` naming the store and the key; the library's own pass."""
        try:
            yield
        except RecoverableError:
            raise
        except Exception as exc:
            what = f"record {key!r} of " if key is not None else ""
            raise StorageBackendError(
                f"Crawlee's key-value store failed to {action} {what}store {self._label!r}: "
                f"{type(exc).__name__}: {exc}",
                store=self._label,
                key=key,
            ) from exc


class _CrawleeStorageClient(StorageClient):
    """The storage client of one adapted store of Crawlee: it opens that store, by its id or name, and no other."""

    def __init__(self, client: CrawleeKeyValueStoreClient, metadata: KeyValueStoreMetadata) -> None:
        self._client = client
        self._metadata = metadata

    @override
    async def open_key_value_store_client(
        self,
        *,
        id: str | None = None,
        name: str | None = None,
        alias: str | None = None,
    ) -> CrawleeKeyValueStoreClient:
        validate_store_reference(id=id, name=name, alias=alias)
        if (id is not None and id == self._metadata.id) or (name is not None and name == self._metadata.name):
            return self._client
        raise StoreNotFoundError(
            f"only Crawlee's key-value store {self._metadata.name or self._metadata.id!r} is reachable here; open "
            "other stores of Crawlee with crawlee.storages.KeyValueStore.open()",
            store=id or name or alias,
        )

    @override
    async def list_key_value_stores(self) -> list[KeyValueStoreMetadata]:
        return [self._metadata]
