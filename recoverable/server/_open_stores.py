"""The stores the server has opened and the names it has seen: each store is looked up in the backend once."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from recoverable._kv_api import ERROR_NOT_FOUND
from recoverable.errors import StoreNotFoundError
from recoverable.server._errors import ApiError
from recoverable.storages._validation import validate_store_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from recoverable.storages._base import KeyValueStoreClient, StorageClient
    from recoverable.storages._models import KeyValueStoreMetadata

__all__ = ["OpenStores"]

_T = TypeVar("_T")


class OpenStores:
    """The stores of one backend that the server opened, by id, and the ids of the names it has seen.

    Creating a store, and looking up one seen before, never lists the backend's stores. A store dropped
    behind the server's back (by another process using the same backend) is forgotten when an operation on
    it finds it gone.
    """

    def __init__(self, backend: StorageClient) -> None:
        self._backend = backend
        self._stores: dict[str, KeyValueStoreClient] = {}
        self._names: dict[str, str] = {}
        self._create_lock = asyncio.Lock()
        self.list_all = _Fresh(backend.list_key_value_stores)
        """The metadata of every store, from a listing that began after the caller asked."""

    async def open(self, ref: str) -> tuple[str, KeyValueStoreClient]:
        """Open the store a URL names: an id, `~name` or `username~name` (this server has one user).

        Returns:
            The store's id and its client.

        Raises:
            ApiError: 404 when there is no such store.
        """
        if "~" not in ref:
            return ref, await self.by_id(ref)
        name = ref.split("~", 1)[1]
        store_id = await self._find_name(name) if name else None
        if store_id is not None and store_id not in self._stores:
            try:
                await self.by_id(store_id)
            except ApiError:
                # Dropped behind the server's back: look the name up again.
                self.forget(store_id)
                store_id = await self._find_name(name)
        if store_id is None:
            raise ApiError(404, ERROR_NOT_FOUND, f"key-value store named {name!r} was not found")
        return store_id, await self.by_id(store_id)

    async def by_id(self, store_id: str) -> KeyValueStoreClient:
        """The store of an id, opened once.

        Raises:
            ApiError: 404 when there is no such store.
        """
        store = self._stores.get(store_id)
        if store is None:
            try:
                store = await self._backend.open_key_value_store_client(id=store_id)
            except StoreNotFoundError:
                raise ApiError(404, ERROR_NOT_FOUND, f"key-value store {store_id!r} was not found") from None
            self._stores[store_id] = store
        return store

    async def create(self, name: str | None) -> tuple[KeyValueStoreMetadata, bool]:
        """Open the store named `name`, creating it when missing (None: a new unnamed store).

        Returns:
            Its metadata, and whether it was created by this call.
        """
        async with self._create_lock:
            if name is None:
                store = await self._backend.open_key_value_store_client(alias=f"unnamed-{secrets.token_hex(8)}")
                metadata = await store.get_metadata()
                self._stores[metadata.id] = store
                return metadata, True
            validate_store_name(name)
            known = self._names.get(name)
            if known is not None:
                try:
                    return await (await self.by_id(known)).get_metadata(), False
                except (ApiError, StoreNotFoundError):
                    self.forget(known)
            # Opening by name finds the store or creates it, without listing the others. It is new when it
            # was created after this moment (every backend stamps a new store with this machine's clock).
            before = datetime.now(UTC)
            store = await self._backend.open_key_value_store_client(name=name)
            metadata = await store.get_metadata()
            self._stores[metadata.id] = store
            self._names[name] = metadata.id
            created = metadata.created_at
            return metadata, (created if created.tzinfo else created.replace(tzinfo=UTC)) >= before

    def learn_names(self, stores: list[KeyValueStoreMetadata]) -> None:
        """Remember the names of listed stores, so that looking one up costs no backend call."""
        for metadata in stores:
            if metadata.name is not None:
                self._names[metadata.name] = metadata.id

    def forget(self, store_id: str) -> None:
        """Forget a store (dropped), and its name."""
        self._stores.pop(store_id, None)
        for name, known in list(self._names.items()):
            if known == store_id:
                del self._names[name]

    async def call(self, store_id: str, operation: Callable[[], Awaitable[_T]]) -> _T:
        """Run an operation on an open store; a store dropped behind the server's back is forgotten.

        Raises:
            ApiError: 404 when the store is gone.
        """
        try:
            return await operation()
        except StoreNotFoundError:
            self.forget(store_id)
            raise ApiError(404, ERROR_NOT_FOUND, f"key-value store {store_id!r} was not found") from None

    async def _find_name(self, name: str) -> str | None:
        """The id of the store named `name`, without creating it."""
        known = self._names.get(name)
        if known is not None:
            return known
        # A name not seen yet may be a store made behind the server's back: the backend looks it up by
        # name, at a cost that does not grow with the number of stores.
        found = await self._backend.find_key_value_store(name=name)
        if found is not None:
            self._names[name] = found
        return found


class _Fresh(Generic[_T]):
    """Calls an async function so that every caller gets the result of a call that began after it asked.

    Callers that ask before the next call begins share it, so a flood of callers costs at most one call
    running and one waiting, and no caller gets an answer older than its question.
    """

    def __init__(self, function: Callable[[], Awaitable[_T]]) -> None:
        self._function = function
        self._running: asyncio.Task[_T] | None = None
        self._next: asyncio.Task[_T] | None = None

    async def __call__(self) -> _T:
        if self._next is None:
            self._next = asyncio.ensure_future(self._run_after(self._running))
        return await asyncio.shield(self._next)

    async def _run_after(self, previous: asyncio.Task[_T] | None) -> _T:
        if previous is not None:
            await asyncio.wait([previous])
        me: Any = asyncio.current_task()
        self._running, self._next = me, None
        try:
            return await self._function()
        finally:
            if self._running is me:
                self._running = None
