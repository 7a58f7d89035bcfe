"""`KeyValueStore`: Python values in, Python values out, over any storage client."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Self

from recoverable.configuration import Configuration
from recoverable.errors import DeserializationError, StorageError
from recoverable.storages._models import KeyInfo, KeyValueStoreMetadata, Record
from recoverable.storages._registry import backend_named
from recoverable.storages._serialization import JSON, decode_value, encode_value
from recoverable.storages._validation import store_alias, validate_key, validate_store_reference

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from recoverable.storages._base import KeyValueStoreClient, StorageClient

__all__ = ["KeyValueStore"]

logger = logging.getLogger(__name__)

_default_clients: dict[Configuration, StorageClient] = {}
_open_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _open_stores(client: StorageClient) -> dict[tuple[str, str], KeyValueStore]:
    """The facades opened on `client`, kept on the client itself so that they go away with it."""
    stores: dict[tuple[str, str], KeyValueStore] = vars(client).setdefault("_recoverable_open_stores", {})
    return stores


def _open_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _open_locks.get(loop)
    if lock is None:
        lock = _open_locks[loop] = asyncio.Lock()
    return lock


AutoSaveStarter = Callable[
    [Callable[[], Awaitable[None]], object | None, Configuration | None], Awaitable[Callable[[], Awaitable[None]]]
]
"""Starts calling a store's saver on PERSIST_STATE events (of the given manager, else the default ones) and
returns how to stop; `recoverable._auto_save.start_auto_save`, handed over by `set_auto_save_starter`."""

_auto_save_starter: AutoSaveStarter | None = None


def set_auto_save_starter(starter: AutoSaveStarter) -> None:
    """Give the storage layer the one way auto-saved values are saved on events (the package does it once)."""
    global _auto_save_starter  # noqa: PLW0603 - set once, when the package is imported
    _auto_save_starter = starter


def default_storage_client(configuration: Configuration | None = None) -> StorageClient:
    """The storage client used when none is passed: one per configuration, built from it.

    `RECOVERABLE_STORAGE_CLIENT` picks the kind (`file_system`, the default, `memory`, `redis` with
    `RECOVERABLE_REDIS_URL`, `sql` with `RECOVERABLE_SQL_URL`, or `http` with `RECOVERABLE_HTTP_URL`).
    """
    configuration = configuration or Configuration.from_env()
    client = _default_clients.get(configuration)
    if client is None:
        client = backend_named(configuration.storage_client).from_configuration(configuration)
        _default_clients[configuration] = client
    return client


class KeyValueStore:
    """A key-value store: records of any JSON value, text or bytes under string keys.

    Open one with `await KeyValueStore.open(...)`; opening the same store twice on one storage client
    gives the same instance. Values keep their type on a round trip (see `recoverable.storages` for the
    table). Keys are any non-empty str of at most 1024 characters; they are data, never paths.
    """

    def __init__(
        self,
        *,
        client: KeyValueStoreClient,
        metadata: KeyValueStoreMetadata,
        storage_client: StorageClient,
        configuration: Configuration | None = None,
    ) -> None:
        """Wrap an open store client; use `KeyValueStore.open()` instead of calling this."""
        self._client = client
        self._metadata = metadata
        self._storage_client = storage_client
        self._configuration = configuration
        self._auto_saved: dict[str, dict[str, Any]] = {}
        self._stop_auto_saving: Callable[[], Awaitable[None]] | None = None

    @classmethod
    async def open(
        cls,
        *,
        id: str | None = None,
        name: str | None = None,
        alias: str | None = None,
        storage_client: StorageClient | None = None,
        configuration: Configuration | None = None,
    ) -> KeyValueStore:
        r"""Open a store by id, name or alias (at most one); with none of them, the default store.

        A store opened by name or alias is created when it does not exist; one opened by id must exist. The
        alias `"default"` (and Crawlee's `"__default__"`) is the default store. With `purge_on_start` set in
        the configuration (off by default), an unnamed store (the default store, an alias store) is emptied
        the first time it is opened on its storage client.

        Args:
            id: The id of an existing store.
            name: A store name, shared by every program using the same storage.
            alias: A label for an unnamed store of this program: any text but `.` and `..`, without `/`,
                `\` or NUL (Crawlee's rule).
            storage_client: Where the store lives; the default client from `configuration` when omitted.
            configuration: Settings for the default storage client and `purge_on_start`; read from the
                environment when omitted.

        Raises:
            ConfigurationError: More than one of id, name and alias was given (also a `ValueError`).
            InvalidStoreNameError: The id, name or alias breaks its rules (`validate_store_reference`).
            StoreNotFoundError: No store has the given id.
            StorageBackendError: The backend failed.
        """
        validate_store_reference(id=id, name=name, alias=alias)
        configuration = configuration or Configuration.from_env()
        client = storage_client or default_storage_client(configuration)
        async with _open_lock():
            stores = _open_stores(client)
            lookup = (
                ("id", id) if id is not None else ("name", name) if name is not None else ("alias", store_alias(alias))
            )
            cached = stores.get(lookup)
            if cached is not None:
                return cached
            kvs_client = await client.open_key_value_store_client(id=id, name=name, alias=alias)
            metadata = await kvs_client.get_metadata()
            cached = stores.get(("id", metadata.id))
            if cached is None:
                if configuration.purge_on_start and metadata.name is None:
                    await kvs_client.purge()
                cached = cls(client=kvs_client, metadata=metadata, storage_client=client, configuration=configuration)
                stores[("id", metadata.id)] = cached
            stores[lookup] = cached
            return cached

    @property
    def id(self) -> str:
        """The store's id."""
        return self._metadata.id

    @property
    def name(self) -> str | None:
        """The store's name; None for the default store and stores opened by alias."""
        return self._metadata.name

    @property
    def storage_client(self) -> StorageClient:
        """The storage client holding the store."""
        return self._storage_client

    @property
    def client(self) -> KeyValueStoreClient:
        """The storage client's handle of this store, for bytes-level access."""
        return self._client

    @property
    def label(self) -> str:
        """The name of the store, or its id when it has none; used in messages."""
        return self._metadata.name or self._metadata.id

    def __repr__(self) -> str:
        return f"<KeyValueStore id={self.id!r} name={self.name!r} client={type(self._storage_client).__name__}>"

    async def get_metadata(self) -> KeyValueStoreMetadata:
        """Return the store's id, name and timestamps."""
        return await self._client.get_metadata()

    async def get_record(self, key: str) -> Record | None:
        """Return the record under `key` with its decoded value, content type and version, or None.

        Raises:
            InvalidKeyError: The key is not valid.
            DeserializationError: The stored bytes are not what their content type says.
        """
        validate_key(key, store=self.label)
        stored = await self._client.get_record(key=key)
        if stored is None:
            return None
        value = decode_value(stored.value, stored.content_type, key=key, store=self.label)
        return Record(key=key, value=value, content_type=stored.content_type, version=stored.version, size=stored.size)

    async def get_value(self, key: str, default_value: Any = None) -> Any:
        """Return the value stored under `key`, or `default_value` when there is none.

        Raises:
            InvalidKeyError: The key is not valid.
            DeserializationError: The stored bytes are not what their content type says.
        """
        record = await self.get_record(key)
        return default_value if record is None else record.value

    async def set_value(
        self,
        key: str,
        value: Any,
        content_type: str | None = None,
        *,
        if_version: str | None = None,
        if_absent: bool = False,
    ) -> str:
        """Store `value` under `key`, all or nothing, and return the record's new version.

        Args:
            key: The record key.
            value: JSON types, a Pydantic model or dataclass, str or bytes.
            content_type: Overrides the content type chosen from the value's type.
            if_version: Write only when the record's version is still this one (from `get_record`).
            if_absent: Write only when there is no record under `key` yet.

        Raises:
            InvalidKeyError: The key is not valid.
            SerializationError: The value cannot be stored; nothing was written.
            VersionConflictError: A condition did not hold; nothing was written.
        """
        validate_key(key, store=self.label)
        data, content_type = encode_value(value, content_type, key=key, store=self.label)
        return await self._client.set_record(
            key=key, value=data, content_type=content_type, if_version=if_version, if_absent=if_absent
        )

    async def delete_value(self, key: str, *, if_version: str | None = None) -> bool:
        """Delete the record under `key`; return whether there was one.

        Raises:
            InvalidKeyError: The key is not valid.
            VersionConflictError: `if_version` was given and does not match.
        """
        validate_key(key, store=self.label)
        self._auto_saved.pop(key, None)
        return await self._client.delete_record(key=key, if_version=if_version)

    async def record_exists(self, key: str) -> bool:
        """Tell whether a record is stored under `key`."""
        validate_key(key, store=self.label)
        return await self._client.record_exists(key=key)

    async def iterate_keys(
        self,
        exclusive_start_key: str | None = None,
        limit: int | None = None,
        prefix: str | None = None,
    ) -> AsyncIterator[KeyInfo]:
        """Yield keys with their sizes in ascending order.

        Args:
            exclusive_start_key: Start after this key.
            limit: Yield at most this many keys.
            prefix: Only keys starting with this string.

        Raises:
            ValueError: `limit` is not a positive int.
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be a positive int or None, not {limit!r}")
        async for info in self._client.iterate_keys(
            exclusive_start_key=exclusive_start_key, limit=limit, prefix=prefix
        ):
            yield info

    async def list_keys(
        self,
        exclusive_start_key: str | None = None,
        limit: int | None = None,
        prefix: str | None = None,
    ) -> list[KeyInfo]:
        """Return the keys `iterate_keys` yields, as a list."""
        return [info async for info in self.iterate_keys(exclusive_start_key, limit, prefix)]

    async def purge(self) -> None:
        """Delete every record, keeping the store."""
        self._auto_saved.clear()
        await self._client.purge()

    async def drop(self) -> None:
        """Delete the store and all its records; this instance must not be used afterwards."""
        await self._stop_auto_save()
        self._auto_saved.clear()
        await self._client.drop()
        stores = _open_stores(self._storage_client)
        for lookup, store in list(stores.items()):
            if store is self:
                del stores[lookup]

    # --- auto-saved values --------------------------------------------------------------------------

    async def get_auto_saved_value(
        self,
        key: str,
        default_value: dict[str, Any] | None = None,
        *,
        event_manager: object | None = None,
    ) -> dict[str, Any]:
        """Return a dict that is saved under `key` on every PERSIST_STATE event.

        The first call loads the stored dict (or starts from a copy of `default_value`); later calls
        return the same object, so changes made to it are what gets saved. Without an `event_manager`,
        the values are saved on the events a `RecoverableState` given no event manager uses: those of a
        running Crawlee crawler, else the shared `LocalEventManager` of the event loop (a
        `PlatformEventManager` on the Apify platform), configured from the `configuration` the store was
        opened with. `close()` lets go of it and saves one last time.

        Raises:
            InvalidKeyError: The key is not valid.
            DeserializationError: The stored record is not a JSON object.
        """
        validate_key(key, store=self.label)
        if key in self._auto_saved:
            return self._auto_saved[key]
        stored = await self.get_value(key)
        if stored is None:
            value: dict[str, Any] = dict(default_value or {})
        elif isinstance(stored, dict):
            value = stored
        else:
            raise DeserializationError(
                f"record {key!r} of store {self.label!r} holds a {type(stored).__name__}, not a JSON object, so it "
                "cannot be an auto-saved value; use another key or delete the record",
                store=self.label,
                key=key,
            )
        self._auto_saved[key] = value
        await self._start_auto_save(event_manager)
        return value

    async def persist_auto_saved_values(self) -> None:
        """Save every auto-saved value now (the PERSIST_STATE listener does this on each event)."""
        # A snapshot: a value added while a save is awaited is saved at the next call.
        for key, value in list(self._auto_saved.items()):
            await self.set_value(key, value, JSON)

    async def persist_autosaved_values(self) -> None:
        """Crawlee's spelling of `persist_auto_saved_values()`."""
        await self.persist_auto_saved_values()

    async def _persist_auto_saved_listener(self) -> None:
        try:
            await self.persist_auto_saved_values()
        except StorageError:
            logger.exception("saving the auto-saved values of store %r failed; retrying on the next event", self.label)

    async def _start_auto_save(self, event_manager: object | None) -> None:
        if self._stop_auto_saving is not None:
            return
        if _auto_save_starter is None:  # pragma: no cover - set whenever the package `recoverable` is imported
            raise RuntimeError("auto-saved values need the package `recoverable` imported")
        self._stop_auto_saving = await _auto_save_starter(
            self._persist_auto_saved_listener, event_manager, self._configuration
        )

    async def _stop_auto_save(self) -> None:
        stop, self._stop_auto_saving = self._stop_auto_saving, None
        if stop is not None:
            await stop()

    async def close(self) -> None:
        """Save the auto-saved values one last time and let go of the default events the store listened to."""
        await self._stop_auto_save()
        if self._auto_saved:
            await self.persist_auto_saved_values()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
