"""The event manager: listeners, emission, waiting for listeners, and the periodic PERSIST_STATE."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, Self, TypeAlias, TypeVar, overload

from pyee import EventEmitter

from recoverable.configuration import Configuration
from recoverable.errors import ConfigurationError
from recoverable.events._event import (
    Event,
    EventAbortingData,
    EventData,
    EventExitData,
    EventMigratingData,
    EventPersistStateData,
    EventSystemInfoData,
    event_data_model,
)

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["EventListener", "EventManager"]

logger = logging.getLogger(__name__)

TEventData = TypeVar("TEventData", bound=EventData)

EventListener: TypeAlias = Callable[[TEventData], object] | Callable[[], object]
"""A listener: a sync or async function taking the event data, or taking nothing."""

# After cancelling the listeners that outlived a timeout, how long to let them run their cleanup.
_CANCEL_GRACE_SECS = 1.0

_Wrapper: TypeAlias = Callable[[EventData], None]


class EventManager:
    """Delivers events to listeners and, while active, emits PERSIST_STATE periodically.

    Listeners are registered per event with `on()`. A listener may be a plain function or a coroutine
    function (anything whose call returns an awaitable is awaited), and may take one positional argument,
    the event data, or none. `emit()` is synchronous: it schedules one asyncio task per listener, in the
    order the listeners were registered, and returns. Sync listeners therefore run on the event loop
    thread, so they must be quick; long work belongs in async listeners. A listener that raises is logged
    with its traceback (by a logger under `recoverable.events`) and affects neither the other listeners
    nor the emitter.

    The manager is active inside `async with`: entering starts a timer that emits
    `Event.PERSIST_STATE` with `is_migrating=False` every `persist_state_interval`, scheduled on monotonic
    deadlines so it does not drift, and skipping (not bunching up) ticks missed while the loop was
    blocked. Exiting stops the timer, emits one final `Event.PERSIST_STATE` (`is_migrating=False`), waits
    for every listener (up to `close_timeout`) and removes all listeners. A manager can be entered again
    after it exited; listeners must then be registered again.

    The manager is not thread-safe: call its methods from the thread running its event loop.

    Args:
        persist_state_interval: Period of the PERSIST_STATE events emitted while active. Defaults to
            `Configuration.persist_state_interval`.
        close_timeout: How long exiting waits for listeners before cancelling them. `None` (the default)
            waits as long as they run.
        configuration: Where defaults come from; `Configuration.from_env()` when omitted and needed.

    Raises:
        ConfigurationError: An interval is not positive, or `close_timeout` is negative.
    """

    def __init__(
        self,
        *,
        persist_state_interval: timedelta | None = None,
        close_timeout: timedelta | None = None,
        configuration: Configuration | None = None,
    ) -> None:
        if persist_state_interval is None:
            persist_state_interval = (configuration or Configuration.from_env()).persist_state_interval
        _check_positive("persist_state_interval", persist_state_interval)
        if close_timeout is not None and close_timeout < timedelta(0):
            raise ConfigurationError(f"close_timeout must not be negative, got {close_timeout!r}")

        self._persist_state_interval = persist_state_interval
        self._close_timeout = close_timeout
        self._emitter = EventEmitter()
        # For each event, the registered listeners (in registration order) and the wrapper given to pyee.
        self._registrations: dict[Event, dict[Callable[..., object], _Wrapper]] = {}
        self._listener_tasks: set[asyncio.Task[None]] = set()
        self._timer_tasks: list[asyncio.Task[None]] = []
        self._active = False

    @property
    def active(self) -> bool:
        """True between entering and exiting the `async with` block."""
        return self._active

    @property
    def persist_state_interval(self) -> timedelta:
        """Period of the PERSIST_STATE events emitted while active."""
        return self._persist_state_interval

    @overload
    def on(self, *, event: Literal[Event.PERSIST_STATE], listener: EventListener[EventPersistStateData]) -> None: ...
    @overload
    def on(self, *, event: Literal[Event.SYSTEM_INFO], listener: EventListener[EventSystemInfoData]) -> None: ...
    @overload
    def on(self, *, event: Literal[Event.MIGRATING], listener: EventListener[EventMigratingData]) -> None: ...
    @overload
    def on(self, *, event: Literal[Event.ABORTING], listener: EventListener[EventAbortingData]) -> None: ...
    @overload
    def on(self, *, event: Literal[Event.EXIT], listener: EventListener[EventExitData]) -> None: ...
    @overload
    def on(self, *, event: Event, listener: EventListener[EventData]) -> None: ...

    def on(self, *, event: Event, listener: EventListener[Any]) -> None:
        """Register a listener for an event.

        Registering a listener that is already registered for the same event does nothing: it stays
        registered once, in its original position, and is called once per emission.

        Args:
            event: The event to listen to.
            listener: A function or coroutine function taking the event data as its one positional
                argument, or taking no argument. Which one is decided here, from its signature.

        Raises:
            TypeError: The listener is not callable, or needs more than one argument.
        """
        event = Event(event)
        registered = self._registrations.setdefault(event, {})
        if listener in registered:
            return
        pass_data = _accepts_event_data(listener)

        def wrapper(event_data: EventData) -> None:
            self._schedule(event=event, listener=listener, pass_data=pass_data, event_data=event_data)

        registered[listener] = wrapper
        self._emitter.add_listener(event.value, wrapper)

    def off(self, *, event: Event, listener: EventListener[Any] | None = None) -> None:
        """Unregister one listener of an event, or all of them.

        Invocations already scheduled still run. Removing a listener that is not registered does nothing.

        Args:
            event: The event the listener was registered for.
            listener: The listener to remove; `None` removes every listener of `event`.
        """
        event = Event(event)
        registered = self._registrations.get(event)
        if not registered:
            return
        if listener is None:
            registered.clear()
            self._emitter.remove_all_listeners(event.value)
            return
        wrapper = registered.pop(listener, None)
        if wrapper is not None:
            self._emitter.remove_listener(event.value, wrapper)

    @overload
    def emit(self, *, event: Literal[Event.PERSIST_STATE], event_data: EventPersistStateData) -> None: ...
    @overload
    def emit(self, *, event: Literal[Event.SYSTEM_INFO], event_data: EventSystemInfoData) -> None: ...
    @overload
    def emit(self, *, event: Literal[Event.MIGRATING], event_data: EventMigratingData) -> None: ...
    @overload
    def emit(self, *, event: Literal[Event.ABORTING], event_data: EventAbortingData) -> None: ...
    @overload
    def emit(self, *, event: Literal[Event.EXIT], event_data: EventExitData) -> None: ...
    @overload
    def emit(self, *, event: Event, event_data: EventData) -> None: ...

    def emit(self, *, event: Event, event_data: EventData) -> None:
        """Schedule every listener of an event with the given data, and return at once.

        Each listener runs in its own asyncio task; `wait_for_all_listeners_to_complete()` waits for them.
        Emitting works whether or not the manager is active.

        Args:
            event: The event to emit.
            event_data: Its payload, an instance of `event_data_model(event)`.

        Raises:
            TypeError: `event_data` is not the payload model of `event`.
            RuntimeError: No event loop is running in this thread.
        """
        event = Event(event)
        expected = event_data_model(event)
        if not isinstance(event_data, expected):
            raise TypeError(
                f"event {event.value!r} needs data of type {expected.__name__}, got {type(event_data).__name__}"
            )
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                f"{type(self).__name__}.emit() must be called from the thread running the event loop"
            ) from None
        self._emitter.emit(event.value, event_data)

    # A timeout parameter rather than `asyncio.timeout()` around the call: on timeout the listeners, not
    # just the wait, must be named and cancelled.
    async def wait_for_all_listeners_to_complete(self, *, timeout: timedelta | None = None) -> None:  # noqa: ASYNC109
        """Wait until every listener invocation scheduled so far has finished.

        Invocations scheduled while waiting (a listener emitting another event, a timer tick) are waited
        for too. When called from inside a listener, that listener's own invocation is not waited for.

        Args:
            timeout: The longest to wait; `None` waits as long as listeners run. On timeout, the listeners
                still running are named in a warning and cancelled, and this method returns after they
                have finished cancelling (or after a short grace period, for those that ignore it).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout.total_seconds()
        current = asyncio.current_task()
        while True:
            pending = {task for task in self._listener_tasks if task is not current and not task.done()}
            if not pending:
                return
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                break
            await asyncio.wait(pending, timeout=remaining)

        logger.warning(
            "%d event listener(s) still running after %s, cancelling them: %s",
            len(pending),
            timeout,
            ", ".join(sorted(task.get_name() for task in pending)),
        )
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=_CANCEL_GRACE_SECS)

    async def __aenter__(self) -> Self:
        """Activate the manager: start the periodic PERSIST_STATE.

        Raises:
            RuntimeError: The manager is already active.
        """
        if self._active:
            raise RuntimeError(f"{type(self).__name__} is already active")
        self._active = True
        self._start_timer(name="persist state", interval=self._persist_state_interval, tick=self._emit_persist_state)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        exc_traceback: TracebackType | None,
    ) -> None:
        """Deactivate the manager: final PERSIST_STATE, wait for listeners, remove them.

        Raises:
            RuntimeError: The manager is not active.
        """
        if not self._active:
            raise RuntimeError(f"{type(self).__name__} is not active: it was not entered, or already exited")
        try:
            # Timers stop first so that the PERSIST_STATE below is the last one this manager emits.
            await self._stop_timers()
            self._emit_persist_state()
            await self.wait_for_all_listeners_to_complete(timeout=self._close_timeout)
        finally:
            for task in self._timer_tasks:
                task.cancel()
            self._timer_tasks.clear()
            self._registrations.clear()
            self._emitter.remove_all_listeners()
            self._active = False

    def _start_timer(self, *, name: str, interval: timedelta, tick: Callable[[], None]) -> None:
        """Call `tick` every `interval` until the manager exits. For subclasses, from `__aenter__`."""
        task = asyncio.get_running_loop().create_task(
            self._run_timer(name=name, interval=interval, tick=tick), name=f"recoverable {name} timer"
        )
        self._timer_tasks.append(task)

    async def _stop_timers(self) -> None:
        tasks, self._timer_tasks = self._timer_tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _run_timer(*, name: str, interval: timedelta, tick: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        period = interval.total_seconds()
        deadline = loop.time() + period
        while True:
            await asyncio.sleep(deadline - loop.time())
            try:
                tick()
            except Exception:
                # The timer must outlive any failure of one tick.
                logger.exception("The %s timer failed to emit its event", name)
            deadline += period
            now = loop.time()
            if deadline <= now:
                # The loop was blocked past one or more ticks: skip them instead of emitting a burst.
                deadline += (int((now - deadline) // period) + 1) * period

    def _emit_persist_state(self) -> None:
        self.emit(event=Event.PERSIST_STATE, event_data=EventPersistStateData(is_migrating=False))

    def _schedule(
        self, *, event: Event, listener: Callable[..., object], pass_data: bool, event_data: EventData
    ) -> None:
        task = asyncio.get_running_loop().create_task(
            self._invoke(event=event, listener=listener, pass_data=pass_data, event_data=event_data),
            name=f"recoverable listener {_describe(listener)} of {event.value!r}",
        )
        self._listener_tasks.add(task)
        task.add_done_callback(self._listener_tasks.discard)

    @staticmethod
    async def _invoke(*, event: Event, listener: Callable[..., object], pass_data: bool, event_data: EventData) -> None:
        try:
            result = listener(event_data) if pass_data else listener()
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("Listener %s of event %r failed", _describe(listener), event.value)


def _check_positive(name: str, interval: timedelta) -> None:
    if interval <= timedelta(0):
        raise ConfigurationError(f"{name} must be a positive duration, got {interval!r}")


def _describe(listener: Callable[..., object]) -> str:
    qualname = getattr(listener, "__qualname__", None)
    return qualname if isinstance(qualname, str) else repr(listener)


def _accepts_event_data(listener: Callable[..., object]) -> bool:
    """Tell whether a listener is to be called with the event data (True) or with no argument (False).

    Raises:
        TypeError: The listener is not callable, or has more than one required argument.
    """
    if not callable(listener):
        raise TypeError(f"an event listener must be callable, got {listener!r}")
    try:
        signature = inspect.signature(listener)
    except (TypeError, ValueError):
        # No introspectable signature (some builtins): the data is the one argument a listener may take.
        return True
    parameters = list(signature.parameters.values())
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required_positional = [p for p in positional if p.default is p.empty]
    required_keyword = [p for p in parameters if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if len(required_positional) > 1 or required_keyword:
        raise TypeError(
            f"event listener {_describe(listener)} must take the event data as its only argument, or no "
            f"argument; its signature is {signature}"
        )
    return bool(positional) or any(p.kind is p.VAR_POSITIONAL for p in parameters)
