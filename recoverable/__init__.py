"""recoverable: in-memory state of long-running asyncio programs that survives crashes, restarts and migrations.

```python
from pydantic import BaseModel
from recoverable import LocalEventManager, RecoverableState

class CrawlState(BaseModel):
    pages_done: int = 0
    seen: set[str] = set()

async with LocalEventManager() as events:
    state = RecoverableState(default_state=CrawlState(), persist_state_key="CRAWL",
                             persist_state_kvs_name="my-crawl", event_manager=events)
    async with state:
        state.current_value.pages_done += 1
```
"""

from typing import TYPE_CHECKING

from recoverable._auto_save import start_auto_save as _start_auto_save
from recoverable._history import SavedVersion
from recoverable._keyed_recoverable_state import KeyedRecoverableState
from recoverable._recoverable_set import RecoverableSet
from recoverable._recoverable_state import RecoverableState
from recoverable._version import VERSION as _VERSION
from recoverable.configuration import Configuration
from recoverable.errors import (
    ConfigurationError,
    DeserializationError,
    InvalidKeyError,
    InvalidStoreNameError,
    MissingDependencyError,
    RecoverableError,
    SerializationError,
    StateError,
    StateHistoryError,
    StateNotInitializedError,
    StateOwnershipError,
    StateTimeoutError,
    StateValidationError,
    StorageBackendError,
    StorageError,
    StoreLockedError,
    StoreNotFoundError,
    VersionConflictError,
)
from recoverable.events import (
    Event,
    EventAbortingData,
    EventExitData,
    EventManager,
    EventMigratingData,
    EventPersistStateData,
    EventSystemInfoData,
    LocalEventManager,
    PlatformEventManager,
)
from recoverable.storages import (
    _OPTIONAL_CLIENTS,
    FileSystemStorageClient,
    HttpStorageClient,
    KeyValueStore,
    KeyValueStoreClient,
    MemoryStorageClient,
    StorageClient,
    _without_missing_clients,
)
from recoverable.storages._key_value_store import set_auto_save_starter as _set_auto_save_starter

# Auto-saved values of stores are saved on events; the storage layer learns how from here (see _auto_save.py).
_set_auto_save_starter(_start_auto_save)

if TYPE_CHECKING:
    # Imported on first use by __getattr__ below, so that `import recoverable` never needs redis or SQLAlchemy.
    from recoverable.storages import RedisStorageClient, SqlStorageClient

__version__ = _VERSION

__all__ = [
    "Configuration",
    "ConfigurationError",
    "DeserializationError",
    "Event",
    "EventAbortingData",
    "EventExitData",
    "EventManager",
    "EventMigratingData",
    "EventPersistStateData",
    "EventSystemInfoData",
    "FileSystemStorageClient",
    "HttpStorageClient",
    "InvalidKeyError",
    "InvalidStoreNameError",
    "KeyValueStore",
    "KeyValueStoreClient",
    "KeyedRecoverableState",
    "LocalEventManager",
    "MemoryStorageClient",
    "MissingDependencyError",
    "PlatformEventManager",
    "RecoverableError",
    "RecoverableSet",
    "RecoverableState",
    "RedisStorageClient",
    "SavedVersion",
    "SerializationError",
    "SqlStorageClient",
    "StateError",
    "StateHistoryError",
    "StateNotInitializedError",
    "StateOwnershipError",
    "StateTimeoutError",
    "StateValidationError",
    "StorageBackendError",
    "StorageClient",
    "StorageError",
    "StoreLockedError",
    "StoreNotFoundError",
    "VersionConflictError",
    "__version__",
]
_without_missing_clients(__all__)


def __getattr__(name: str) -> object:
    """Import the optional storage clients on first use; a missing package raises MissingDependencyError."""
    if name in _OPTIONAL_CLIENTS:
        from recoverable import storages  # noqa: PLC0415

        return getattr(storages, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
