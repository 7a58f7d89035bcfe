"""The one list of storage backends: every other list of them (settings, exports, the command line) is built here.

A new backend is a folder under `recoverable/storages/`, one line in `BACKENDS`, the name in
`configuration.StorageClientName` (a test checks that the two agree) and one line in the conformance fixture.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from recoverable.configuration import Configuration
    from recoverable.storages._base import StorageClient

__all__ = ["BACKENDS", "StorageBackend", "backend_named", "optional_clients"]


@dataclass(frozen=True)
class StorageBackend:
    """One storage backend: its name in the settings, its client class, and what it needs installed.

    Attributes:
        name: The value of `RECOVERABLE_STORAGE_CLIENT` (and `recoverable serve --storage-client`).
        module: The package holding the client class.
        class_name: The storage client class, exported from `recoverable` and `recoverable.storages`.
        extra: The extra of `pip install 'recoverable[extra]'` that the backend needs, or None.
        package: The package that extra installs, looked for without importing it, or None.
        served: Whether `recoverable serve` can serve its stores (the HTTP client would serve another server).
    """

    name: str
    module: str
    class_name: str
    extra: str | None = None
    package: str | None = None
    served: bool = True

    def client_class(self) -> type[StorageClient]:
        """The storage client class, imported now.

        Raises:
            MissingDependencyError: The backend's extra is not installed (the message says what to install).
        """
        return cast("type[StorageClient]", getattr(importlib.import_module(self.module), self.class_name))

    def from_configuration(self, configuration: Configuration) -> StorageClient:
        """A storage client of this backend, set up from `configuration` (its folder, URL, token, timeouts).

        Raises:
            MissingDependencyError: The backend's extra is not installed.
            ConfigurationError: The configuration lacks what the backend needs (a URL, say).
        """
        return self.client_class().from_configuration(configuration)

    def installed(self) -> bool:
        """Whether what the backend needs is installed (found without importing it)."""
        return self.package is None or importlib.util.find_spec(self.package) is not None


BACKENDS: tuple[StorageBackend, ...] = (
    StorageBackend("file_system", "recoverable.storages._file_system", "FileSystemStorageClient"),
    StorageBackend("memory", "recoverable.storages._memory", "MemoryStorageClient"),
    StorageBackend("redis", "recoverable.storages._redis", "RedisStorageClient", extra="redis", package="redis"),
    StorageBackend("sql", "recoverable.storages._sql", "SqlStorageClient", extra="sql", package="sqlalchemy"),
    StorageBackend("http", "recoverable.storages._http", "HttpStorageClient", served=False),
)
"""Every storage backend, the default (file_system) first."""


def backend_named(name: str) -> StorageBackend:
    """The backend of a `RECOVERABLE_STORAGE_CLIENT` value.

    Raises:
        KeyError: No backend has that name (`Configuration` has refused such a value already).
    """
    for backend in BACKENDS:
        if backend.name == name:
            return backend
    raise KeyError(name)


def optional_clients() -> dict[str, StorageBackend]:
    """The storage client classes that need an extra, by class name: imported on first use only."""
    return {backend.class_name: backend for backend in BACKENDS if backend.extra is not None}
