"""Saving a store's auto-saved values on PERSIST_STATE events: where the storage layer meets the events.

`KeyValueStore` knows nothing of events. When `get_auto_saved_value()` needs a saver, it calls the starter this
module provides, which `recoverable/__init__.py` hands to the storage layer (the package is always imported
before any of its subpackages). The starter listens to the given event manager, or to the default events a
`RecoverableState` given no manager uses (`events/_default.py`), and returns how to stop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recoverable.errors import ConfigurationError
from recoverable.events import Event, EventManager
from recoverable.events._default import DefaultEvents

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from recoverable.configuration import Configuration

__all__ = ["start_auto_save"]


async def start_auto_save(
    save: Callable[[], Awaitable[None]], event_manager: object | None, configuration: Configuration | None
) -> Callable[[], Awaitable[None]]:
    """Call `save` on every PERSIST_STATE of `event_manager` (or of the default events); return the stopper.

    Raises:
        ConfigurationError: `event_manager` is not an `EventManager`.
    """
    default: DefaultEvents | None = None
    if event_manager is None:
        default = await DefaultEvents.acquire(configuration)
        events: EventManager = default.relay
    elif isinstance(event_manager, EventManager):
        events = event_manager
    else:
        raise ConfigurationError(f"event_manager must be an EventManager or None, not {type(event_manager).__name__}")
    events.on(event=Event.PERSIST_STATE, listener=save)

    async def stop() -> None:
        events.off(event=Event.PERSIST_STATE, listener=save)
        if default is not None:
            await default.release()

    return stop
