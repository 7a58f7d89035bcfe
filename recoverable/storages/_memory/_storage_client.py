"""Storage client that keeps stores in this process's memory."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count
from typing import TYPE_CHECKING, Self

from typing_extensions import override

from recoverable.errors import StoreNotFoundError
from recoverable.storages._base import StorageClient
from recoverable.storages._memory._key_value_store_client import MemoryKeyValueStoreClient
from recoverable.storages._models import KeyValueStoreMetadata, new_store_id
from recoverable.storages._validation import store_alias, validate_store_name, validate_store_reference

if TYPE_CHECKING:
    from recoverable.configuration import Configuration

__all__ = ["MemoryStorageClient"]


class MemoryStorageClient(StorageClient):
    """Stores in a dict of this process: fast, and gone when the process ends.

    Meant for tests and for programs that need no recovery. Opening the same name or alias twice on one
    client returns the same store.
    """

    @classmethod
    @override
    def from_configuration(cls, configuration: Configuration) -> Self:
        del configuration  # nothing to set up: the stores live in this object
        return cls()

    def __init__(self) -> None:
        self._stores: dict[str, MemoryKeyValueStoreClient] = {}
        self._by_name: dict[str, str] = {}
        self._by_alias: dict[str, str] = {}
        self._versions = count(1)

    @override
    async def open_key_value_store_client(
        self,
        *,
        id: str | None = None,
        name: str | None = None,
        alias: str | None = None,
    ) -> MemoryKeyValueStoreClient:
        validate_store_reference(id=id, name=name, alias=alias)
        if id is not None:
            store = self._stores.get(id)
            if store is None:
                raise StoreNotFoundError(f"no key-value store has the id {id!r} in this memory storage", store=id)
            return store
        index, label = (self._by_name, name) if name is not None else (self._by_alias, store_alias(alias))
        existing = index.get(label)
        if existing is not None:
            return self._stores[existing]
        now = datetime.now(UTC)
        metadata = KeyValueStoreMetadata(id=new_store_id(), name=name, created_at=now, modified_at=now, accessed_at=now)
        store = MemoryKeyValueStoreClient(
            metadata=metadata, next_version=lambda: next(self._versions), on_drop=self._forget
        )
        self._stores[metadata.id] = store
        index[label] = metadata.id
        return store

    @override
    async def find_key_value_store(self, *, name: str) -> str | None:
        validate_store_name(name)
        return self._by_name.get(name)

    @override
    async def list_key_value_stores(self) -> list[KeyValueStoreMetadata]:
        return sorted([await s.get_metadata() for s in self._stores.values()], key=lambda m: m.created_at)

    def _forget(self, store: MemoryKeyValueStoreClient) -> None:
        self._stores.pop(store.store_id, None)
        for index in (self._by_name, self._by_alias):
            for label, store_id in list(index.items()):
                if store_id == store.store_id:
                    del index[label]
