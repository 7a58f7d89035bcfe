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

from recoverable._recoverable_state import RecoverableState
from recoverable.configuration import Configuration
from recoverable.errors import (
    ConfigurationError,
    DeserializationError,
    InvalidKeyError,
    InvalidStoreNameError,
    MissingDependencyError,
    RecordNotFoundError,
    RecoverableError,
    SerializationError,
    StateError,
    StateNotInitializedError,
    StateOwnershipError,
    StateTimeoutError,
    StateValidationError,
    StorageBackendError,
    StorageError,
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
)
from recoverable.storages import (
    FileSystemStorageClient,
    KeyValueStore,
    KeyValueStoreClient,
    MemoryStorageClient,
    StorageClient,
)

__version__ = "0.1.0"

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
    "InvalidKeyError",
    "InvalidStoreNameError",
    "KeyValueStore",
    "KeyValueStoreClient",
    "LocalEventManager",
    "MemoryStorageClient",
    "MissingDependencyError",
    "RecordNotFoundError",
    "RecoverableError",
    "RecoverableState",
    "SerializationError",
    "StateError",
    "StateNotInitializedError",
    "StateOwnershipError",
    "StateTimeoutError",
    "StateValidationError",
    "StorageBackendError",
    "StorageClient",
    "StorageError",
    "StoreNotFoundError",
    "VersionConflictError",
    "__version__",
]
