"""The interface of a storage backend: it opens stores."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType

    from recoverable.configuration import Configuration
    from recoverable.storages._base._key_value_store_client import KeyValueStoreClient
    from recoverable.storages._models import KeyValueStoreMetadata

from recoverable.storages._validation import validate_store_name

__all__ = ["StorageClient"]


class StorageClient(ABC):
    """A storage backend (memory, file system, HTTP, Redis, SQL) that opens key-value stores.

    A store is opened by exactly one of: `id` (it must exist), `name` (created when missing, visible to
    every process using the backend), or `alias` (an unnamed store the program refers to by a local
    label; created when missing). With none of them the default store opens, which is the alias
    `"default"` (also Crawlee's `"__default__"`, `store_alias`). A name is 1 to 63 letters, digits and
    hyphens, and never `default`; an alias is any text by Crawlee's rule (`validate_store_alias`), which
    each backend stores as data, never as a path, a key pattern or SQL text.

    Use it as an async context manager, or call `aclose()` when done, to release connections.
    """

    @classmethod
    def from_configuration(cls, configuration: Configuration) -> Self:
        """A client set up from settings (folder, URL, token, timeouts), as `RECOVERABLE_STORAGE_CLIENT` builds one.

        This implementation passes them as `configuration=`, which every client of the library takes.

        Raises:
            ConfigurationError: The configuration lacks what the backend needs (a URL, say).
        """
        return cls(configuration=configuration)  # type: ignore[call-arg]

    @abstractmethod
    async def open_key_value_store_client(
        self,
        *,
        id: str | None = None,
        name: str | None = None,
        alias: str | None = None,
    ) -> KeyValueStoreClient:
        """Open a store, creating it when it is opened by name or alias and does not exist yet.

        Every implementation checks its arguments itself, first, with `validate_store_reference` (callers
        may be programs or a server passing on what it received), so that a hostile id or name (`..`, `a/b`,
        `%2e%2e`, NUL) or an alias breaking Crawlee's rule (`..`, `a/b`, NUL) is refused before anything is
        created or looked up.

        Raises:
            ConfigurationError: More than one of `id`, `name` and `alias` was given (also a `ValueError`).
            InvalidStoreNameError: The id, name or alias breaks its rules.
            StoreNotFoundError: No store has the given id.
            StorageBackendError: The backend failed.
        """

    async def find_key_value_store(self, *, name: str) -> str | None:
        """Return the id of the store named `name`, or None when there is none; nothing is created.

        This implementation lists every store; backends that can look a name up directly do so, so that
        the cost does not grow with the number of stores.

        Raises:
            InvalidStoreNameError: The name breaks its rules.
            StorageBackendError: The backend failed.
        """
        validate_store_name(name)
        return next((m.id for m in await self.list_key_value_stores() if m.name == name), None)

    @abstractmethod
    async def list_key_value_stores(self) -> list[KeyValueStoreMetadata]:
        """Return the metadata of every store of the backend, oldest first.

        Raises:
            StorageBackendError: The backend failed.
        """

    async def aclose(self) -> None:  # noqa: B027 - a backend without connections has nothing to release
        """Release the backend's connections; the client must not be used afterwards."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
