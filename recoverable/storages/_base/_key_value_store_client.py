"""The interface of one open key-value store of a storage client."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from recoverable.errors import VersionConflictError
from recoverable.storages._validation import validate_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from recoverable.storages._models import KeyInfo, KeyValueStoreMetadata, StoredRecord

__all__ = ["KeyValueStoreClient"]


class KeyValueStoreClient(ABC):
    """One open store of a storage client: bytes in, bytes out, each record with a content type and a version.

    A client knows nothing of Python values, models or events; `KeyValueStore` does the encoding. Every
    implementation keeps the contracts of DESIGN.md: writes are all-or-nothing and durable when they return,
    every write gives the record a new version, keys are data (never paths), and backend errors are raised
    as `StorageBackendError` naming the store, the key and the cause.

    Every implementation checks the key of `get_record`, `record_exists`, `set_record` and `delete_record`
    itself, first, with `validate_key`, and raises `InvalidKeyError` for one that breaks the rules, whoever
    the caller is. Listing bounds (`exclusive_start_key`, `prefix`) are not keys and are not checked.
    """

    @property
    def writes_end_with_the_writer(self) -> bool:
        """Whether a write can no longer land once the process making it has died.

        True where the process itself writes the store (in memory, files on its disk, SQLite): a write
        that was under way when its process died either landed before or never will. False where a
        request travels to a server, which may still carry out one sent just before its sender died; a
        state taken over from a dead owner is then claimed first (see `RecoverableState`).
        """
        return False

    @property
    def conditional_writes(self) -> bool:
        """Whether `if_version` and `if_absent` can be honoured at all.

        True for every storage client of the library (the HTTP client learns only from the server's first
        answer that the Apify platform cannot, and refuses then). False for a store of Crawlee for Python
        reached through `RecoverableState(persist_state_kvs_factory=...)`, which has no versions to check.
        """
        return True

    @abstractmethod
    async def get_metadata(self) -> KeyValueStoreMetadata:
        """Return the store's id, name and timestamps.

        Raises:
            StoreNotFoundError: The store was dropped.
            StorageBackendError: The backend failed.
        """

    @abstractmethod
    async def get_record(self, *, key: str) -> StoredRecord | None:
        """Return the record stored under `key`, or None when there is none.

        Raises:
            InvalidKeyError: The key breaks the rules of `validate_key`.
            StorageBackendError: The backend failed, or (file system) the record's file is a link, a folder
                or another special file: never "no record".
        """

    @abstractmethod
    async def record_exists(self, *, key: str) -> bool:
        """Tell whether a record is stored under `key`, without reading its value.

        Raises:
            InvalidKeyError: The key breaks the rules of `validate_key`.
            StorageBackendError: The backend failed, or (file system) the record's file is a link, a folder
                or another special file.
        """

    @abstractmethod
    async def set_record(
        self,
        *,
        key: str,
        value: bytes,
        content_type: str,
        if_version: str | None = None,
        if_absent: bool = False,
    ) -> str:
        """Store `value` under `key`, all or nothing, and return the record's new version.

        Args:
            key: The record key.
            value: The bytes to store.
            content_type: The MIME type to store with the bytes.
            if_version: Write only when the record's current version is this one.
            if_absent: Write only when no record is stored under `key`.

        Raises:
            InvalidKeyError: The key breaks the rules of `validate_key`; nothing was written.
            VersionConflictError: A condition did not hold; nothing was written.
            StorageBackendError: The backend failed, or (file system) the record's file is a link, a folder or
                another special file, which is never replaced; the previous record is intact.
        """

    async def copy_record(self, *, key: str, to_key: str, if_version: str | None = None) -> str | None:
        """Copy the record under `key` (its bytes and content type) to `to_key`, all or nothing, replacing it.

        What a state's history keeps: the record as it is, before it is overwritten. This default reads the
        record and writes it again; a storage client that can copy without moving the bytes through this
        process (a hard link, a copy inside the server) overrides it.

        Args:
            key: The record to copy.
            to_key: Where to copy it; a record there is replaced.
            if_version: Copy only when the record under `key` has this version.

        Returns:
            The new version of the record under `to_key`, or None when there is no record under `key` (and
            no `if_version` was given); nothing was written then.

        Raises:
            InvalidKeyError: `key` or `to_key` breaks the rules of `validate_key`; nothing was written.
            VersionConflictError: `if_version` was given and the record under `key` has another version or
                none; nothing was written.
            StorageBackendError: The backend failed; the record under `to_key` is the old one or the copy.
        """
        validate_key(key)
        validate_key(to_key)
        record = await self.get_record(key=key)
        if if_version is not None and (record is None or record.version != if_version):
            metadata = await self.get_metadata()
            raise VersionConflictError.for_record(
                store=metadata.name or metadata.id,
                key=key,
                expected=if_version,
                actual=None if record is None else record.version,
            )
        if record is None:
            return None
        return await self.set_record(key=to_key, value=record.value, content_type=record.content_type)

    @abstractmethod
    async def delete_record(self, *, key: str, if_version: str | None = None) -> bool:
        """Delete the record under `key`; return whether there was one.

        Args:
            key: The record key.
            if_version: Delete only when the record's current version is this one.

        Raises:
            InvalidKeyError: The key breaks the rules of `validate_key`.
            VersionConflictError: `if_version` was given and the record has another version or none.
            StorageBackendError: The backend failed, or (file system) the record's file is a link, a folder or
                another special file, which is never removed.
        """

    @abstractmethod
    def iterate_keys(
        self,
        *,
        exclusive_start_key: str | None = None,
        limit: int | None = None,
        prefix: str | None = None,
    ) -> AsyncIterator[KeyInfo]:
        """Yield the store's keys in ascending order (UTF-8 byte order, the same as code point order).

        Args:
            exclusive_start_key: Yield only keys greater than this one.
            limit: Yield at most this many keys.
            prefix: Yield only keys starting with this string.

        Raises:
            StorageBackendError: The backend failed.
        """

    @abstractmethod
    async def drop(self) -> None:
        """Delete the store with all its records. The client must not be used afterwards.

        Raises:
            StorageBackendError: The backend failed.
        """

    @abstractmethod
    async def purge(self) -> None:
        """Delete every record of the store, keeping the store itself.

        Raises:
            StorageBackendError: The backend failed.
        """
