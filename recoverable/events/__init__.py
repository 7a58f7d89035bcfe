"""Events that tell a program when to save its state, and the managers that emit them.

An event manager delivers `Event`s to listeners registered with `on()`. `LocalEventManager` is the one
for a program running on its own: it emits PERSIST_STATE and SYSTEM_INFO periodically, and turns SIGTERM
and SIGINT into MIGRATING / ABORTING plus a last PERSIST_STATE before letting the signal end the process.

```python
async with LocalEventManager() as events:
    events.on(event=Event.PERSIST_STATE, listener=save_state)
    await crawl()
```

Event names and payload JSON are those of the Apify platform; `parse_platform_message()` reads one
message of its event websocket, and `PlatformEventManager` emits the events that websocket sends.
"""

from recoverable.events._event import (
    Event,
    EventAbortingData,
    EventData,
    EventExitData,
    EventMigratingData,
    EventPersistStateData,
    EventSystemInfoData,
    event_data_model,
    parse_platform_message,
)
from recoverable.events._event_manager import EventListener, EventManager
from recoverable.events._local_event_manager import LocalEventManager
from recoverable.events._platform_event_manager import PlatformEventManager

__all__ = [
    "Event",
    "EventAbortingData",
    "EventData",
    "EventExitData",
    "EventListener",
    "EventManager",
    "EventMigratingData",
    "EventPersistStateData",
    "EventSystemInfoData",
    "LocalEventManager",
    "PlatformEventManager",
    "event_data_model",
    "parse_platform_message",
]
