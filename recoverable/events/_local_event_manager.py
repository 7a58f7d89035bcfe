"""The event manager of a program running on its own: timers, system info and POSIX signals."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any, Self, TypeAlias

import psutil
from typing_extensions import override

from recoverable.configuration import Configuration
from recoverable.events._event import (
    Event,
    EventAbortingData,
    EventMigratingData,
    EventPersistStateData,
    EventSystemInfoData,
)
from recoverable.events._event_manager import EventManager, _check_positive

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["LocalEventManager"]

logger = logging.getLogger(__name__)

_SignalHandler: TypeAlias = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_CPU_OVERLOAD_THRESHOLD = 95.0
"""Percent of the available CPU capacity at and above which the CPU counts as overloaded."""


@dataclass(frozen=True)
class _PreviousHandler:
    """What handled a signal before the manager took it over."""

    handler: _SignalHandler
    """The Python-level handler, as `signal.getsignal()` returned it."""

    loop_handler: _LoopSignalHandler | None
    """The handler registered with `loop.add_signal_handler()` on the same loop, if there was one."""


@dataclass(frozen=True)
class _LoopSignalHandler:
    """A handler registered with `loop.add_signal_handler(sig, callback, *args)`."""

    callback: Callable[..., object]
    args: tuple[Any, ...]


class LocalEventManager(EventManager):
    """The event manager of a program running on its own machine (not on the platform).

    In addition to the periodic PERSIST_STATE of `EventManager`, while active it:

    - emits `Event.SYSTEM_INFO` every `system_info_interval` with the CPU and memory use of this process.
      Memory is the resident set size; the average and the maximum are over the samples taken since the
      manager was entered. CPU usage is the process's CPU time over the last interval, as a percentage of
      the capacity of the cores it may run on (its CPU affinity, or every logical CPU where affinity is
      not available; container CPU quotas are not considered), so it goes from 0 to 100.
      `is_cpu_overloaded` is true when that current usage is at least 95 percent. The first sample
      covers the time since the manager was entered.
    - handles SIGTERM and SIGINT (unless `handle_signals=False`). On SIGTERM it emits `Event.MIGRATING`
      (`time_remaining_secs=None`) then `Event.PERSIST_STATE` with `is_migrating=True`; on SIGINT it
      emits `Event.ABORTING` then `Event.PERSIST_STATE` with `is_migrating=False`. It then waits for all
      listeners (up to `close_timeout`) and delivers the same signal again to the handler that was there
      before, so the process ends exactly as it would have without the manager: killed by SIGTERM, or a
      `KeyboardInterrupt` (or, under `asyncio.run`, the cancellation of the main task) for SIGINT.

    Signal details: handlers are installed with `loop.add_signal_handler()`, only when the manager is
    entered in the main thread (elsewhere signals are left alone, logged at debug level), and only for
    signals that are not ignored (`SIG_IGN`) and whose handler was set from Python. The previous handlers
    (including one set with `loop.add_signal_handler()` on the same loop) are put back on exit, and after
    a signal once its listeners are done. A second SIGTERM or SIGINT while the listeners of the first run
    goes straight to the previous handler, even if a listener blocks the loop, and cancels the listeners
    still running, so the first signal is delivered right after it: pressing Ctrl-C twice never waits.

    Args:
        persist_state_interval: Period of PERSIST_STATE. Defaults to `Configuration.persist_state_interval`.
        system_info_interval: Period of SYSTEM_INFO. Defaults to `Configuration.system_info_interval`.
        handle_signals: Whether to handle SIGTERM and SIGINT as described above.
        close_timeout: How long exiting, or handling a signal, waits for listeners before cancelling them.
            `None` (the default) waits as long as they run.
        configuration: Where defaults come from; `Configuration.from_env()` when omitted and needed.

    Raises:
        ConfigurationError: An interval is not positive, or `close_timeout` is negative.
    """

    def __init__(
        self,
        *,
        persist_state_interval: timedelta | None = None,
        system_info_interval: timedelta | None = None,
        handle_signals: bool = True,
        close_timeout: timedelta | None = None,
        configuration: Configuration | None = None,
    ) -> None:
        if system_info_interval is None:
            configuration = configuration or Configuration.from_env()
            system_info_interval = configuration.system_info_interval
        _check_positive("system_info_interval", system_info_interval)
        super().__init__(
            persist_state_interval=persist_state_interval, close_timeout=close_timeout, configuration=configuration
        )
        self._system_info_interval = system_info_interval
        self._handle_signals = handle_signals

        self._process = psutil.Process()
        self._available_cores = _available_cores(self._process)
        self._samples = 0
        self._mem_total = 0
        self._mem_max = 0
        self._cpu_total = 0.0
        self._cpu_max = 0.0

        self._signal_loop: asyncio.AbstractEventLoop | None = None
        self._previous_handlers: dict[signal.Signals, _PreviousHandler] = {}
        self._signal_task: asyncio.Task[None] | None = None

    @property
    def system_info_interval(self) -> timedelta:
        """Period of the SYSTEM_INFO events emitted while active."""
        return self._system_info_interval

    @override
    async def __aenter__(self) -> Self:
        """Activate the manager: start the timers and handle signals.

        Raises:
            RuntimeError: The manager is already active.
        """
        await super().__aenter__()
        self._samples = self._mem_total = self._mem_max = 0
        self._cpu_total = self._cpu_max = 0.0
        try:
            # The first call of cpu_percent() starts the measurement; it returns a meaningless 0.0.
            self._process.cpu_percent(interval=None)
        except psutil.Error:
            logger.exception("Could not start measuring the CPU usage of this process")
        self._start_timer(name="system info", interval=self._system_info_interval, tick=self._emit_system_info)
        if self._handle_signals:
            self._install_signal_handlers()
        return self

    @override
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        exc_traceback: TracebackType | None,
    ) -> None:
        """Deactivate the manager: restore signal handlers, then as `EventManager.__aexit__`.

        Raises:
            RuntimeError: The manager is not active.
        """
        if self.active:
            self._restore_signal_handlers()
        await super().__aexit__(exc_type, exc_value, exc_traceback)

    def _collect_system_info(self) -> EventSystemInfoData:
        """Measure this process and update the running figures."""
        with self._process.oneshot():
            mem_current = self._process.memory_info().rss
            cpu_current = min(self._process.cpu_percent(interval=None) / self._available_cores, 100.0)
        self._samples += 1
        self._mem_total += mem_current
        self._mem_max = max(self._mem_max, mem_current)
        self._cpu_total += cpu_current
        self._cpu_max = max(self._cpu_max, cpu_current)
        return EventSystemInfoData(
            mem_avg_bytes=round(self._mem_total / self._samples),
            mem_current_bytes=mem_current,
            mem_max_bytes=self._mem_max,
            cpu_avg_usage=self._cpu_total / self._samples,
            cpu_max_usage=self._cpu_max,
            cpu_current_usage=cpu_current,
            is_cpu_overloaded=cpu_current >= _CPU_OVERLOAD_THRESHOLD,
            created_at=datetime.now(UTC),
        )

    def _emit_system_info(self) -> None:
        self.emit(event=Event.SYSTEM_INFO, event_data=self._collect_system_info())

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            logger.debug("%s is not in the main thread: SIGTERM and SIGINT are not handled", type(self).__name__)
            return
        loop = asyncio.get_running_loop()
        for sig in _HANDLED_SIGNALS:
            previous = signal.getsignal(sig)
            if previous is None or previous is signal.SIG_IGN:
                # None: a handler set outside Python, which could not be put back. SIG_IGN: the program
                # chose to survive this signal, so announcing the end of the process would be wrong.
                logger.debug("%s is not handled: its current handler is %r", sig.name, previous)
                continue
            loop_handler = _loop_signal_handler(loop, sig)
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError) as exc:
                logger.debug("%s is not handled: the event loop cannot handle it (%s)", sig.name, exc)
                continue
            self._previous_handlers[sig] = _PreviousHandler(handler=previous, loop_handler=loop_handler)
        self._signal_loop = loop

    def reclaim_signals(self) -> None:
        """Handle SIGTERM and SIGINT again where another part of the program took them over and let go.

        A Crawlee crawler, say, sets its own SIGINT handler while it runs and, when it stops, leaves the signal
        to Python's default instead of to this manager. Signals the manager did not take over when it was
        entered, and a signal being handled now, are left alone.
        """
        loop = self._signal_loop
        if loop is None or loop.is_closed() or (self._signal_task is not None and not self._signal_task.done()):
            return
        for sig in self._previous_handlers:
            current = _loop_signal_handler(loop, sig)
            if current is not None and current.callback == self._on_signal:
                continue
            if current is not None:
                continue  # another loop handler is in charge now (a crawler still running): not ours to replace
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError) as exc:
                logger.debug("%s could not be handled again: %s", sig.name, exc)
            else:
                logger.debug("%s is handled again by %s", sig.name, type(self).__name__)

    def _restore_signal_handlers(self) -> None:
        """Put back the handlers that were there before the manager took the signals over."""
        loop = self._signal_loop
        previous_handlers, self._previous_handlers = self._previous_handlers, {}
        if loop is None:
            return
        for sig, previous in previous_handlers.items():
            try:
                # Removes the manager's loop handler; does nothing when `_on_second_signal` replaced it.
                loop.remove_signal_handler(sig)
                if previous.loop_handler is not None:
                    loop.add_signal_handler(sig, previous.loop_handler.callback, *previous.loop_handler.args)
                else:
                    signal.signal(sig, previous.handler)
            except Exception:
                logger.exception("Could not restore the previous handler of %s", sig.name)

    def _on_signal(self, sig: signal.Signals) -> None:
        """Handle the first SIGTERM or SIGINT: a loop callback, installed with `loop.add_signal_handler()`."""
        if self._signal_task is not None and not self._signal_task.done():
            # Both signals were queued in the loop before the first one swapped the handlers.
            self._on_second_signal(sig, None)
            return
        logger.info("%s received: emitting events before letting it through", sig.name)
        loop = asyncio.get_running_loop()
        # Until the listeners are done, any further signal is handled by `_on_second_signal`, installed at
        # the Python level rather than in the loop so that it runs even while a listener blocks the loop.
        for handled in self._previous_handlers:
            try:
                loop.remove_signal_handler(handled)
                signal.signal(handled, self._on_second_signal)
            except Exception:
                logger.exception("Could not watch for a second %s", handled.name)
        self._signal_task = loop.create_task(self._handle_signal(sig), name=f"recoverable {sig.name} handler")
        # When the previous handler raises (KeyboardInterrupt from asyncio.run's second SIGINT, SystemExit),
        # the exception leaves the loop as it would have without the manager; marking it retrieved keeps
        # asyncio from also reporting it as "Task exception was never retrieved".
        self._signal_task.add_done_callback(_retrieve_exception)

    def _on_second_signal(self, signum: int, frame: FrameType | None) -> None:
        """Give a signal received while the first one is handled to the previous handler, at once.

        The listeners still running for the first signal are cancelled, so the first signal reaches its
        handler right after: a second Ctrl-C or SIGTERM never waits for listeners.
        """
        del frame
        self._restore_signal_handlers()
        loop = self._signal_loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._cancel_listeners_after_second_signal, signal.Signals(signum))
        signal.raise_signal(signum)

    def _cancel_listeners_after_second_signal(self, sig: signal.Signals) -> None:
        running = [task for task in self._listener_tasks if not task.done()]
        if running:
            logger.warning("%s received again: cancelling %d event listener(s) still running", sig.name, len(running))
        for task in running:
            task.cancel()

    async def _handle_signal(self, sig: signal.Signals) -> None:
        try:
            if sig == signal.SIGTERM:
                self.emit(event=Event.MIGRATING, event_data=EventMigratingData(time_remaining_secs=None))
                self.emit(event=Event.PERSIST_STATE, event_data=EventPersistStateData(is_migrating=True))
            else:
                self.emit(event=Event.ABORTING, event_data=EventAbortingData())
                self.emit(event=Event.PERSIST_STATE, event_data=EventPersistStateData(is_migrating=False))
            await self.wait_for_all_listeners_to_complete(timeout=self._close_timeout)
        finally:
            # Even when this task is cancelled (the loop shutting down), the signal must reach its handler.
            self._restore_signal_handlers()
            logger.debug("Delivering %s to the previous handler (process %d)", sig.name, os.getpid())
            signal.raise_signal(sig)


def _retrieve_exception(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _available_cores(process: psutil.Process) -> int:
    try:
        return max(len(process.cpu_affinity() or ()), 1)
    except (AttributeError, NotImplementedError, psutil.Error):
        # cpu_affinity() does not exist on macOS.
        return psutil.cpu_count() or 1


def _loop_signal_handler(loop: asyncio.AbstractEventLoop, sig: signal.Signals) -> _LoopSignalHandler | None:
    """Return the handler that `loop.add_signal_handler()` registered for `sig` on this loop, if any.

    asyncio offers no public way to read it, and `remove_signal_handler()` resets the signal to its
    default instead of the handler that was there before. Reading the private table of the Unix event
    loop (unchanged since Python 3.4) lets the manager put such a handler back; loops without that table
    get their Python-level handler back instead.
    """
    handlers: Any = getattr(loop, "_signal_handlers", None)
    handle = handlers.get(sig) if isinstance(handlers, dict) else None
    callback: Any = getattr(handle, "_callback", None)
    args: Any = getattr(handle, "_args", None)
    if not callable(callback) or not isinstance(args, tuple):
        return None
    return _LoopSignalHandler(callback=callback, args=args)
