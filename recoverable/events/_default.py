"""The events that save whatever was given no event manager: Crawlee's while a crawler runs, else the library's own.

A `RecoverableState` created without `event_manager=`, and a `KeyValueStore`'s auto-saved values, listen to
`DefaultEvents.relay`, one per event loop. The relay passes on PERSIST_STATE from, in this order:

1. The event manager of Crawlee for Python, while a Crawlee crawler runs in the process (its manager is
   entered, `active`). Crawlee is looked at only when it is already imported, and only read: asking
   `crawlee.service_locator.get_event_manager()` would create a manager when none was set, after which the
   program could no longer set its own.
2. Otherwise the library's own manager: a `PlatformEventManager` on the Apify platform
   (`ACTOR_EVENTS_WEBSOCKET_URL` set), else a `LocalEventManager`.

The library's own manager runs from the first user to the last whatever Crawlee does, because a state may be
initialized before a crawler runs and outlive it, and a program may run several crawlers one after another.
It handles SIGTERM and SIGINT, its MIGRATING, ABORTING and EXIT are always passed on (states make their final
save on them and let go of their leases), and its PERSIST_STATE is passed on whenever no crawler runs. While one runs,
its timer's PERSIST_STATE is passed on only when Crawlee sent none since its previous tick (Crawlee drops its
listeners when a crawler stops, or the library's period is the shorter one), and its PERSIST_STATE after a
signal or a migration always. Crawlee's manager is looked for when a user arrives, at every tick of the own
manager, and every `CRAWLEE_WATCH_SECS` in between, so a state follows a crawler within a second of its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

from recoverable.configuration import Configuration
from recoverable.events._event import (
    Event,
    EventAbortingData,
    EventData,
    EventExitData,
    EventMigratingData,
    EventPersistStateData,
)
from recoverable.events._event_manager import EventManager
from recoverable.events._local_event_manager import LocalEventManager
from recoverable.events._platform_event_manager import PlatformEventManager

__all__ = ["CRAWLEE_WATCH_SECS", "DefaultEvents", "running_crawlee_event_manager"]

logger = logging.getLogger(__name__)

CRAWLEE_WATCH_SECS = 1.0
"""How often the relay looks whether a Crawlee crawler started or stopped."""


@dataclass(frozen=True)
class CrawleeEvents:
    """The event manager of a running Crawlee crawler, and Crawlee's name of the PERSIST_STATE event."""

    manager: Any
    persist_state: Any


def running_crawlee_event_manager() -> CrawleeEvents | None:
    """The event manager of Crawlee for Python when a crawler runs in this process (it is active), else None.

    Crawlee is not imported here: a program that did not import it runs no crawler. Its service locator is
    read without calling `get_event_manager()`, which would create and keep a manager when none was set (and
    make the program's own `set_event_manager()` fail). Whatever is not where Crawlee 1.x keeps it (another
    version of Crawlee) means "no crawler", never an error.
    """
    crawlee = sys.modules.get("crawlee")
    events = sys.modules.get("crawlee.events")
    if crawlee is None or events is None:
        return None
    try:
        locator = vars(crawlee).get("service_locator")
        manager = vars(locator).get("_event_manager") if locator is not None else None
        if manager is None or getattr(manager, "active", False) is not True:
            return None
        if not (callable(getattr(manager, "on", None)) and callable(getattr(manager, "off", None))):
            return None
        persist_state = events.Event(Event.PERSIST_STATE.value)
    except Exception:  # a Crawlee that looks different only means no crawler to follow
        logger.debug("Could not read the event manager of Crawlee", exc_info=True)
        return None
    return CrawleeEvents(manager=manager, persist_state=persist_state)


class _Relay(EventManager):
    """An event manager that is never entered: it only delivers what `DefaultEvents` passes on."""

    def cancel_listeners(self) -> None:
        """Cancel every listener invocation still running."""
        for task in self._listener_tasks:
            task.cancel()


class DefaultEvents:
    """The per-event-loop relay of PERSIST_STATE for everything that was given no event manager.

    Users register on `relay` (an `EventManager` that is never entered: it only delivers) between
    `acquire()` and `release()`. See the module docstring for where the events come from.
    """

    _by_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DefaultEvents]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, manager: EventManager, configuration: Configuration) -> None:
        self.manager = manager
        """The library's own manager, active while there is a user."""
        self._loop = asyncio.get_running_loop()
        self._relay = _Relay(configuration=configuration)
        self.relay: EventManager = self._relay
        """What users register their PERSIST_STATE listeners on."""
        self.users = 0
        self._crawlee: CrawleeEvents | None = None
        self._crawlee_delivered = False
        self._forward_next = False
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    async def acquire(cls, configuration: Configuration | None = None) -> DefaultEvents:
        """Count one more user of this event loop's relay, starting it (and the own manager) for the first.

        Args:
            configuration: Settings of the own manager, when this call starts it; from the environment when
                omitted.
        """
        loop = asyncio.get_running_loop()
        shared = cls._by_loop.get(loop)
        if shared is None:
            configuration = configuration or Configuration.from_env()
            manager: EventManager
            if configuration.events_websocket_url:
                manager = PlatformEventManager(configuration=configuration)
            else:
                manager = LocalEventManager(configuration=configuration)
            shared = cls(manager, configuration)
            cls._by_loop[loop] = shared
        shared.users += 1
        if shared.users == 1:
            try:
                await shared._start()
            except BaseException:
                shared.users -= 1
                if shared.users == 0 and cls._by_loop.get(loop) is shared:
                    del cls._by_loop[loop]
                raise
        shared._follow_crawlee()
        return shared

    async def release(self) -> None:
        """Count one user less; the last one stops the own manager and lets go of Crawlee's."""
        loop = asyncio.get_running_loop()
        if self._by_loop.get(loop) is not self or self.users == 0:
            return
        self.users -= 1
        if self.users == 0:
            del self._by_loop[loop]
            await self._stop()

    @property
    def following_crawlee(self) -> bool:
        """Whether the relay passes on the events of a running Crawlee crawler."""
        return self._crawlee is not None and getattr(self._crawlee.manager, "active", False) is True

    async def _start(self) -> None:
        await self.manager.__aenter__()
        self.manager.on(event=Event.PERSIST_STATE, listener=self._from_own)
        self.manager.on(event=Event.MIGRATING, listener=self._from_own_migrating)
        self.manager.on(event=Event.ABORTING, listener=self._from_own_aborting)
        self.manager.on(event=Event.EXIT, listener=self._from_own_exit)
        self._watch = asyncio.get_running_loop().create_task(self._watch_crawlee(), name="recoverable crawlee watch")

    async def _stop(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        self._leave_crawlee()
        await self.manager.__aexit__(None, None, None)

    async def _watch_crawlee(self) -> None:
        while True:
            await asyncio.sleep(CRAWLEE_WATCH_SECS)
            self._follow_crawlee()

    def _follow_crawlee(self) -> None:
        """Listen to the running crawler's manager, if any; again, as Crawlee drops its listeners when it stops.

        Removing and adding the listener keeps exactly one registration, whether Crawlee still had it or not.
        """
        running = running_crawlee_event_manager()
        if running is None:
            # No crawler runs (any more). One that ran, however briefly, left SIGINT to Python's default when it
            # stopped: the own manager handles it again.
            self._leave_crawlee()
            if isinstance(self.manager, LocalEventManager):
                self.manager.reclaim_signals()
            return
        if self._crawlee is not None and self._crawlee.manager is not running.manager:
            self._leave_crawlee()
        try:
            running.manager.off(event=running.persist_state, listener=self._from_crawlee)
            running.manager.on(event=running.persist_state, listener=self._from_crawlee)
        except Exception:  # the own manager goes on saving
            logger.warning("Could not listen to the events of the running Crawlee crawler", exc_info=True)
            return
        self._crawlee = running

    def _leave_crawlee(self) -> None:
        crawlee, self._crawlee = self._crawlee, None
        if crawlee is not None:
            with contextlib.suppress(Exception):
                crawlee.manager.off(event=crawlee.persist_state, listener=self._from_crawlee)

    async def _from_own_migrating(self, event_data: EventMigratingData) -> None:
        await self._stopping(Event.MIGRATING, event_data)

    async def _from_own_aborting(self, event_data: EventAbortingData) -> None:
        await self._stopping(Event.ABORTING, event_data)

    async def _from_own_exit(self, event_data: EventExitData) -> None:
        await self._stopping(Event.EXIT, event_data)

    async def _stopping(self, event: Event, event_data: EventData) -> None:
        """A signal or the platform announced the end (or a move) of the process: pass it on, whatever runs.

        States make their final save on it and let go of their leases. The PERSIST_STATE the own manager emits
        next is passed on even while a crawler runs.
        """
        self._forward_next = True
        await self._deliver(event, event_data)

    async def _from_own(self, event_data: EventPersistStateData) -> None:
        self._follow_crawlee()
        if (
            self.following_crawlee
            and self._crawlee_delivered
            and not event_data.is_migrating
            and not self._forward_next
        ):
            self._crawlee_delivered = False
            return
        self._forward_next = False
        self._crawlee_delivered = False
        await self._deliver(Event.PERSIST_STATE, event_data)

    async def _from_crawlee(self, event_data: object) -> None:
        data = EventPersistStateData(is_migrating=getattr(event_data, "is_migrating", False) is True)
        if asyncio.get_running_loop() is not self._loop:
            # Crawlee's manager is one per process; this relay serves the event loop of another thread.
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._from_crawlee(data), self._loop))
            return
        self._crawlee_delivered = True
        await self._deliver(Event.PERSIST_STATE, data)

    async def _deliver(self, event: Event, event_data: EventData) -> None:
        """Emit on the relay and wait for its listeners, so that whoever emitted waits for the saves too.

        A signal handler waits for its listeners before it lets the signal end the process, and Crawlee waits
        for them before a crawler's run returns: both must wait for the saves themselves.
        """
        self.relay.emit(event=event, event_data=event_data)
        try:
            await self.relay.wait_for_all_listeners_to_complete()
        except asyncio.CancelledError:
            # Cancelled by a second signal (or a timeout of the emitter): the saves must not outlive the wait.
            self._relay.cancel_listeners()
            raise
